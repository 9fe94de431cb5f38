"""Trace the hook calls of the test libvirtd: `trace_hooks()` turns libvirtd's hook debug log
on for the running daemon (virt-admin) and for one restarted meanwhile (libvirtd.conf), and puts
both back afterwards. What the log says and how it is read: ../libvirt_hook_log.py.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from daemon import DAEMON_ENV, ETC_LIBVIRT, Libvirtd
from libvirt_hook_log import FILTERS, HookCall, parse_trace

LIBVIRTD_CONF = ETC_LIBVIRT / "libvirtd.conf"
ADMIN_URI = "libvirtd:///system"


class HookTrace:
    """The hook calls logged to `log` so far (read afresh on every question)."""

    def __init__(self, log: Path) -> None:
        self.log = log

    def calls(self, script: str | None = None, domain: str | None = None) -> list[HookCall]:
        """Hook calls so far, oldest first, optionally only those of one script or domain."""
        calls = parse_trace(self.log.read_text(errors="replace") if self.log.exists() else "")
        return [
            call
            for call in calls
            if script in (None, call.script) and domain in (None, call.domain)
        ]

    def summary(self, script: str, domain: str) -> list[tuple[str, int | None]]:
        """(event, exit status) of each call of `script` for `domain`."""
        return [(call.event, call.status) for call in self.calls(script, domain)]

    def __str__(self) -> str:
        return "hook calls libvirtd logged:\n" + "\n".join(f"  {call}" for call in self.calls())


@contextmanager
def trace_hooks(libvirtd: Libvirtd, log: Path) -> Iterator[HookTrace]:
    """Log every hook call of `libvirtd` to `log` while the block runs, across a restart too."""
    filters_before = _admin_setting("daemon-log-filters")
    outputs_before = _admin_setting("daemon-log-outputs")
    outputs = f"1:file:{log} {outputs_before}".strip()
    conf_before = LIBVIRTD_CONF.read_bytes()
    try:
        # Read by a libvirtd started while the block runs (a test's restart).
        LIBVIRTD_CONF.write_bytes(
            conf_before
            + (
                f"\n# passthrough-hook tests: trace hook calls (restored right after)\n"
                f'log_filters = "{FILTERS}"\nlog_outputs = "{outputs}"\n'
            ).encode()
        )
        _admin("daemon-log-filters", FILTERS)
        _admin("daemon-log-outputs", outputs)
        yield HookTrace(log)
    finally:
        LIBVIRTD_CONF.write_bytes(conf_before)
        if libvirtd.is_running():
            _admin("daemon-log-filters", filters_before)
            _admin("daemon-log-outputs", outputs_before)


def _admin(*args: str) -> str:
    virt_admin = shutil.which("virt-admin", path=DAEMON_ENV["PATH"])
    if virt_admin is None:
        raise RuntimeError("virt-admin not found (Debian: apt-get install libvirt-clients)")
    result = subprocess.run(
        [virt_admin, "-c", ADMIN_URI, *args],
        capture_output=True,
        text=True,
        env=DAEMON_ENV,
        timeout=30,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"virt-admin {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def _admin_setting(command: str) -> str:
    """The value virt-admin prints as "Logging filters: VALUE" (or outputs)."""
    return _admin(command).split(":", 1)[1].strip()
