"""cpus: restrict the host to some CPUs, through systemd or cgroup v2 files; undo restores
the previous values, not "all"."""

import os
import shutil
from pathlib import Path

import pytest
from fakecommands import install_fake_commands
from runs import LOG, hook
from toolbox import read, system_state

PROFILE = "prepare/begin:\n  - cpus: 0-3,8-11\n"


@pytest.fixture
def book(kernel):
    return install_fake_commands(kernel)


def test_with_systemd_sets_allowed_cpus_and_restores_each_previous_value(kernel, book):
    kernel.store.set_text(
        "fs/cgroup/user.slice/cpuset.cpus", "0-7"
    )  # a restriction of the user's own
    start = system_state(kernel)
    code, _, err = hook(kernel, "prepare", "begin", profile=PROFILE)
    assert code == 0, err
    assert book.calls == [
        ["systemctl", "set-property", "--runtime", unit, "AllowedCPUs=0-3,8-11"]
        for unit in ("system.slice", "user.slice", "init.scope")
    ]
    assert "user.slice CPUs: 0-7 → 0-3,8-11" in Path(LOG).read_text()
    code, _, err = hook(kernel, "release", "end")
    assert code == 0, err
    assert book.calls[3:] == [
        ["systemctl", "set-property", "--runtime", "init.scope", "AllowedCPUs="],
        ["systemctl", "set-property", "--runtime", "user.slice", "AllowedCPUs=0-7"],
        ["systemctl", "set-property", "--runtime", "system.slice", "AllowedCPUs="],
    ]
    assert system_state(kernel) == start


def test_without_systemd_writes_cpuset_files_and_enables_the_controller(kernel):
    shutil.rmtree("/host/run/systemd")
    Path("/host/sys/fs/cgroup/cgroup.subtree_control").write_text(
        "-cpuset"
    )  # as if nobody enabled it
    kernel.writes.clear()
    start = system_state(kernel)
    code, _, err = hook(kernel, "prepare", "begin", profile=PROFILE)
    assert code == 0, err
    assert kernel.writes == [("fs/cgroup/cgroup.subtree_control", "+cpuset")] + [
        (f"fs/cgroup/{g}/cpuset.cpus", "0-3,8-11")
        for g in ("init.scope", "system.slice", "user.slice")
    ]
    assert read("sys/fs/cgroup/machine.slice/cpuset.cpus") == ""  # where the VM runs: untouched
    code, _, err = hook(kernel, "release", "end")
    assert code == 0, err
    assert kernel.writes[-1] == ("fs/cgroup/cgroup.subtree_control", "-cpuset")
    assert system_state(kernel) == start


def test_dry_run_shows_each_unit(kernel, book):
    start = system_state(kernel)
    code, out, _ = hook(kernel, "prepare", "begin", profile=PROFILE, dry_run=True)
    assert code == 0, out
    assert "1. keep the host on CPUs 0-3,8-11" in out
    assert (
        "systemctl set-property --runtime system.slice AllowedCPUs=0-3,8-11   "
        "[system.slice CPUs: all (unset) → 0-3,8-11]"
    ) in out
    assert book.calls == [] and system_state(kernel) == start


def test_cpus_that_are_not_online_are_refused(kernel, book):
    code, _, err = hook(kernel, "prepare", "begin", profile="prepare/begin:\n  - cpus: 0-3,16-19\n")
    assert code == 1
    assert "CPU 16-19 not online on this host (online: 0-15)" in err
    assert book.calls == []


def test_without_cgroup_v2_the_step_says_so(kernel, book):
    os.unlink("/host/sys/fs/cgroup/cgroup.controllers")
    code, _, err = hook(kernel, "prepare", "begin", profile=PROFILE)
    assert code == 1 and "cgroup v2 is not mounted at /sys/fs/cgroup" in err


def test_a_failed_unit_rolls_back_the_ones_done(kernel, book):
    def refuse(argv, stdin):
        if argv[3] == "user.slice" and argv[4] != "AllowedCPUs=":
            from passthrough.host.commands import CommandError

            raise CommandError(
                argv, 1, "Failed to set unit properties on user.slice: Access denied"
            )
        return book.systemctl(argv)

    book.handlers["systemctl"] = refuse
    start = system_state(kernel)
    code, _, err = hook(kernel, "prepare", "begin", profile=PROFILE)
    assert code == 1
    assert "Access denied" in err
    assert book.calls[-1] == [
        "systemctl",
        "set-property",
        "--runtime",
        "system.slice",
        "AllowedCPUs=",
    ]
    assert system_state(kernel) == start


@pytest.mark.parametrize(
    "step,message",
    [
        ("cpus: 3-1", "'3-1' is a backwards range"),
        ("cpus: 0-3;8", "'0-3;8' is not a CPU number or range"),
        ("cpus: {host: 0-3,8-11}", 'quote values that contain commas, "0-3,8-11"'),
        ('cpus: {host: "0-3", groups: ["system slice"]}', "is not a cgroup or systemd unit name"),
    ],
)
def test_cpu_lists_are_validated(kernel, step, message):
    code, _, err = hook(kernel, "prepare", "begin", profile=f"prepare/begin:\n  - {step}\n")
    assert code == 2 and message in err, err


def test_dry_run_without_systemd_predicts_the_files_cpuset_creates(kernel):
    """The kernel creates the children's cpuset.cpus when the root enables cpuset: the plan
    must not stop at files that do not exist yet."""
    shutil.rmtree("/host/run/systemd")
    Path("/host/sys/fs/cgroup/cgroup.subtree_control").write_text("-cpuset")
    for group in ("init.scope", "system.slice", "user.slice", "machine.slice"):
        os.unlink(f"/host/sys/fs/cgroup/{group}/cpuset.cpus")
    code, out, _ = hook(kernel, "prepare", "begin", profile=PROFILE, dry_run=True)
    assert code == 0, out
    assert (
        "write +cpuset > /sys/fs/cgroup/cgroup.subtree_control   [cpuset controller: off → on]"
        in out
    )
    assert (
        "write 0-3,8-11 > /sys/fs/cgroup/user.slice/cpuset.cpus   [user.slice CPUs: all (unset) → 0-3,8-11]"
        in out
    )


def test_a_named_group_that_does_not_exist_is_named(kernel):
    shutil.rmtree("/host/run/systemd")
    code, _, err = hook(
        kernel,
        "prepare",
        "begin",
        profile='prepare/begin:\n  - cpus: {host: "0-3", groups: [openrc.sshd]}\n',
    )
    assert code == 1 and "no cgroup /sys/fs/cgroup/openrc.sshd on this host" in err
