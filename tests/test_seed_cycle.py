"""The seed scenario on the fake kernel: prepare, release, and the host ends as it began."""

import json
from pathlib import Path

from runs import CONFIG, LOG, STATE, hook, write_profile

GPU, AUDIO = "0000:03:00.0", "0000:03:00.1"


def test_prepare_then_release_restores_the_host(kernel):
    start = kernel.snapshot()
    code, _, err = hook(kernel, "prepare", "begin", config=CONFIG)
    assert code == 0, err + Path(LOG).read_text()
    assert kernel.driver(GPU) == "vfio-pci" and kernel.driver(AUDIO) == "vfio-pci"
    assert (
        kernel.store.read(f"bus/pci/devices/{GPU}/resource").splitlines()[2].split()[1]
        == "0x00000078007fffff"
    )
    assert {"vfio", "vfio_iommu_type1", "vfio_pci"} <= kernel.modules
    journal = json.loads(Path(STATE, "win10.json").read_text())
    assert journal["format"] == 1
    assert [e["action"] for e in journal["entries"]] == ["modprobe", "detach", "resize_bar"]
    assert "resize BAR 2 of gpu (0000:03:00.0) to 8 MiB: done" in err

    code, _, err = hook(kernel, "release", "end", config=CONFIG)
    assert code == 0, err
    assert kernel.snapshot() == start
    assert not Path(STATE, "win10.json").exists()


def test_resize_is_done_unbound_and_rebound(kernel):
    hook(kernel, "prepare", "begin", config=CONFIG)
    writes = [w for w in kernel.writes if GPU in w[0] or w[1] == GPU]
    resize = writes.index((f"bus/pci/devices/{GPU}/resource2_resize", "3"))
    assert writes[resize - 1] == ("bus/pci/drivers/vfio-pci/unbind", GPU)
    assert ("bus/pci/drivers_probe", GPU) in writes[resize + 1 :]


def test_release_without_prepare_does_nothing(kernel):
    start = kernel.snapshot()
    code, _, err = hook(kernel, "release", "end", config=CONFIG)
    assert code == 0 and err == ""
    assert kernel.snapshot() == start


def test_prepare_twice_changes_nothing_more_and_one_release_restores(kernel):
    start = kernel.snapshot()
    assert hook(kernel, "prepare", "begin", config=CONFIG)[0] == 0
    after_first = kernel.snapshot()
    writes = len(kernel.writes)
    assert hook(kernel, "prepare", "begin", config=CONFIG)[0] == 0
    assert kernel.snapshot() == after_first
    assert len(kernel.writes) == writes  # nothing written the second time
    assert hook(kernel, "release", "end", config=CONFIG)[0] == 0
    assert kernel.snapshot() == start
    assert hook(kernel, "release", "end", config=CONFIG)[0] == 0
    assert kernel.snapshot() == start


def test_probe_that_binds_nothing_is_caught_and_rolled_back(kernel):
    """vfio-pci's probe fails (no IOMMU): drivers_probe says success, the device has no driver."""
    kernel.fail_probe("vfio-pci")
    start = kernel.snapshot()
    code, _, err = hook(
        kernel,
        "prepare",
        "begin",
        profile="""\
devices: {gpu: "0000:03:00.0", gpu-audio: "0000:03:00.1"}
prepare/begin:
  - modprobe: [vfio_pci]
  - detach: {devices: [gpu, gpu-audio], via: sysfs}
""",
    )
    assert code == 1
    assert (
        "failed at step 2. detach gpu, gpu-audio to vfio-pci via sysfs (/profiles/win10.yaml:4:5)"
        in err
    )
    assert (
        "0000:03:00.0: vfio-pci did not bind: the kernel accepted the probe but the device has no driver"
        in err
    )
    assert "Rolled back, newest first: restore gpu → amdgpu; unload vfio_pci." in err
    assert "Log: /host/log/hook.log" in err
    assert kernel.snapshot() == start
    assert not Path(STATE, "win10.json").exists()


def test_unsupported_bar_size_names_the_supported_ones(kernel):
    start = kernel.snapshot()
    code, _, err = hook(
        kernel,
        "prepare",
        "begin",
        profile="""\
devices: {gpu: "0000:03:00.0"}
prepare/begin:
  - resize_bar: {device: gpu, bar: 2, size: 1GiB}
""",
    )
    assert code == 1
    assert (
        "BAR 2 does not support 1 GiB; supported sizes: 2 MiB, 4 MiB, 8 MiB, 16 MiB, 32 MiB, 64 MiB, "
        "128 MiB, 256 MiB"
    ) in err
    assert kernel.snapshot() == start


