"""Commands as a Host member: bounded by the step, recorded, never run in a dry run."""

import os
import shutil
import time
from pathlib import Path

import pytest

from passthrough.host import Host, commands
from passthrough.host.commands import Commands, RecordedCommands


class Result:
    stdout = b"ok\n"


def test_a_command_gets_what_is_left_of_its_step_not_the_per_write_bound(monkeypatch):
    limits = []
    monkeypatch.setattr(
        "passthrough.host.commands.run",
        lambda argv, timeout, stdin=None: limits.append(timeout) or Result(),
    )
    host = Host(root=Path("/"), sysfs=None, modules=None, nodedev=None, operation_timeout=20.0)
    commands = Commands(Path("/"), host)
    host.deadline = time.monotonic() + 100
    assert commands.run(["/usr/bin/sleep", "60"]) == "ok\n"
    assert 95 < limits[-1] <= 100
    commands.run(["/usr/bin/true"], timeout=5)
    assert limits[-1] == 5
    host.deadline = time.monotonic() + 2
    commands.run(["/usr/bin/true"], timeout=5)
    assert limits[-1] <= 2
    assert [op.text for op in host.operations] == [
        "/usr/bin/sleep 60",
        "/usr/bin/true",
        "/usr/bin/true",
    ]


def test_a_dry_run_records_commands_and_runs_none(monkeypatch):
    monkeypatch.setattr(
        "passthrough.host.commands.run",
        lambda *a, **k: (_ for _ in ()).throw(AssertionError("ran")),
    )
    host = Host(root=Path("/"), sysfs=None, modules=None, nodedev=None, dry_run=True)
    assert (
        RecordedCommands(Path("/"), host).run(
            ["/usr/bin/systemctl", "stop", "gdm"], effect="gdm: stopped"
        )
        == ""
    )
    assert str(host.operations[0]) == "/usr/bin/systemctl stop gdm   [gdm: stopped]"


def test_which_finds_what_shutil_which_finds_in_the_system_path(tmp_path):
    """commands.which replaces shutil.which (not imported on the hook's path)."""
    tool = tmp_path / "tool"
    tool.write_text("#!/bin/sh\n")
    os.chmod(tool, 0o755)
    (tmp_path / "plain").write_text("")
    names = ["sh", "true", "modprobe", "no-such-program-here", "/bin/sh", str(tool)]
    names += [str(tmp_path / "plain"), str(tmp_path), "bin/sh"]
    for name in names:
        assert commands.which(name) == shutil.which(name, path=commands.SYSTEM_PATH), name


@pytest.mark.parametrize(
    "data", [b"", b"vfio-pci\n", b"a\r\nb\rc\n", b"\xff\xfe bad utf-8\n", bytes(range(256)) * 300]
)
def test_kernel_files_read_as_text_mode_reads_them(tmp_path, data):
    from passthrough.host import textfile

    path = tmp_path / "attribute"
    path.write_bytes(data)
    with open(path, encoding="utf-8", errors="replace") as handle:
        assert textfile.read(str(path)) == handle.read()
    assert textfile.read(str(tmp_path / "missing")) is None
