"""passthrough.log writes the lines the logging package wrote before it (logrotate, people's
greps and the README's troubleshooting read them), at the levels asked for."""

from __future__ import annotations

import logging
import os

from passthrough import log


def test_a_line_is_what_logging_wrote(tmp_path, monkeypatch):
    now = 1796130161.042
    monkeypatch.setattr(log.time, "time", lambda: now)
    target = tmp_path / "sub" / "hook.log"
    mine = log.setup(target, use_syslog=False, level=log.INFO)
    mine.info("%s %s: step %d: done", "win10", "prepare/begin", 2)
    mine.debug("not at INFO")
    mine.error("two\nlines")
    mine.close()

    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "%s %s: step %d: done", ("win10", "prepare/begin", 2), None
    )
    record.created, record.msecs = now, (now % 1) * 1000
    expected = logging.Formatter("%(asctime)s [%(process)d] %(levelname)s %(message)s").format(
        record
    )
    lines = target.read_text(encoding="utf-8").splitlines()
    assert lines[0] == expected
    assert f"[{os.getpid()}] ERROR two" in lines[1] and lines[2] == "lines"
    assert len(lines) == 3  # DEBUG left out at INFO
    assert mine.path is None  # closed


def test_debug_level_and_an_unwritable_log(tmp_path):
    target = tmp_path / "hook.log"
    mine = log.setup(target, use_syslog=False, level=log.DEBUG)
    mine.debug("    write 0 > /sys/bus/pci/drivers_autoprobe")
    assert mine.path == str(target)
    assert " DEBUG     write 0 > /sys/bus/pci/drivers_autoprobe" in target.read_text()
    blocked = tmp_path / "file"
    blocked.write_text("")
    quiet = log.setup(blocked / "hook.log", use_syslog=False)  # its directory is a file
    quiet.error("goes nowhere, raises nothing")
    assert quiet.path is None
