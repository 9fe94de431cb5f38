"""libvirt with managed='yes' hostdevs (virt-manager's default, what most users have), in the
QEMU guest: libvirtd runs the hook installed by install.sh; the nested domain gets the GPU-like
pair and the ReBAR device (REBAR_DEVICE, rebar/rebar_emu.c) through vfio. One boot, three
profiles, CYCLES start/destroy cycles each:

  no-detach     resize_bar only: libvirt detaches the devices itself after prepare/begin and
                reattaches them to their host drivers *before* release/end, so the resize
                undo finds the device on its host driver again (notes/real-hosts.md)
  libvirt       detach via libvirt + resize_bar: libvirt reuses the hook's detach and leaves
                the reattach to release/end
  sysfs         detach via sysfs + resize_bar: libvirt's reattach skips the unbind from the
                stub; release/end gives the devices back

After each destroy the three devices must be on the drivers they began on, with the
driver_override they began with, and the BAR at its first size.
"""

from __future__ import annotations

import os

import pytest
from harness import (
    GPU_AUDIO,
    GPU_AUDIO_DRIVER,
    GPU_VIDEO,
    GPU_VIDEO_DRIVER,
    REBAR_BAR,
    REBAR_DEFAULT_MIB,
    REBAR_DEVICE,
    REBAR_DRIVER,
    GuestRun,
)
from libvirt_hook_log import FILTERS
from test_libvirt_in_guest import _host_has_libvirt

pytestmark = pytest.mark.guest

CYCLES = 2
PROFILES = ("no-detach", "libvirt", "sysfs")
REBAR_TO_MIB = 64

DEVICES = (
    f'devices: {{gpu: "{GPU_VIDEO}", gpu-audio: "{GPU_AUDIO}", rebar-dev: "{REBAR_DEVICE}"}}\n'
)
RESIZE = f"  - resize_bar: {{device: rebar-dev, bar: {REBAR_BAR}, size: {REBAR_TO_MIB}MiB}}\n"
PROFILE_TEXT = {
    "no-detach": DEVICES + "prepare/begin:\n" + RESIZE,
    "libvirt": DEVICES + "prepare/begin:\n  - detach: [gpu, gpu-audio, rebar-dev]\n" + RESIZE,
    "sysfs": DEVICES + "prepare/begin:\n  - modprobe: [vfio_pci]\n"
    "  - detach: {devices: [gpu, gpu-audio, rebar-dev], via: sysfs}\n" + RESIZE,
}

SCENARIO = r"""
set -uo pipefail
dev=/sys/bus/pci/devices
fact() { local key=$1; shift; printf '%s=%s\n' "$key" "$*" >>"$OUT/facts"; }
fail() { echo "scenario: $*" >&2; cp /var/log/libvirt/*.log "$OUT/" 2>/dev/null; exit 1; }
driver_of() { local link; link=$(readlink "$dev/$1/driver") && basename "$link" || echo none; }
bar_mib() { local start end flags; read -r start end flags < <(sed -n "$((REBAR_BAR + 1))p" "$dev/$REBAR_DEVICE/resource"); echo $(((end - start + 1) >> 20)); }
state() {
    local a
    for a in $GPU_VIDEO $GPU_AUDIO $REBAR_DEVICE; do printf '%s=%s,%s ' "$a" "$(driver_of $a)" "$(cat $dev/$a/driver_override)"; done
    printf 'bar=%s\n' "$(bar_mib)"
}
virsh() { command virsh -c qemu:///system "$@"; }

# --- libvirt's world in the RAM root (as test_libvirt_in_guest.py sets it up) ------------------
ln -s /run /var/run
mkdir -p /etc/libvirt /var/lib/libvirt /var/cache/libvirt /run/libvirt /var/log/libvirt/qemu /dev/vfio
[ -e /dev/vfio/vfio ] || mknod /dev/vfio/vfio c 10 196
echo 'libvirt-qemu:x:64055:64055:Libvirt Qemu:/var/lib/libvirt:/usr/sbin/nologin' >>/etc/passwd
printf 'libvirt-qemu:x:64055:\nkvm:x:107:\n' >>/etc/group
printf 'user = "root"\ngroup = "root"\n' >/etc/libvirt/qemu.conf
/project/install.sh --prefix /opt/passthrough-hook >"$OUT/install.out" 2>&1 || fail "install.sh failed"
virtlogd -d || fail "virtlogd did not start"
env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C \
    LIBVIRT_LOG_FILTERS="$HOOK_LOG_FILTERS 1:util.pci 1:hypervisor.virhostdev" \
    LIBVIRT_LOG_OUTPUTS="1:file:/var/log/libvirt/libvirtd.log" \
    libvirtd -d || fail "libvirtd did not start"
for _ in $(seq 600); do virsh version >/dev/null 2>&1 && break; sleep 0.2; done
virsh version >/dev/null 2>&1 || fail "libvirtd did not answer in 120 s"

hostdev() {
    printf "    <hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='0x0000' bus='0x%s' slot='0x00' function='0x%s'/></source></hostdev>\n" "$1" "$2"
}
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
$(hostdev 01 0; hostdev 01 1; hostdev 02 0)
  </devices>
</domain>
EOF
[ "$GPU_VIDEO $GPU_AUDIO $REBAR_DEVICE" = "0000:01:00.0 0000:01:00.1 0000:02:00.0" ] || fail "the XML names other addresses"
virsh define /tmp/win10.xml >/dev/null || fail "virsh define failed"
fact before "$(state)"

for name in $PROFILE_NAMES; do
    cp "/tmp/profile-$name.yaml" /etc/libvirt/hooks/passthrough/win10.yaml
    chmod 644 /etc/libvirt/hooks/passthrough/win10.yaml
    for cycle in $(seq $CYCLES); do
        virsh start win10 >"$OUT/$name-start$cycle.out" 2>&1 || fail "virsh start ($name, cycle $cycle): $(cat $OUT/$name-start$cycle.out)"
        fact "$name.$cycle.started" "$(state)"
        qemu=$(cat /run/libvirt/qemu/win10.pid)
        fact "$name.$cycle.vfio_devices" "$(ls -l /proc/$qemu/fd | grep -c 'anon_inode:\[vfio-device\]')"
        virsh destroy win10 >"$OUT/$name-destroy$cycle.out" 2>&1 || fail "virsh destroy ($name, cycle $cycle)"
        fact "$name.$cycle.destroyed" "$(state)"
        fact "$name.$cycle.journal" "$(ls /run/passthrough-hook/win10.json 2>/dev/null || echo none)"
    done
done
cp /var/log/libvirt/passthrough-hook.log /var/log/libvirt/libvirtd.log "$OUT/"
"""


