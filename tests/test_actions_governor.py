"""governor: set the cpufreq governor, give each CPU its own previous governor back."""

import shutil
from pathlib import Path

from runs import hook
from toolbox import system_state

CPUFREQ = "devices/system/cpu/cpufreq"


def governor(cpu: int) -> str:
    return Path(f"/host/sys/{CPUFREQ}/policy{cpu}/scaling_governor").read_text().strip()


def test_sets_every_cpu_and_restores_each_previous_governor(kernel):
    kernel.store.set_text(f"{CPUFREQ}/policy3/scaling_governor", "powersave")
    start = system_state(kernel)
    code, _, err = hook(
        kernel, "prepare", "begin", profile="prepare/begin:\n  - governor: performance\n"
    )
    assert code == 0, err
    assert {governor(cpu) for cpu in range(16)} == {"performance"}
    code, _, err = hook(kernel, "release", "end")
    assert code == 0, err
    assert governor(3) == "powersave" and governor(4) == "schedutil"
    assert system_state(kernel) == start


def test_chosen_cpus_only(kernel):
    code, _, err = hook(
        kernel,
        "prepare",
        "begin",
        profile="prepare/begin:\n  - governor: {governor: performance, cpus: 4-5}\n",
    )
    assert code == 0, err
    assert [governor(cpu) for cpu in (3, 4, 5, 6)] == [
        "schedutil",
        "performance",
        "performance",
        "schedutil",
    ]


def test_an_unavailable_governor_fails_before_changing_anything(kernel):
    kernel.store.set_text(f"{CPUFREQ}/policy9/scaling_available_governors", "powersave schedutil")
    start = system_state(kernel)
    code, _, err = hook(
        kernel, "prepare", "begin", profile="prepare/begin:\n  - governor: performance\n"
    )
    assert code == 1
    assert "CPU 9 does not offer the governor performance; it offers powersave schedutil" in err
    assert kernel.writes == [] and system_state(kernel) == start


def test_a_cpu_without_cpufreq_is_named(kernel):
    shutil.rmtree(f"/host/sys/{CPUFREQ}")
    code, _, err = hook(
        kernel, "prepare", "begin", profile="prepare/begin:\n  - governor: performance\n"
    )
    assert code == 1 and "CPU 0 has no cpufreq" in err


def test_a_rejected_write_rolls_back_the_cpus_done(kernel):
    kernel.fail(f"{CPUFREQ}/policy2/scaling_governor", "EBUSY")
    start = system_state(kernel)
    code, _, err = hook(
        kernel, "prepare", "begin", profile="prepare/begin:\n  - governor: performance\n"
    )
    assert code == 1 and "scaling_governor failed: Device or resource busy" in err
    assert system_state(kernel) == start


def test_dry_run_lists_each_cpu(kernel):
    start = system_state(kernel)
    code, out, _ = hook(
        kernel,
        "prepare",
        "begin",
        profile="prepare/begin:\n  - governor: {governor: performance, cpus: 0-1}\n",
        dry_run=True,
    )
    assert code == 0, out
    assert "1. set the cpufreq governor of CPUs 0-1 to performance" in out
    assert (
        "write performance > /sys/devices/system/cpu/cpu1/cpufreq/scaling_governor   "
        "[CPU 1: schedutil → performance]"
    ) in out
    assert system_state(kernel) == start
