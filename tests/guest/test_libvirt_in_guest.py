"""Everything real: inside the QEMU guest, a libvirtd runs the hook installed by install.sh, the
hook detaches the guest's GPU-like functions through libvirt, and libvirt starts a nested QEMU
with them assigned through vfio; `virsh destroy` gives them back to their drivers.

One boot runs the whole story (boots are expensive); the scenario records facts in
$OUT/facts and the tests below assert on them.

libvirtd in this guest (facts in ../shared/notes/libvirt-hooks.md): its binaries and QEMU
come from the host's /usr over 9p; /etc, /var and /run are the guest's RAM root, so the
daemon's state starts empty. It needs the `libvirt-qemu` user and group in /etc/passwd
(looked up before qemu.conf is read), `user = "root"` in qemu.conf (others cannot read the
9p /usr), /var/run -> /run (virsh looks for /var/run/libvirt/libvirt-sock), and
/dev/vfio/vfio. The domain is TCG: there is no KVM in the guest.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess

import pytest
from harness import GPU_AUDIO, GPU_AUDIO_DRIVER, GPU_VIDEO, GPU_VIDEO_DRIVER, GuestRun
from libvirt_hook_log import FILTERS, parse_trace

from passthrough.domain_xml import Hostdev, parse

pytestmark = pytest.mark.guest

CYCLES = 2  # the first start pays for libvirt's first hook call and Python's cold caches
HOST_DRIVERS = f"{GPU_VIDEO_DRIVER} {GPU_AUDIO_DRIVER}"
MAIN_HOOK = "/etc/libvirt/hooks/qemu"
START_EVENTS = ["prepare/begin", "start/begin", "started/begin"]
STOP_EVENTS = ["stopped/end", "release/end"]

SCENARIO = r"""
set -uo pipefail
dev=/sys/bus/pci/devices
fact() { local key=$1; shift; printf '%s=%s\n' "$key" "$*" >>"$OUT/facts"; }
fail() { echo "scenario: $*" >&2; cp /var/log/libvirt/*.log "$OUT/" 2>/dev/null; exit 1; }
# Seconds since $1 (an $EPOCHREALTIME), to 10 ms. No awk: /usr/bin/awk points into /etc/alternatives.
since() { local us=$(( ${EPOCHREALTIME/./} - ${1/./} )); printf '%d.%02d' $((us / 1000000)) $((us % 1000000 / 10000)); }
driver_of() { local link; link=$(readlink "$dev/$1/driver") && basename "$link" || echo none; }
drivers() { echo "$(driver_of $GPU_VIDEO) $(driver_of $GPU_AUDIO)"; }
virsh() { command virsh -c qemu:///system "$@"; }

# --- libvirt's world in the RAM root -----------------------------------------------------------
ln -s /run /var/run
mkdir -p /etc/libvirt /var/lib/libvirt /var/cache/libvirt /run/libvirt /var/log/libvirt/qemu /dev/vfio
[ -e /dev/vfio/vfio ] || mknod /dev/vfio/vfio c 10 196
echo 'libvirt-qemu:x:64055:64055:Libvirt Qemu:/var/lib/libvirt:/usr/sbin/nologin' >>/etc/passwd
printf 'libvirt-qemu:x:64055:\nkvm:x:107:\n' >>/etc/group
printf 'user = "root"\ngroup = "root"\n' >/etc/libvirt/qemu.conf

# --- the hook, installed as a user would (/usr is read-only here: --prefix) --------------------
t=$EPOCHREALTIME
/project/install.sh --prefix /opt/passthrough-hook >"$OUT/install.out" 2>&1 || fail "install.sh failed"
fact install.seconds "$(since $t)"
# Keeps the domain XML libvirt writes on prepare/begin (runs after the main hook: qemu.d/).
mkdir -p /etc/libvirt/hooks/qemu.d
printf '#!/bin/sh\nif [ "$2 $3" = "prepare begin" ]; then cat >/out/prepare-begin.xml; else cat >/dev/null; fi\n' \
    >/etc/libvirt/hooks/qemu.d/keep-xml
chmod 755 /etc/libvirt/hooks/qemu.d/keep-xml

virtlogd -d || fail "virtlogd did not start"
# As systemd starts it, plus libvirt's record of every hook call (tests/libvirt_hook_log.py).
env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C \
    LIBVIRT_LOG_FILTERS="$HOOK_LOG_FILTERS" \
    LIBVIRT_LOG_OUTPUTS="1:file:/out/hook-calls.log 3:file:/var/log/libvirt/libvirtd.log" \
    libvirtd -d || fail "libvirtd did not start"
t=$EPOCHREALTIME
until virsh version >/dev/null 2>&1; do  # the first call waits for QEMU's capability probe
    kill -0 "$(cat /run/libvirtd.pid)" 2>/dev/null || fail "libvirtd died"
    [ "$(since $t | cut -d. -f1)" -lt 120 ] || fail "libvirtd did not answer in 120 s"
    sleep 0.2
done
fact libvirtd.ready.seconds "$(since $t)"

cat >/tmp/win10.xml <<EOF
<domain type='qemu'>
  <name>win10</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <video><model type='none'/></video>
    <memballoon model='none'/>
    <hostdev mode='subsystem' type='pci' managed='no'>
      <source><address domain='0x0000' bus='0x01' slot='0x00' function='0x0'/></source>
    </hostdev>
    <hostdev mode='subsystem' type='pci' managed='no'>
      <source><address domain='0x0000' bus='0x01' slot='0x00' function='0x1'/></source>
    </hostdev>
  </devices>
</domain>
EOF
[ "$GPU_VIDEO $GPU_AUDIO" = "0000:01:00.0 0000:01:00.1" ] || fail "the domain XML names other addresses"
virsh define /tmp/win10.xml >/dev/null || fail "virsh define failed"
profile=/etc/libvirt/hooks/passthrough/win10.yaml
cat >$profile <<EOF
devices:
  gpu: "$GPU_VIDEO"
  gpu-audio: "$GPU_AUDIO"
prepare/begin:
  - detach: [gpu, gpu-audio]
EOF
fact drivers.before "$(drivers)"

# --- start and destroy: the hook detaches, QEMU takes the devices, release gives them back -----
for cycle in $(seq $CYCLES); do
    t=$EPOCHREALTIME
    virsh start win10 >"$OUT/start$cycle.out" 2>&1 || fail "virsh start (cycle $cycle) failed: $(cat $OUT/start$cycle.out)"
    fact cycle$cycle.start.seconds "$(since $t)"
    fact cycle$cycle.started.drivers "$(drivers)"
    fact cycle$cycle.started.state "$(virsh domstate win10)"
    qemu=$(cat /run/libvirt/qemu/win10.pid)
    fact cycle$cycle.qemu.vfio_devices "$(ls -l /proc/$qemu/fd | grep -c 'anon_inode:\[vfio-device\]')"
    # What the nested guest sees on its PCI bus: the two functions, by vendor:device.
    virsh qemu-monitor-command --hmp win10 'info pci' >"$OUT/info-pci$cycle.out" 2>&1
    fact cycle$cycle.nested.pci "$(grep -o 'PCI device [0-9a-f:]*' "$OUT/info-pci$cycle.out" | cut -d' ' -f3 | sort | tr '\n' ' ')"
    t=$EPOCHREALTIME
    virsh destroy win10 >/dev/null 2>&1 || fail "virsh destroy (cycle $cycle) failed"
    fact cycle$cycle.destroy.seconds "$(since $t)"
    fact cycle$cycle.destroyed.drivers "$(drivers)"
    fact cycle$cycle.destroyed.journal "$(ls /run/passthrough-hook/win10.json 2>/dev/null || echo none)"
done

# --- a step that fails after the detach: the start fails, the devices are given back -----------
echo '  - resize_bar: {device: gpu, bar: 2, size: 8MiB}   # bochs-display has no ReBAR' >>$profile
t=$EPOCHREALTIME
virsh start win10 >"$OUT/failed-start.out" 2>&1
fact failed.rc $?
fact failed.seconds "$(since $t)"
fact failed.drivers "$(drivers)"
fact failed.state "$(virsh domstate --reason win10)"
fact failed.journal "$(ls /run/passthrough-hook/win10.json 2>/dev/null || echo none)"
cp /var/log/libvirt/passthrough-hook.log /var/log/libvirt/libvirtd.log "$OUT/"
""".replace("$CYCLES", str(CYCLES)).replace("$HOOK_LOG_FILTERS", FILTERS)


def _host_has_libvirt() -> str | None:
    """Why the guest cannot run libvirt from the host's /usr, or None."""
    missing = [
        tool
        for tool in ("libvirtd", "virtlogd", "virsh")
        if not shutil.which(tool, path="/usr/sbin:/usr/bin")
    ]
    if missing:
        return f"{', '.join(missing)} not in /usr (Debian: apt-get install libvirt-daemon-system libvirt-clients)"
    if subprocess.run(
        ["/usr/bin/python3", "-c", "import libvirt, yaml"], capture_output=True
    ).returncode:
        return "/usr/bin/python3 cannot import libvirt and yaml (Debian: apt-get install python3-libvirt python3-yaml)"
    return None


@pytest.fixture(scope="module")
def libvirt_run(guest, tmp_path_factory, guest_report) -> GuestRun:
    """One boot: libvirtd in the guest, CYCLES start/destroy cycles of win10, then a failing start."""
    problem = _host_has_libvirt()
    if problem:
        outcome = pytest.fail if os.environ.get("PASSTHROUGH_ALL_TIERS") == "1" else pytest.skip
        outcome(f"libvirt in the guest needs the host's libvirt: {problem}", pytrace=False)
    run = guest(SCENARIO, iommu=True, timeout=420, run_dir=tmp_path_factory.mktemp("libvirt"))
    assert run.returncode == 0, (
        f"scenario failed ({run.returncode}):\n{run.output}\n"
        + run.files.get("libvirtd.log", b"").decode(errors="replace")
    )
    facts = _facts(run)
    section = "libvirt in the guest (seconds)"
    guest_report(
        section,
        f"whole boot: {run.duration:.1f} (install.sh {facts['install.seconds']}, "
        f"libvirtd ready {facts['libvirtd.ready.seconds']})",
    )
    for cycle in range(1, CYCLES + 1):
        start, destroy = (
            float(facts[f"cycle{cycle}.{what}.seconds"]) for what in ("start", "destroy")
        )
        guest_report(
            section,
            f"cycle {cycle}: virsh start {start:.2f} + virsh destroy {destroy:.2f} "
            f"= {start + destroy:.2f}",
        )
    guest_report(
        section, f"failing virsh start (detach, failed step, rollback): {facts['failed.seconds']}"
    )
    calls = parse_trace(run.text("hook-calls.log"))
    for event in START_EVENTS + STOP_EVENTS:
        seconds = [
            call.seconds for call in calls if call.script == MAIN_HOOK and call.event == event
        ]
        if seconds:
            guest_report(
                section,
                f"hook call {event} as libvirtd times it: median {statistics.median(seconds):.2f} "
                f"of {len(seconds)}",
            )
    return run


def _facts(run: GuestRun) -> dict[str, str]:
    return dict(line.split("=", 1) for line in run.text("facts").splitlines())


@pytest.fixture(scope="module")
def facts(libvirt_run) -> dict[str, str]:
    return _facts(libvirt_run)


def test_libvirt_ran_the_installed_hook_on_every_event_and_got_what_it_should(libvirt_run):
    calls = [
        (call.event, call.status)
        for call in parse_trace(libvirt_run.text("hook-calls.log"))
        if call.script == MAIN_HOOK and call.domain == "win10"
    ]
    successful_cycle = [(event, 0) for event in START_EVENTS + STOP_EVENTS]
    failed_start = [("prepare/begin", 1), ("stopped/end", 0), ("release/end", 0)]
    assert calls == successful_cycle * CYCLES + failed_start


def test_virsh_start_runs_the_hook_which_detaches_both_functions_for_qemu(facts):
    assert facts["drivers.before"] == HOST_DRIVERS
    for cycle in range(1, CYCLES + 1):
        assert facts[f"cycle{cycle}.started.state"] == "running"
        assert facts[f"cycle{cycle}.started.drivers"] == "vfio-pci vfio-pci"
        assert facts[f"cycle{cycle}.qemu.vfio_devices"] == "2"
        # bochs-display (1234:1111) and ich9-intel-hda (8086:293e) on the nested guest's bus.
        assert {"1234:1111", "8086:293e"} <= set(facts[f"cycle{cycle}.nested.pci"].split())


def test_virsh_destroy_runs_release_which_gives_both_back_to_their_drivers(facts, libvirt_run):
    for cycle in range(1, CYCLES + 1):
        assert facts[f"cycle{cycle}.destroyed.drivers"] == HOST_DRIVERS
        assert facts[f"cycle{cycle}.destroyed.journal"] == "none"
    log = libvirt_run.text("passthrough-hook.log")
    assert (
        log.count("win10 prepare/begin: 1. detach gpu, gpu-audio to vfio-pci via libvirt: done")
        == CYCLES + 1
    )
    assert (
        log.count(
            "win10 release/end: undo prepare/begin step 1: restore gpu-audio → snd_hda_intel, "
            "gpu → bochs-drm: undone"
        )
        == CYCLES
    )


def test_a_failing_step_fails_the_start_and_leaves_both_on_their_drivers(facts, libvirt_run):
    message = libvirt_run.text("failed-start.out")
    assert facts["failed.rc"] == "1"
    assert "error: Hook script execution failed" in message
    assert (
        "passthrough-hook: win10 prepare/begin failed at step 2. resize BAR 2 of gpu (0000:01:00.0)"
        in message
    )
    assert f"{GPU_VIDEO}: BAR 2 has no Resizable BAR capability (no resource2_resize)" in message
    assert (
        "Rolled back, newest first: restore gpu-audio → snd_hda_intel, gpu → bochs-drm." in message
    )
    assert facts["failed.state"] == "shut off (failed)"
    assert facts["failed.drivers"] == HOST_DRIVERS
    assert facts["failed.journal"] == "none"


def test_the_hook_gets_the_live_xml_with_both_hostdevs(libvirt_run):
    domain = parse(libvirt_run.text("prepare-begin.xml"))
    assert domain.problems == ()
    assert domain.name == "win10"
    assert domain.hostdevs == (Hostdev(GPU_VIDEO, managed=False), Hostdev(GPU_AUDIO, managed=False))
