"""sysfs: write a kernel file under /sys or /proc/sys, put the previous value back on undo."""

from pathlib import Path

import pytest
from runs import LOG, hook
from toolbox import system_state

THP = Path("/host/sys/kernel/mm/transparent_hugepage/enabled")
SWAPPINESS = Path("/host/proc/sys/vm/swappiness")


@pytest.fixture
def files(kernel):
    THP.parent.mkdir(parents=True, exist_ok=True)
    THP.write_text("always [madvise] never\n")
    SWAPPINESS.parent.mkdir(parents=True, exist_ok=True)
    SWAPPINESS.write_text("60\n")
    return kernel


def step(text: str) -> str:
    return f"prepare/begin:\n  - sysfs: {text}\n"


def test_writes_and_restores_the_bracketed_choice(files):
    code, _, err = hook(
        files,
        "prepare",
        "begin",
        profile=step("{path: /sys/kernel/mm/transparent_hugepage/enabled, value: never}"),
    )
    assert code == 0, err
    assert THP.read_text() == "never"
    assert (
        "write never > /sys/kernel/mm/transparent_hugepage/enabled   [madvise → never]"
        in Path(LOG).read_text()
    )
    assert hook(files, "release", "end")[0] == 0
    assert THP.read_text() == "madvise"


def test_proc_sys_with_an_explicit_undo_value(files):
    code, _, err = hook(
        files,
        "prepare",
        "begin",
        profile=step("{path: /proc/sys/vm/swappiness, value: 10, undo_value: 30}"),
    )
    assert code == 0, err
    assert SWAPPINESS.read_text() == "10"
    assert hook(files, "release", "end")[0] == 0
    assert SWAPPINESS.read_text() == "30"


def test_restore_false_is_shown_as_not_undone(files):
    code, out, _ = hook(
        files,
        "prepare",
        "begin",
        profile=step("{path: /proc/sys/vm/swappiness, value: 10, restore: false}"),
        dry_run=True,
    )
    assert code == 0 and "1. write 10 to /proc/sys/vm/swappiness (not undone)" in out
    assert hook(files, "prepare", "begin")[0] == 0
    assert hook(files, "release", "end")[0] == 0
    assert SWAPPINESS.read_text() == "10"


def test_a_file_that_cannot_be_read_needs_an_undo_value(files):
    code, _, err = hook(
        files, "prepare", "begin", profile=step("{path: /sys/power/state, value: mem}")
    )
    assert code == 1
    assert "cannot read /sys/power/state to restore it after the VM" in err
    assert "give undo_value, or restore: false" in err


def test_dry_run_changes_nothing(files):
    start = system_state(files)
    code, out, _ = hook(
        files,
        "prepare",
        "begin",
        profile=step("{path: /sys/kernel/mm/transparent_hugepage/enabled, value: never}"),
        dry_run=True,
    )
    assert code == 0, out
    assert "write never > /sys/kernel/mm/transparent_hugepage/enabled   [madvise → never]" in out
    assert system_state(files) == start and THP.read_text() == "always [madvise] never\n"


def test_a_kernel_error_fails_the_step(kernel):
    path = "/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"
    code, _, err = hook(kernel, "prepare", "begin", profile=step(f"{{path: {path}, value: turbo}}"))
    assert code == 1
    assert (
        f"writing 'turbo' to {path} failed: Invalid argument (the kernel rejected the value)" in err
    )
    assert Path("/host" + path).read_text().strip() == "schedutil"


@pytest.mark.parametrize(
    "text,message",
    [
        ("{path: /etc/passwd, value: x}", '"/etc/passwd" is outside /sys/ and /proc/sys/'),
        ("{path: /sys/../etc/passwd, value: x}", 'is not a plain path; write it without ".."'),
        ("{path: /proc/1/oom_score_adj, value: 0}", "is outside /sys/ and /proc/sys/"),
        (
            "{path: sys/kernel/x, value: 1}",
            "is not a path under /sys or /proc/sys; write it from / on",
        ),
        (
            "{path: /sys/kernel/x, value: 1, undo_value: 0, restore: false}",
            "undo_value or restore: false, not both",
        ),
    ],
)
def test_paths_are_confined(kernel, text, message):
    code, _, err = hook(kernel, "prepare", "begin", profile=step(text))
    assert code == 2 and message in err, err
