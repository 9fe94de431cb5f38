"""Smoke tests of the guest harness: the emulated machine offers what the
product needs (GPU-like functions in one IOMMU group, the sysfs rebind route
to vfio-pci and back, resourceN_resize), and failures are reported as such.

Boots are expensive (~4-6 s each under TCG), so each scenario records facts in
$OUT/facts ("key=value" lines) and several tests assert on one boot.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import (
    GPU_AUDIO,
    GPU_AUDIO_DRIVER,
    GPU_VIDEO,
    GPU_VIDEO_DRIVER,
    REBAR_DEFAULT_MIB,
    REBAR_DRIVER,
    REBAR_SIZES_BITMAP,
    REBAR_SUPPORTED_MIB,
    GuestNoResult,
    GuestPanic,
    GuestRun,
)

pytestmark = pytest.mark.guest

# resourceN_resize takes log2 of the size in MiB.
RESIZE_TO = 6  # 64 MiB, advertised
UNSUPPORTED = 9  # 512 MiB, not advertised

# Shell helpers shared by the scenarios below.
HELPERS = r"""
set -euo pipefail
dev=/sys/bus/pci/devices
fact() { local key=$1; shift; printf '%s=%s\n' "$key" "$*" >>"$OUT/facts"; }
driver_of() { local link; link=$(readlink "$dev/$1/driver") && basename "$link" || echo none; }
# try_write VALUE FILE: "ok", or the error message of the failed write(2).
try_write() {
    local err
    if err=$( { printf '%s\n' "$1" >"$2"; } 2>&1 ); then echo ok; else echo "${err##*: }"; fi
}
# The product's rebind route: driver_override, unbind, drivers_probe.
# DRIVER '' clears the override, so the device goes back to its own driver.
rebind() {
    printf '%s\n' "$2" >"$dev/$1/driver_override"
    if [ -e "$dev/$1/driver" ]; then printf '%s' "$1" >"$dev/$1/driver/unbind"; fi
    printf '%s' "$1" >/sys/bus/pci/drivers_probe
}
"""

IOMMU_REBAR_SCENARIO = (
    HELPERS
    + f"RESIZE_TO={RESIZE_TO} UNSUPPORTED={UNSUPPORTED}\n"
    + r"""
modprobe vfio-pci
fact video.driver "$(driver_of $GPU_VIDEO)"
fact audio.driver "$(driver_of $GPU_AUDIO)"
group=$(basename "$(readlink $dev/$GPU_VIDEO/iommu_group)")
fact video.group "$group"
fact audio.group "$(basename "$(readlink $dev/$GPU_AUDIO/iommu_group)")"
fact group.devices $(ls $dev/$GPU_VIDEO/iommu_group/devices)

for fn in $GPU_VIDEO $GPU_AUDIO; do rebind $fn vfio-pci; done
fact video.vfio "$(driver_of $GPU_VIDEO)"
fact audio.vfio "$(driver_of $GPU_AUDIO)"
fact group.chardev "$([ -c /dev/vfio/$group ] && echo yes || echo no)"

for fn in $GPU_VIDEO $GPU_AUDIO; do rebind $fn ''; done
fact video.back "$(driver_of $GPU_VIDEO)"
fact audio.back "$(driver_of $GPU_AUDIO)"
fact video.override "$(cat $dev/$GPU_VIDEO/driver_override)"

# Resizable BAR (rebar=True).
r=$dev/$REBAR_DEVICE
resize=$r/resource${REBAR_BAR}_resize
bar_mib() {
    local start end flags
    read -r start end flags < <(sed -n "$((REBAR_BAR + 1))p" $r/resource)
    echo $(( (end - start + 1) >> 20 ))
}
fact rebar.sizes "$(cat $resize)"
fact rebar.initial "$(bar_mib)"
fact rebar.bound "$(try_write $RESIZE_TO $resize)"
printf '%s' $REBAR_DEVICE >$r/driver/unbind
fact rebar.supported "$(try_write $RESIZE_TO $resize)"
fact rebar.after_supported "$(bar_mib)"
fact rebar.unsupported "$(try_write $UNSUPPORTED $resize)"
fact rebar.after_unsupported "$(bar_mib)"
printf '%s' $REBAR_DEVICE >/sys/bus/pci/drivers_probe
fact rebar.rebound "$(driver_of $REBAR_DEVICE)"
# virtio-pci reset the device and set ACKNOWLEDGE through BAR 4; reading the
# status back goes through the moved BAR too (all ones if it decoded nothing).
fact rebar.virtio_status "$(cat $r/virtio*/status)"
# Unloading restores the real config space: no capability, the real size.
rmmod rebar_emu
fact rebar.unloaded "$([ -e $resize ] && echo resizable || echo plain)" "$(bar_mib)"
"""
)

NO_IOMMU_SCENARIO = (
    HELPERS
    + r"""
