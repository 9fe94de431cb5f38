"""modprobe: {remove: [...]}: unloading a host driver stack before the detach, on the fake
kernel (module users and references as /proc/modules shows them, drivers unregistered on
unload, driverless devices probed again on load)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakekernel import FakeKernel
from hosts import Bar, Function, HostSpec
from runs import LOG, STATE, hook
from system_facts import Process, System

REPO = Path(__file__).resolve().parent.parent
MiB = 1 << 20
GPU, AUDIO, IGPU = "0000:01:00.0", "0000:01:00.1", "0000:00:02.0"
STACK = ["nvidia_drm", "nvidia_modeset", "nvidia_uvm", "nvidia"]


def nvidia_host(
    second_gpu: bool = False, persistenced: bool = False, xorg: bool = False
) -> HostSpec:
    """An Intel iGPU for the host's display and an RTX 3070 on the proprietary driver (the
    stack nvidia_drm → nvidia_modeset → nvidia, nvidia_uvm → nvidia); optionally a second
    NVIDIA card that stays with the host."""
    fns = [
        Function(
            IGPU,
            "0x8086",
            "0x4680",
            "0x030000",
            "i915",
            0,
            boot_vga=True,
            bars={0: Bar(16 * MiB, 0x6000000000, flags=0x00140204)},
        ),
        Function(
            GPU,
            "0x10de",
            "0x2484",
            "0x030000",
            "nvidia",
            12,
            bars={0: Bar(16 * MiB, 0xFB000000, flags=0x00040200)},
            boot_vga=False,
        ),
        Function(
            AUDIO,
            "0x10de",
            "0x228b",
            "0x040300",
            "snd_hda_intel",
            12,
            bars={0: Bar(16 * 1024, 0xFC080000, flags=0x00040200)},
        ),
    ]
    if second_gpu:
        fns.append(
            Function(
                "0000:02:00.0",
                "0x10de",
                "0x1c82",
                "0x030000",
                "nvidia",
                13,
                bars={0: Bar(16 * MiB, 0xFA000000, flags=0x00040200)},
            )
        )
    processes = (Process(1, "systemd", cgroup="/init.scope"),)
    if xorg:
        processes += (Process(1400, "Xorg", fds={5: "/dev/nvidia0", 6: "/dev/nvidiactl"}),)
    return HostSpec(
        functions=fns,
        modules=["i915", "snd_hda_intel", "drm", "drm_kms_helper", *STACK],
        drivers=["i915", "nvidia", "snd_hda_intel"],
        module_deps={
            "i915": ("drm_kms_helper", "drm"),
            "drm_kms_helper": ("drm",),
            "nvidia_drm": ("nvidia_modeset", "drm_kms_helper", "drm"),
            "nvidia_modeset": ("nvidia",),
            "nvidia_uvm": ("nvidia",),
        },
        module_refs={"nvidia": 1} if persistenced else {},
        system=System(processes=processes),
    )


PROFILE = f"""\
devices: {{gpu: "{GPU}", gpu-audio: "{AUDIO}"}}
prepare/begin:
  - modprobe: {{remove: [{", ".join(STACK)}]}}
  - modprobe: [vfio_pci]
  - detach: {{devices: [gpu, gpu-audio], via: sysfs}}
