"""remove_rescan (the AMD reset bug workaround) and reset_method, on the fake kernel: a
removed function leaves the bus until the rescan finds it again, with no driver_override,
probed by its native driver."""

from __future__ import annotations

import json
from pathlib import Path

import hostdeps
from fakekernel import Killed
from runs import LOG, STATE, hook, recover

GPU, AUDIO, NVME = "0000:03:00.0", "0000:03:00.1", "0000:01:00.0"
DEVICES = f'devices: {{gpu: "{GPU}", gpu-audio: "{AUDIO}", disk: "{NVME}"}}\n'

# The release of a Polaris/Navi 10 card: undo what prepare did, then remove and rescan so
# the card is initialised from scratch by amdgpu.
PROFILE = (
    DEVICES
    + """\
prepare/begin:
  - modprobe: [vfio_pci]
  - detach: {devices: [gpu, gpu-audio], via: sysfs}
release/end:
  - undo: prepare/begin
  - remove_rescan: [gpu, gpu-audio]
"""
)


def test_release_removes_and_rediscovers_the_card_on_its_host_drivers(kernel):
    start = kernel.snapshot()
    assert hook(kernel, "prepare", "begin", profile=PROFILE)[0] == 0
    code, _, err = hook(kernel, "release", "end")
    assert code == 0, err
    assert kernel.snapshot() == start
    writes = [w for w in kernel.writes if w[0].endswith(("/remove", "/rescan"))]
    assert writes == [
        (f"bus/pci/devices/{GPU}/remove", "1"),
        (f"bus/pci/devices/{AUDIO}/remove", "1"),
        ("bus/pci/rescan", "1"),
    ]
    log = Path(LOG).read_text()
    assert (
        f"write 1 > /sys/bus/pci/devices/{GPU}/remove   [gpu ({GPU}): amdgpu → off the bus]" in log
    )
    assert f"check {GPU} driver   [back → amdgpu]" in log
    assert not Path(STATE, "win10.json").exists()


def test_the_dry_run_predicts_the_removal_and_the_return(kernel):
    profile = DEVICES + "prepare/begin:\n  - remove_rescan: [gpu, gpu-audio]\n"
    code, out, err = hook(kernel, "prepare", "begin", profile=profile, dry_run=True)
    assert code == 0, out + err
    assert (
        "1. remove gpu (0000:03:00.0), gpu-audio (0000:03:00.1) from the PCI bus and rescan it"
        in out
    )
    assert "write 1 > /sys/bus/pci/rescan   [the removed functions are found again]" in out
    assert f"check {AUDIO} driver   [back → snd_hda_intel]" in out
    assert kernel.driver(GPU) == "amdgpu" and not kernel.writes


def test_a_device_on_vfio_is_put_back_on_vfio_after_the_rescan(kernel):
    """A rescan clears driver_override and amdgpu takes the card; the step binds it back."""
    profile = (
        DEVICES
        + "prepare/begin:\n  - modprobe: [vfio_pci]\n  - detach: {devices: [gpu], via: sysfs}\n"
        "  - remove_rescan: [gpu]\n"
    )
    code, _, err = hook(kernel, "prepare", "begin", profile=profile)
    assert code == 0, err
    assert kernel.driver(GPU) == "vfio-pci" and kernel.override(GPU) == "vfio-pci"


def test_the_host_guard_refuses_the_disk_the_root_filesystem_is_on(kernel):
    hostdeps.add_disk(Path("/host"), NVME, "nvme0n1", ["nvme0n1p1"])
    hostdeps.add_mounts(Path("/host"), [("/dev/nvme0n1p1", "/")])
    profile = DEVICES + "prepare/begin:\n  - remove_rescan: [disk]\n"
    code, _, err = hook(kernel, "prepare", "begin", profile=profile)
    assert code == 1
    assert (
        f"{NVME}: refusing to remove it: the host depends on it now (/ is mounted from /dev/nvme0n1p1)"
        in err
    )
    assert not [w for w in kernel.writes if w[0].endswith("/remove")]


def test_a_card_that_does_not_come_back_fails_and_recover_rescans(kernel):
    profile = DEVICES + "prepare/begin:\n  - remove_rescan: [gpu, gpu-audio]\n"
    kernel.fail("bus/pci/rescan", "EIO")
    code, _, err = hook(kernel, "prepare", "begin", profile=profile)
    assert code == 1
    assert "writing '1' to /sys/bus/pci/rescan failed: Input/output error" in err
    # The rollback rescans again (the fault was once): both functions are back.
    assert kernel.driver(GPU) == "amdgpu" and kernel.driver(AUDIO) == "snd_hda_intel"
    assert not Path(STATE, "win10.json").exists()


def test_killed_between_removal_and_rescan_recover_brings_them_back(kernel):
    profile = DEVICES + "prepare/begin:\n  - remove_rescan: [gpu, gpu-audio]\n"
    start = kernel.snapshot()
    kernel.fail("bus/pci/rescan", "kill")
    try:
        hook(kernel, "prepare", "begin", profile=profile)
    except Killed:
        pass
    assert kernel.driver(GPU) is None and not Path(f"/host/sys/bus/pci/devices/{GPU}").exists()
    record = json.loads(Path(STATE, "win10.json").read_text())["entries"][0]["record"]
    assert record["removed"] == [GPU, AUDIO] and not record["back"]
    code, out, err = recover(kernel)
    assert code == 0, out + err
    assert kernel.snapshot() == start


# --- reset_method ---------------------------------------------------------------------------


def test_reset_method_is_set_and_put_back(kernel):
    path = Path(f"/host/sys/bus/pci/devices/{AUDIO}/reset_method")
    assert path.read_text().strip() == "bus"
    kernel.reset_defaults[GPU] = "device_specific bus"  # vendor-reset loaded
    Path(f"/host/sys/bus/pci/devices/{GPU}/reset_method").write_text("device_specific bus\n")
    profile = DEVICES + "prepare/begin:\n  - reset_method: {device: gpu, method: device_specific}\n"
    code, _, err = hook(kernel, "prepare", "begin", profile=profile)
    assert code == 0, err
    gpu_file = Path(f"/host/sys/bus/pci/devices/{GPU}/reset_method")
    assert gpu_file.read_text().strip() == "device_specific"
    assert "[reset: device_specific bus → device_specific]" in Path(LOG).read_text()
    assert hook(kernel, "release", "end")[0] == 0
    assert gpu_file.read_text().strip() == "device_specific bus"


def test_a_method_the_device_does_not_support_is_the_kernels_einval(kernel):
    profile = DEVICES + "prepare/begin:\n  - reset_method: {device: gpu, method: flr}\n"
    code, _, err = hook(kernel, "prepare", "begin", profile=profile)
    assert code == 1
    assert (
        "writing 'flr' to /sys/bus/pci/devices/0000:03:00.0/reset_method failed: Invalid argument"
        in err
    )
    assert Path(f"/host/sys/bus/pci/devices/{GPU}/reset_method").read_text().strip() == "bus"


def test_an_unknown_method_name_is_a_profile_error(kernel):
    profile = DEVICES + "prepare/begin:\n  - reset_method: {device: gpu, method: warm}\n"
    code, _, err = hook(kernel, "prepare", "begin", profile=profile)
    assert code == 2, err
    assert '"warm" is not default, or reset methods in the order to try' in err