def _script() -> str:
    head = f"CYCLES={CYCLES}\nPROFILE_NAMES='{' '.join(PROFILES)}'\nHOOK_LOG_FILTERS='{FILTERS}'\n"
    head += "mkdir -p /etc/libvirt/hooks/passthrough\n"
    for name, text in PROFILE_TEXT.items():
        head += f"cat >/tmp/profile-{name}.yaml <<'PROFILE'\n{text}PROFILE\n"
    return head + SCENARIO


@pytest.fixture(scope="module")
def facts(guest, tmp_path_factory) -> dict[str, str]:
    problem = _host_has_libvirt()
    if problem:
        outcome = pytest.fail if os.environ.get("PASSTHROUGH_ALL_TIERS") == "1" else pytest.skip
        outcome(f"libvirt in the guest needs the host's libvirt: {problem}", pytrace=False)
    run: GuestRun = guest(
        _script(), iommu=True, rebar=True, timeout=1500, run_dir=tmp_path_factory.mktemp("managed")
    )
    assert run.returncode == 0, (
        f"scenario failed ({run.returncode}):\n{run.output}\n"
        + run.files.get("passthrough-hook.log", b"").decode(errors="replace")
    )
    return dict(line.split("=", 1) for line in run.text("facts").splitlines())


BEFORE = (
    f"{GPU_VIDEO}={GPU_VIDEO_DRIVER},(null) {GPU_AUDIO}={GPU_AUDIO_DRIVER},(null) "
    f"{REBAR_DEVICE}={REBAR_DRIVER},(null) bar={REBAR_DEFAULT_MIB}"
)


@pytest.mark.parametrize("profile", PROFILES)
def test_managed_hostdevs_start_on_vfio_with_the_bar_resized(facts, profile):
    assert facts["before"] == BEFORE
    for cycle in range(1, CYCLES + 1):
        started = facts[f"{profile}.{cycle}.started"]
        assert started.startswith(
            f"{GPU_VIDEO}=vfio-pci,vfio-pci {GPU_AUDIO}=vfio-pci,vfio-pci "
            f"{REBAR_DEVICE}=vfio-pci,vfio-pci"
        ), started
        assert started.endswith(f"bar={REBAR_TO_MIB}"), started
        assert facts[f"{profile}.{cycle}.vfio_devices"] == "3"


@pytest.mark.parametrize("profile", PROFILES)
def test_after_destroy_devices_overrides_and_bar_are_as_they_began(facts, profile):
    for cycle in range(1, CYCLES + 1):
        assert facts[f"{profile}.{cycle}.destroyed"] == BEFORE
        assert facts[f"{profile}.{cycle}.journal"] == "none"