modprobe vfio-pci
fact iommu_groups "$(ls /sys/kernel/iommu_groups | wc -l)"
printf 'vfio-pci\n' >$dev/$GPU_VIDEO/driver_override
printf '%s' $GPU_VIDEO >$dev/$GPU_VIDEO/driver/unbind
fact drivers_probe "$(try_write $GPU_VIDEO /sys/bus/pci/drivers_probe)"
fact video.driver "$(driver_of $GPU_VIDEO)"
"""
)


def facts(run: GuestRun) -> dict[str, str]:
    assert run.returncode == 0, f"scenario failed ({run.returncode}):\n{run.output}"
    return dict(line.split("=", 1) for line in run.text("facts").splitlines())


@pytest.fixture(scope="module")
def main_facts(guest, tmp_path_factory) -> dict[str, str]:
    """One boot with IOMMU and the ReBAR device serves the first four tests."""
    run = guest(
        IOMMU_REBAR_SCENARIO, iommu=True, rebar=True, run_dir=tmp_path_factory.mktemp("iommu")
    )
    return facts(run)


def test_gpu_functions_bound_to_their_drivers(main_facts):
    assert main_facts["video.driver"] == GPU_VIDEO_DRIVER
    assert main_facts["audio.driver"] == GPU_AUDIO_DRIVER


def test_gpu_functions_share_one_iommu_group(main_facts):
    assert main_facts["video.group"] == main_facts["audio.group"]
    assert main_facts["group.devices"] == f"{GPU_VIDEO} {GPU_AUDIO}"


def test_sysfs_rebind_to_vfio_and_back(main_facts):
    assert main_facts["video.vfio"] == "vfio-pci"
    assert main_facts["audio.vfio"] == "vfio-pci"
    assert main_facts["group.chardev"] == "yes"
    assert main_facts["video.back"] == GPU_VIDEO_DRIVER
    assert main_facts["audio.back"] == GPU_AUDIO_DRIVER
    assert main_facts["video.override"] == "(null)"


def test_rebar_resize(main_facts):
    assert (1 << RESIZE_TO) in REBAR_SUPPORTED_MIB
    assert (1 << UNSUPPORTED) not in REBAR_SUPPORTED_MIB
    assert int(main_facts["rebar.sizes"], 16) == REBAR_SIZES_BITMAP
    assert int(main_facts["rebar.initial"]) == REBAR_DEFAULT_MIB
    assert main_facts["rebar.bound"] == "Device or resource busy"
    assert main_facts["rebar.supported"] == "ok"
    assert int(main_facts["rebar.after_supported"]) == 1 << RESIZE_TO
    assert main_facts["rebar.unsupported"] == "Invalid argument"
    assert int(main_facts["rebar.after_unsupported"]) == 1 << RESIZE_TO
    # The device still answers at the moved, resized BAR.
    assert main_facts["rebar.rebound"] == REBAR_DRIVER
    assert main_facts["rebar.virtio_status"] == "0x00000001"  # ACKNOWLEDGE
    assert main_facts["rebar.unloaded"] == f"plain {REBAR_DEFAULT_MIB}"


def test_without_iommu_vfio_probe_fails_but_drivers_probe_succeeds(guest, tmp_path):
    run = guest(NO_IOMMU_SCENARIO, iommu=False, run_dir=tmp_path)
    result = facts(run)
    assert result["iommu_groups"] == "0"
    assert result["drivers_probe"] == "ok"  # the trap: success reported...
    assert result["video.driver"] == "none"  # ...yet nothing is bound
    assert f"vfio-pci: probe of {GPU_VIDEO} failed with error -22" in run.dmesg


def test_panic_is_reported(guest):
    with pytest.raises(GuestPanic, match="panicked") as exc_info:
        guest("echo c >/proc/sysrq-trigger")
    assert "sysrq" in str(exc_info.value).lower()


def test_timeout_kills_qemu(guest, tmp_path):
    with pytest.raises(GuestNoResult, match="timed out"):
        guest("sleep 600", timeout=1, run_dir=tmp_path)
    assert not [
        p for p in Path("/proc").glob("[0-9]*/cmdline") if str(tmp_path).encode() in _read(p)
    ], "QEMU left running"


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # the process exited meanwhile
        return b""