"""


@pytest.fixture
def make(fs):
    fs.add_real_directory(str(REPO / "passthrough"), read_only=True)
    return lambda **kw: FakeKernel(fs, nvidia_host(**kw))


def test_the_stack_is_unloaded_top_first_and_the_devices_go_to_vfio(make):
    kernel = make()
    start = kernel.snapshot()
    code, out, err = hook(kernel, "prepare", "begin", profile=PROFILE)
    assert code == 0, err
    assert kernel.driver(GPU) == "vfio-pci" and kernel.driver(AUDIO) == "vfio-pci"
    assert not {"nvidia", "nvidia_drm", "nvidia_modeset", "nvidia_uvm"} & kernel.modules
    assert {"drm", "drm_kms_helper", "i915"} <= kernel.modules  # the iGPU still uses them
    assert kernel.driver(IGPU) == "i915"
    log = Path(LOG).read_text()
    assert f"check {GPU} driver   [nvidia → no driver (gpu ({GPU}))]" in log
    journal = json.loads(Path(STATE, "win10.json").read_text())
    record = journal["entries"][0]["record"]
    assert record["unloaded"] == STACK
    assert [d["address"] for d in record["devices"]] == [GPU]

    code, _, err = hook(kernel, "release", "end")
    assert code == 0, err
    assert kernel.snapshot() == start  # nvidia loaded again, the card probed by it, vfio gone


def test_modprobe_r_takes_unused_dependencies_along_and_undo_loads_them_back(make, fs):
    kernel = make()
    kernel.modules.discard("i915")  # nothing else uses drm now: the single-GPU case
    kernel.store.set_driver_link(IGPU, None)
    kernel.write_proc_modules()
    start = kernel.snapshot()
    code, _, err = hook(kernel, "prepare", "begin", profile=PROFILE)
    assert code == 0, err
    assert not {"drm", "drm_kms_helper"} & kernel.modules
    log = Path(LOG).read_text()
    assert "modprobe -r removes drm_kms_helper too   [drm_kms_helper: unused → not loaded]" in log
    assert hook(kernel, "release", "end")[0] == 0
    assert kernel.snapshot() == start


def test_the_dry_run_shows_each_unload_and_the_devices_it_leaves_driverless(make):
    kernel = make()
    code, out, err = hook(kernel, "prepare", "begin", profile=PROFILE, dry_run=True)
    assert code == 0, out + err
    assert "modprobe -r nvidia_drm   [nvidia_drm: loaded → not loaded]" in out
    assert "modprobe -r nvidia_uvm   [nvidia_uvm: loaded → not loaded]" in out
    # kmod removes the dependencies nothing else uses: nvidia goes with nvidia_uvm.
    assert "modprobe -r removes nvidia_modeset too   [nvidia_modeset: unused → not loaded]" in out
    assert "modprobe -r removes nvidia too   [nvidia: unused → not loaded]" in out
    assert "modprobe -r nvidia   [already removed with the modules before it]" in out
    assert f"check {GPU} driver   [nvidia → no driver (gpu ({GPU}))]" in out
    # The detach then finds the card without a driver and binds vfio-pci.
    assert f"check {GPU} driver   [no driver → vfio-pci]" in out
    assert kernel.driver(GPU) == "nvidia"  # nothing changed


def test_a_module_that_drives_a_device_outside_the_profile_is_refused_by_name(make):
    kernel = make(second_gpu=True)
    start = kernel.snapshot()
    code, _, err = hook(kernel, "prepare", "begin", profile=PROFILE)
    assert code == 1
    assert (
        "module nvidia also drives 0000:02:00.0 (VGA compatible controller, 10de:1c82), "
        "which is not in this profile's devices" in err
    )
    # Its users were unloaded first; the rollback loaded them again.
    assert kernel.snapshot() == start
    code, out, _ = hook(kernel, "prepare", "begin", profile=PROFILE, dry_run=True)
    assert code == 1 and "module nvidia also drives 0000:02:00.0" in out


def test_a_user_left_out_of_the_list_is_named_with_the_order_to_use(make):
    kernel = make()
    start = kernel.snapshot()
    profile = PROFILE.replace(", ".join(STACK), "nvidia_drm, nvidia")
    code, _, err = hook(kernel, "prepare", "begin", profile=profile)
    assert code == 1
    assert "module nvidia is used by nvidia_uvm, which is still loaded" in err
    assert "remove: [nvidia_uvm, nvidia]" in err
    assert kernel.snapshot() == start


def test_a_process_with_the_card_open_is_named_before_anything_is_unloaded(make):
    kernel = make(xorg=True)
    start = kernel.snapshot()
    code, _, err = hook(kernel, "prepare", "begin", profile=PROFILE)
    assert code == 1
    assert f"Xorg (pid 1400) holds /dev/nvidia0 of {GPU}" in err
    assert kernel.snapshot() == start


def test_a_reference_held_elsewhere_fails_with_what_to_stop(make):
    kernel = make(persistenced=True)  # nvidia-persistenced holds /dev/nvidiactl
    start = kernel.snapshot()
    code, _, err = hook(kernel, "prepare", "begin", profile=PROFILE)
    assert code == 1
    assert "modprobe: FATAL: Module nvidia is in use. (its reference count is 1)" in err
    assert "nvidia-persistenced" in err
    assert kernel.snapshot() == start


def test_undo_binds_a_device_the_reload_did_not_probe(make):
    kernel = make()
    start = kernel.snapshot()
    profile = f'devices: {{gpu: "{GPU}"}}\nprepare/begin:\n  - modprobe: {{remove: [{", ".join(STACK)}]}}\n'
    assert hook(kernel, "prepare", "begin", profile=profile)[0] == 0
    assert kernel.driver(GPU) is None
    # Something set an override meanwhile: the reloaded nvidia does not probe the card.
    Path(f"/host/sys/bus/pci/devices/{GPU}/driver_override").write_text("pci-stub\n")
    code, _, err = hook(kernel, "release", "end")
    assert code == 0, err
    assert kernel.snapshot() == start
    assert f"write nvidia > /sys/bus/pci/devices/{GPU}/driver_override" in Path(LOG).read_text()


def test_a_device_that_never_comes_back_keeps_the_step_journaled(make):
    kernel = make()
    profile = f'devices: {{gpu: "{GPU}"}}\nprepare/begin:\n  - modprobe: {{remove: [{", ".join(STACK)}]}}\n'
    assert hook(kernel, "prepare", "begin", profile=profile)[0] == 0
    kernel.fail_probe("nvidia", GPU)  # the driver's probe fails (firmware, a wedged card)
    code, _, err = hook(kernel, "release", "end")
    assert code == 1
    assert "nvidia did not bind: the kernel accepted the probe but the device has no driver" in err
    assert Path(STATE, "win10.json").exists()
