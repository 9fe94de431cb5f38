"""What the hook logs: each step, its time and outcome by default (INFO); every operation of
each step too (DEBUG) when the profile says `log_level: debug` (libvirt's calls) or with
`--debug` (a run by hand, which also prints them). Real runs on a copy of the demo host."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from runs import REPO, Result, log, program, tree_options

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


def prepare(host: Path, profile: str, *options: str) -> tuple[Result, str]:
    (host / "profiles" / "win10.yaml").write_text(profile)
    result = program(
        *options,
        "--config-dir",
        host / "profiles",
        *tree_options(host / "host"),
        "win10",
        "prepare",
        "begin",
        "-",
        env={"LC_ALL": "C.UTF-8"},
    )
    assert result.code == 0, result.err
    return result, log(host / "host")


def test_by_default_the_log_has_each_step_and_not_its_operations(host: Path) -> None:
    result, log = prepare(host, PROFILE)
    assert STEP in log and " INFO " in log
    assert "DEBUG" not in log
    assert "write 0 >" not in result.err


def test_log_level_debug_in_the_profile_logs_every_operation(host: Path) -> None:
    result, log = prepare(host, "log_level: debug\n" + PROFILE)
    assert STEP in log
    assert OPERATION in log
    assert "write 0 >" not in result.err  # libvirt drops a hook's stdout, shows stderr


def test_debug_on_the_command_line_logs_and_prints_every_operation(host: Path) -> None:
    result, log = prepare(host, PROFILE, "--debug")
    assert OPERATION in log
    assert "    write 0 > /sys/bus/pci/drivers_autoprobe   [1 → 0]" in result.err.splitlines()


def test_a_log_level_that_is_not_a_level_is_a_profile_error(host: Path) -> None:
    (host / "profiles" / "win10.yaml").write_text("log_level: verbose\n" + PROFILE)
    result = program("validate", host / "profiles" / "win10.yaml")
    assert result.code == 2
    assert "win10.yaml:1:12: log_level is info or debug" in result.err
