"""The toolbox actions that touch kernel state, run by the real hook (hooks/qemu, as libvirt
runs it) against a real kernel, in one boot:

  prepare/begin   vtconsoles: unbind, framebuffer: unbind, hugepages (2M), sysfs on /sys
                  and /proc/sys, cpus on a cgroup v2 tree without systemd, legacy scripts
  release/end     everything put back as it was (compared as a snapshot)
  dry run         the same plan, nothing changed
  1G hugepages    the guest's 1 GiB of RAM has no room for a 1 GiB page: the kernel reports
                  success and gives none, the hook compacts, retries, fails saying so, and
                  the pool is back where it was

  kill_holders    processes holding the GPU's /dev/dri/card0: one not allowed (refused,
                  nothing ended), then one allowed (ended with the real kill, awaited)

Not here: governor (the guest has no cpufreq driver), display_manager (no systemd in the
guest; it acts through systemctl).
"""

from __future__ import annotations

import pytest
from harness import GPU_VIDEO, GuestRun

pytestmark = pytest.mark.guest

# log_level: debug: the tests read each step's operations from the hook's log.
PROFILE = """\
log_level: debug
prepare/begin:
  - vtconsoles: unbind
  - framebuffer: unbind
  - hugepages: {size: 2M, count: 64}
  - sysfs: {path: /sys/kernel/mm/transparent_hugepage/enabled, value: never}
  - sysfs: {path: /proc/sys/vm/swappiness, value: 7}
  - cpus: 0
  - scripts: /tmp/qemu.d/toolbox
"""

BIG_PROFILE = """\
prepare/begin:
  - hugepages: {size: 1G, count: 1}
"""

HOLDERS_PROFILE = f"""\
log_level: debug
devices: {{gpu: "{GPU_VIDEO}"}}
prepare/begin:
  - kill_holders: {{device: gpu, allow: [sleep]}}
"""

SCENARIO = r"""
set -uo pipefail
fact() { local key=$1; shift; printf '%s=%s\n' "$key" "$*" >>"$OUT/facts"; }
PROFILES=/tmp/profiles
XML="<domain type='kvm'><name>toolbox</name><memory unit='MiB'>128</memory></domain>"

# hook NAME DOMAIN OPERATION SUB: the hook as libvirt runs it (bare environment, XML on stdin).
hook() {
    local name=$1 start=$EPOCHREALTIME
    shift
    echo "$XML" | env -i LC_ALL=C PATH=/usr/sbin:/usr/bin:/sbin:/bin PASSTHROUGH_HOOK_CONFIG_DIR=$PROFILES \
        /project/hooks/qemu "$@" - >"$OUT/$name.out" 2>"$OUT/$name.err"
    fact "$name.rc" $?
    fact "$name.ms" $(( (${EPOCHREALTIME/./} - ${start/./}) / 1000 ))
}

# snapshot NAME: the state the toolbox changes, one "file: value" line each.
snapshot() {
    local f
    for f in /sys/class/vtconsole/vtcon*/bind /sys/kernel/mm/hugepages/hugepages-*/nr_hugepages \
             /sys/kernel/mm/transparent_hugepage/enabled /proc/sys/vm/swappiness \
             /sys/fs/cgroup/cgroup.subtree_control /sys/fs/cgroup/*/cpuset.cpus; do
        [ -e "$f" ] && echo "$f: $(cat "$f")"
    done >"$OUT/snap-$1"
    ls /sys/bus/platform/drivers/*/ | grep -c framebuffer >>"$OUT/snap-$1"
}

mkdir -p $PROFILES
printf '%s' "$PROFILE" >$PROFILES/toolbox.yaml
printf '%s' "$BIG_PROFILE" >$PROFILES/big.yaml
printf '%s' "$HOLDERS_PROFILE" >$PROFILES/holders.yaml
chmod 644 $PROFILES/*.yaml

# A cgroup v2 tree as a host without systemd has it (cpuset not enabled yet).
mount -t cgroup2 none /sys/fs/cgroup
mkdir /sys/fs/cgroup/services /sys/fs/cgroup/machine
fact cgroup.before "$(cat /sys/fs/cgroup/cgroup.subtree_control)"

# A legacy hook script that records how it was called.
mkdir -p /tmp/qemu.d/toolbox/prepare/begin
cat >/tmp/qemu.d/toolbox/prepare/begin/50-record.sh <<'EOS'
#!/bin/bash
echo "$*" >/out/script.argv
cat >/out/script.stdin
EOS
chmod 755 /tmp/qemu.d /tmp/qemu.d/toolbox /tmp/qemu.d/toolbox/prepare /tmp/qemu.d/toolbox/prepare/begin \
    /tmp/qemu.d/toolbox/prepare/begin/50-record.sh

snapshot before
echo "$XML" | env PYTHONPATH=/project PASSTHROUGH_HOOK_CONFIG_DIR=$PROFILES \
    python3 -m passthrough --dry-run toolbox prepare begin - >"$OUT/dryrun.out" 2>&1
fact dryrun.rc $?
snapshot after-dryrun

hook prepare toolbox prepare begin
snapshot prepared
fact prepared.vtcon "$(cat /sys/class/vtconsole/vtcon0/bind)$(cat /sys/class/vtconsole/vtcon1/bind)"
fact prepared.hugepages "$(cat /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages)"
fact prepared.thp "$(cat /sys/kernel/mm/transparent_hugepage/enabled)"
fact prepared.swappiness "$(cat /proc/sys/vm/swappiness)"
fact prepared.cgroup "$(cat /sys/fs/cgroup/cgroup.subtree_control)"
fact prepared.services "$(cat /sys/fs/cgroup/services/cpuset.cpus)"
fact prepared.machine "$(cat /sys/fs/cgroup/machine/cpuset.cpus)"
hook release toolbox release end
snapshot released

hook big-prepare big prepare begin
fact big.pool "$(cat /sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages)"
hook big-release big release end
snapshot end

# Processes holding the GPU's DRM node: one the profile allows to end, one it does not.
sleep 1000 </dev/dri/card0 &
sleeper=$!
tail -f /dev/null </dev/dri/card0 &
tailer=$!
hook holders-refused holders prepare begin
fact holders.refused.alive "$(kill -0 $sleeper 2>/dev/null && echo yes || echo no)"
kill $tailer; wait $tailer 2>/dev/null
hook holders holders prepare begin
fact holders.sleeper "$(kill -0 $sleeper 2>/dev/null && echo running || echo ended)"
fact holders.pid $sleeper
cp /var/log/libvirt/passthrough-hook.log "$OUT/hook.log"
"""


