"""What the hook logs: each step, its time and outcome by default (INFO); every operation of
each step too (DEBUG) when the profile says `log_level: debug` (libvirt's calls) or with
`--debug` (a run by hand, which also prints them). Real runs on a copy of the demo host."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
STEP = "win10 prepare/begin: 1. write 0 to /sys/bus/pci/drivers_autoprobe: done"
OPERATION = "DEBUG     write 0 > /sys/bus/pci/drivers_autoprobe   [1 → 0]"
PROFILE = """\
devices: {}
prepare/begin:
  - sysfs: {path: /sys/bus/pci/drivers_autoprobe, value: "0"}
"""


@pytest.fixture
def host(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "config" / "demo-host", tmp_path / "host", symlinks=True)
    (tmp_path / "profiles").mkdir()
    return tmp_path


def prepare(host: Path, profile: str, *options: str) -> tuple[subprocess.CompletedProcess, str]:
    (host / "profiles" / "win10.yaml").write_text(profile)
    log = host / "hook.log"
    result = subprocess.run(
        [sys.executable, "-m", "passthrough", *options, "--root", str(host / "host")]
        + ["--config-dir", str(host / "profiles"), "--state-dir", str(host / "run")]
        + ["--log-file", str(log), "win10", "prepare", "begin", "-"],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "LC_ALL": "C.UTF-8"},
    )
    assert result.returncode == 0, result.stderr
    return result, log.read_text(encoding="utf-8")


def test_by_default_the_log_has_each_step_and_not_its_operations(host: Path) -> None:
    result, log = prepare(host, PROFILE)
    assert STEP in log and " INFO " in log
    assert "DEBUG" not in log
    assert "write 0 >" not in result.stderr


def test_log_level_debug_in_the_profile_logs_every_operation(host: Path) -> None:
    result, log = prepare(host, "log_level: debug\n" + PROFILE)
    assert STEP in log
    assert OPERATION in log
    assert "write 0 >" not in result.stderr  # libvirt drops a hook's stdout, shows stderr


def test_debug_on_the_command_line_logs_and_prints_every_operation(host: Path) -> None:
    result, log = prepare(host, PROFILE, "--debug")
    assert OPERATION in log
    assert "    write 0 > /sys/bus/pci/drivers_autoprobe   [1 → 0]" in result.stderr.splitlines()


def test_a_log_level_that_is_not_a_level_is_a_profile_error(host: Path) -> None:
    (host / "profiles" / "win10.yaml").write_text("log_level: verbose\n" + PROFILE)
    result = subprocess.run(
        [sys.executable, "-m", "passthrough", "validate", str(host / "profiles" / "win10.yaml")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "win10.yaml:1:12: log_level is info or debug" in result.stderr