def test_failed_resize_rebinds_the_driver(kernel):
    """ENOSPC from the kernel: the device must not be left without its driver."""
    kernel.fail("bus/pci/devices/0000:03:00.0/resource2_resize", "ENOSPC")
    start = kernel.snapshot()
    code, _, err = hook(kernel, "prepare", "begin", config=CONFIG)
    assert code == 1
    assert "No space left on device" in err and "bridge window" in err
    assert kernel.snapshot() == start


def test_explicit_release_steps_replace_the_default(kernel):
    write_profile(
        """\
devices: {gpu: "0000:03:00.0", gpu-audio: "0000:03:00.1"}
prepare/begin:
  - detach: {devices: [gpu, gpu-audio], via: sysfs}
release/end:
  - reattach: {devices: [gpu-audio], via: sysfs}
""",
    )
    kernel.add_driver("vfio-pci")
    code, _, err = hook(kernel, "prepare", "begin")
    assert code == 0, err
    code, _, err = hook(kernel, "release", "end")
    assert code == 0, err
    assert kernel.driver(AUDIO) == "snd_hda_intel" and kernel.override(AUDIO) is None
    assert kernel.driver(GPU) == "vfio-pci"  # the profile's own release left it there
    assert "dropping 1 journal entries" in Path(LOG).read_text()


def test_undo_step_in_release(kernel):
    start = kernel.snapshot()
    write_profile(
        """\
devices: {gpu: "0000:03:00.0", gpu-audio: "0000:03:00.1"}
prepare/begin:
  - modprobe: [vfio_pci]
  - detach: {devices: [gpu, gpu-audio], via: sysfs}
release/end:
  - undo: prepare/begin
""",
    )
    assert hook(kernel, "prepare", "begin")[0] == 0
    assert hook(kernel, "release", "end")[0] == 0
    assert kernel.snapshot() == start


def test_absent_device_fails_cleanly(kernel):
    start = kernel.snapshot()
    code, _, err = hook(
        kernel,
        "prepare",
        "begin",
        profile="""\
devices: {gpu: "0000:0a:00.0"}
prepare/begin:
  - detach: [gpu]
""",
    )
    assert code == 1
    assert "0000:0a:00.0: no such PCI device on this host" in err
    assert "Nothing had been changed, so nothing was rolled back." in err
    assert kernel.snapshot() == start


def test_libvirt_detach_failure_is_reported_and_rolled_back(kernel):
    kernel.fail(f"libvirt detach {AUDIO}", "libvirt")
    start = kernel.snapshot()
    code, _, err = hook(kernel, "prepare", "begin", config=CONFIG)
    assert code == 1
    assert "injected failure" in err
    assert kernel.snapshot() == start


def test_module_with_bound_devices_is_not_unloaded_on_undo(kernel):
    """modprobe -r vfio_pci would silently unbind devices; undo leaves it loaded instead."""
    write_profile(
        """\
devices: {gpu: "0000:03:00.0"}
prepare/begin:
  - modprobe: [vfio_pci]
  - bind: {device: gpu, driver: vfio-pci}
release/end:
  - undo: prepare/begin
""",
    )
    assert hook(kernel, "prepare", "begin")[0] == 0
    # Someone else binds the audio function to vfio-pci while the VM runs.
    with open(f"/host/sys/bus/pci/devices/{AUDIO}/driver_override", "w") as f:
        f.write("vfio-pci")
    with open(f"/host/sys/bus/pci/devices/{AUDIO}/driver/unbind", "w") as f:
        f.write(AUDIO)
    with open("/host/sys/bus/pci/drivers_probe", "w") as f:
        f.write(AUDIO)
    code, _, err = hook(kernel, "release", "end")
    assert code == 1
    assert "vfio_pci" in kernel.modules and kernel.driver(AUDIO) == "vfio-pci"
    assert kernel.driver(GPU) == "amdgpu"
    assert (
        "NOT restored: undo prepare/begin step 1: unload vfio_pci: left loaded: vfio_pci (it still drives "
        "0000:03:00.1)" in err
    )
    assert "passthrough-hook recover win10" in err