@pytest.fixture(scope="module")
def boot(guest, tmp_path_factory) -> GuestRun:
    script = (
        f"PROFILE='{PROFILE}'\nBIG_PROFILE='{BIG_PROFILE}'\nHOLDERS_PROFILE='{HOLDERS_PROFILE}'\n"
        + SCENARIO
    )
    run = guest(script, iommu=False, timeout=240, run_dir=tmp_path_factory.mktemp("toolbox"))
    assert run.returncode == 0, run.output
    return run


def facts(run: GuestRun) -> dict[str, str]:
    return dict(line.split("=", 1) for line in run.text("facts").splitlines())


def test_prepare_changes_the_real_kernel_state(boot):
    f = facts(boot)
    assert f["prepare.rc"] == "0", boot.text("prepare.err") + boot.text("hook.log")
    assert (
        f["prepared.vtcon"] == "10"
    )  # fbcon unbound; the kernel gave the VTs to the dummy console
    assert f["prepared.hugepages"] == "64"
    assert f["prepared.thp"] == "always madvise [never]"
    assert f["prepared.swappiness"] == "7"
    assert "cpuset" in f["prepared.cgroup"].split() and "cpuset" not in f["cgroup.before"].split()
    assert f["prepared.services"] == "0"
    assert f["prepared.machine"] == ""  # libvirt's group, where the VM runs: left alone
    log = boot.text("hook.log")
    assert "no firmware framebuffer is bound to a driver" in log  # the guest boots without one


def test_release_puts_everything_back(boot):
    f = facts(boot)
    assert f["release.rc"] == "0", boot.text("release.err")
    assert boot.text("snap-released") == boot.text("snap-before")


def test_scripts_get_libvirts_arguments_and_the_domain_xml(boot):
    assert boot.text("script.argv") == "toolbox prepare begin -\n"
    assert "<memory unit='MiB'>128</memory>" in boot.text("script.stdin")


def test_dry_run_plans_the_writes_and_changes_nothing(boot):
    f = facts(boot)
    plan = boot.text("dryrun.out")
    assert f["dryrun.rc"] == "0", plan
    assert (
        "write 0 > /sys/class/vtconsole/vtcon1/bind   [vtcon1 (M) frame buffer device: bound → unbound]"
        in plan
    )
    assert (
        "write 64 > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages   [2M pages: 0 → 64]"
        in plan
    )
    assert "write +cpuset > /sys/fs/cgroup/cgroup.subtree_control" in plan
    assert "/tmp/qemu.d/toolbox/prepare/begin/50-record.sh toolbox prepare begin -" in plan
    assert boot.text("snap-after-dryrun") == boot.text("snap-before")


def test_hugepages_the_kernel_cannot_give_fail_clearly_and_roll_back(boot):
    f = facts(boot)
    err = boot.text("big-prepare.err")
    assert f["big-prepare.rc"] == "1"
    assert (
        "the kernel gave 0 of the 1 1G hugepages asked for (0 in the pool after 4 tries with memory "
        "compaction); the pool is back to 0"
    ) in err
    assert f["big.pool"] == "0"
    assert f["big-release.rc"] == "0"
    assert boot.text("snap-end") == boot.text("snap-before")


def test_kill_holders_ends_only_allowed_processes(boot):
    f = facts(boot)
    refused = boot.text("holders-refused.err")
    assert f["holders-refused.rc"] == "1", refused
    assert "refusing to end processes not in allow: tail (pid " in refused
    assert f"holds /dev/dri/card0 of gpu ({GPU_VIDEO})" in refused
    assert f["holders.refused.alive"] == "yes"  # nothing was ended
    assert f["holders.rc"] == "0", boot.text("holders.err")
    assert f["holders.sleeper"] == "ended"
    assert (
        f"kill -s TERM -- {f['holders.pid']}   [SIGTERM to sleep (pid {f['holders.pid']})]"
        in boot.text("hook.log")
    )
