"""What the kernel does around a BAR resize, and other paths the kernel model follows
(passthrough/host/kernel_model.py), on the fake kernel and in the dry run:

- drivers/pci/pci-sysfs.c __resource_resize_store: EBUSY with a driver or SR-IOV VFs; on a
  VGA-class device aperture_remove_conflicting_pci_devices (drivers/video/aperture.c)
  first: firmware framebuffers and vgacon go; every BAR with the same flags is released
  and assigned again.
- drivers/pci/setup-res.c pci_resize_resource / pci_reassign_bridge_resources: ENOENT
  when the bridge window still holds other BARs, ENOSPC when it cannot grow; the old
  size is written back.
- vfio-pci ids= and new_id, EBUSY for drivers/X/bind, vfio-pci variant drivers.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
from pathlib import Path

import pytest
from fakekernel import FakeKernel
from hosts import Bar, GiB, MiB, demo_host
from runs import LOG, command, hook
from tool_trees import host_tree
from tool_trees import write_profile as write_tool_profile

from passthrough.host.kernel_model import parse_resource
from passthrough.host.vga import sysfb_on_any_vga

REPO = Path(__file__).resolve().parent.parent
GPU, AUDIO, HOST_GPU, BRIDGE = "0000:03:00.0", "0000:03:00.1", "0000:04:00.0", "0000:00:03.1"
FB = Path("/host/sys/bus/platform/devices/efi-framebuffer.0")
FB_LINK = Path("/host/sys/bus/platform/drivers/efi-framebuffer/efi-framebuffer.0")
SEED = """\
devices: {gpu: "0000:03:00.0", gpu-audio: "0000:03:00.1"}
prepare/begin:
  - modprobe: [vfio_pci]
  - detach: {devices: [gpu, gpu-audio], via: sysfs}
  - resize_bar: {device: gpu, bar: %(bar)d, size: %(size)s}
"""
REMOVED = "kernel removes efi-framebuffer.0 (host console) — it cannot come back until reboot"


def spec(kernel: str = "6.6.9-200.fc39.x86_64", **functions):
    """The demo host on another kernel, with some functions changed (address -> fields)."""
    base = demo_host()
    changed = [
        dataclasses.replace(fn, **functions[fn.address]) if fn.address in functions else fn
        for fn in base.functions
    ]
    return dataclasses.replace(base, kernel=kernel, functions=changed)


def make(fs, host_spec) -> FakeKernel:
    fs.add_real_directory(str(REPO / "config"), read_only=True)
    fs.add_real_directory(str(REPO / "passthrough"), read_only=True)
    return FakeKernel(fs, host_spec)


def bars(address: str) -> list[tuple[int, int, int]]:
    return parse_resource(Path(f"/host/sys/bus/pci/devices/{address}/resource").read_text())


def size(address: str, bar: int) -> int:
    start, end, _flags = bars(address)[bar]
    return end - start + 1


# --- which kernels remove another GPU's console -------------------------------------------


@pytest.mark.parametrize(
    "release, version, expected",
    [
        ("6.1.30", "", True),
        ("6.1.47", "", False),
        ("6.3.13-arch1-1", "", True),
        ("6.5.0-14-generic", "", False),
        ("6.6.9-200.fc39.x86_64", "", False),
        ("6.1.0-13-amd64", "", None),  # Debian's ABI number hides the upstream patch level
        ("6.1.0-13-amd64", "... #1 SMP PREEMPT_DYNAMIC Debian 6.1.55-1 (2023-09-29)", False),
        ("6.1.0-10-amd64", "... #1 SMP PREEMPT_DYNAMIC Debian 6.1.38-4 (2023-08-08)", True),
    ],
)
def test_kernels_without_5ae3716cfdcd_remove_the_firmware_framebuffer_for_any_vga(
    release, version, expected
):
    assert sysfb_on_any_vga(release, version) is expected


# --- firmware framebuffers and vgacon ------------------------------------------------------


def test_resize_of_a_second_gpu_on_an_affected_kernel_takes_the_hosts_console(fs):
    """The RX 6750 is not the default VGA device; kernel 6.1.30 still unregisters the
    efi-framebuffer the host's A380 console is on. The dry run says so; the fake kernel
    does it; it stays gone after release."""
    kernel = make(fs, spec("6.1.30"))
    profile = SEED % {"bar": 2, "size": "8MiB"}
    code, out, _ = hook(kernel, "prepare", "begin", profile=profile, dry_run=True)
    assert code == 0, out
    assert REMOVED in out
    assert FB.exists()  # a dry run changes nothing
    code, _, err = hook(kernel, "prepare", "begin", profile=profile)
    assert code == 0, err
    assert not os.path.lexists(FB) and not os.path.lexists(FB_LINK)
    assert REMOVED in Path(LOG).read_text()
    code, _, err = hook(kernel, "release", "end")
    assert code == 0, err
    assert not os.path.lexists(FB)  # sysfb does not register it again
    assert size(GPU, 2) == 256 * MiB


def test_resize_of_a_second_gpu_on_a_fixed_kernel_leaves_the_console(fs):
    kernel = make(fs, spec("6.6.9-200.fc39.x86_64"))
    code, out, _ = hook(
        kernel, "prepare", "begin", profile=SEED % {"bar": 2, "size": "8MiB"}, dry_run=True
    )
    assert code == 0, out
    assert "efi-framebuffer" not in out
    code, _, err = hook(kernel, "prepare", "begin")
    assert code == 0, err
    assert FB.exists()


def test_when_the_kernel_version_does_not_tell_the_plan_says_may(fs):
    kernel = make(fs, spec("6.1.0-9-amd64"))
    code, out, _ = hook(
        kernel, "prepare", "begin", profile=SEED % {"bar": 2, "size": "8MiB"}, dry_run=True
    )
    assert code == 0, out
    assert "kernel may remove efi-framebuffer.0 (host console; kernels before 6.1.47" in out


def test_resize_of_the_default_vga_device_removes_framebuffer_and_vgacon(fs):
    """A BIOS boot: vgacon ("(S) VGA+") holds the consoles on the default VGA device. The
    resize removes efi-framebuffer.0 and hands the consoles to a dummy console it registers,
    even when the size is then refused (the removal comes first)."""
    system = dataclasses.replace(demo_host().system, vtconsoles=(("(S) VGA+", True),))
    kernel = make(fs, dataclasses.replace(spec(), system=system))
    kernel.store.set_driver_link(HOST_GPU, None)
    with pytest.raises(OSError) as refused:
        kernel.model.write(f"bus/pci/devices/{HOST_GPU}/resource2_resize", "2")  # 4 MiB: no
    assert refused.value.errno == errno.EINVAL
    assert not os.path.lexists(FB)
    consoles = Path("/host/sys/class/vtconsole")
    assert (consoles / "vtcon0/bind").read_text().strip() == "0"
    assert (consoles / "vtcon1/name").read_text().strip() == "(S) dummy device"
    assert (consoles / "vtcon1/bind").read_text().strip() == "1"


def test_check_warns_when_a_resize_takes_the_console_of_another_gpu(tmp_path):
    profile = SEED % {"bar": 2, "size": "8MiB"}
    affected = host_tree(tmp_path, "demo", "old", kernel="6.1.30")
    fixed = host_tree(tmp_path, "demo", "new", kernel="6.6.9-200.fc39.x86_64")
    warnings = {}
    for name, root in (("old", affected), ("new", fixed)):
        profiles = tmp_path / f"profiles-{name}"
        write_tool_profile(profiles, "win10", profile)
        code, out, err = command(
            "check", "--root", root, "--config-dir", profiles, "--json", "win10"
        )
        assert err == "", err
        warnings[name] = [
            f
            for f in json.loads(out)["findings"]
            if f["severity"] == "warning" and "host's console" in f["message"]
        ]
    assert warnings["new"] == []
    (finding,) = warnings["old"]
    assert "efi-framebuffer.0, the host's console on 0000:04:00.0" in finding["message"]
    assert "kernel 6.1.30 does so on a resize of any VGA-class device" in finding["message"]
    assert "6.1.47" in finding["fix"]


# --- BAR reassignment ----------------------------------------------------------------------

WINDOW_BASE = 0x7800000000


def windowed(**extra):
    """BAR 0 (8 GiB) and BAR 2 (256 MiB), same flags, in bridge 00:03.1's prefetchable
    window of 8 GiB + 256 MiB; the GPU's audio function's BAR is not prefetchable."""
    resizable0 = tuple(1 << n for n in range(8, 15))
    resizable2 = tuple(1 << n for n in range(1, 9))
    functions = {
        BRIDGE: {"bars": {15: Bar(8 * GiB + 256 * MiB, WINDOW_BASE, flags=0x00102201)}},
        GPU: {
            "bars": {
                0: Bar(8 * GiB, WINDOW_BASE, resizable=resizable0),
                2: Bar(256 * MiB, WINDOW_BASE + 8 * GiB, resizable=resizable2),
            }
        },
    }
    for address, fields in extra.items():
        functions.setdefault(address.replace("_", ":"), {}).update(fields)
    return spec(**functions)


def test_resize_releases_every_bar_with_the_same_flags_and_assigns_them_again(fs):
    """Shrinking BAR 0 repacks both BARs in the window, largest first: BAR 2 moves too."""
    kernel = make(fs, windowed())
    code, out, _ = hook(kernel, "prepare", "begin", profile=SEED % {"bar": 0, "size": "256MiB"})
    assert code == 0, out
    (start0, end0, _), (start2, end2, _) = bars(GPU)[0], bars(GPU)[2]
    assert (start0, end0 - start0 + 1) == (WINDOW_BASE, 256 * MiB)
    assert (start2, end2 - start2 + 1) == (WINDOW_BASE + 256 * MiB, 256 * MiB)  # moved
    code, _, err = hook(kernel, "release", "end")
    assert code == 0, err
    assert size(GPU, 0) == 8 * GiB and size(GPU, 2) == 256 * MiB


def test_a_bigger_bar_grows_the_bridge_window_when_the_parent_has_room(fs):
    kernel = make(fs, windowed())
    code, _, err = hook(kernel, "prepare", "begin", profile=SEED % {"bar": 0, "size": "16GiB"})
    assert code == 0, err
    assert size(GPU, 0) == 16 * GiB
    start, end, _ = bars(BRIDGE)[15]
    assert (start, end - start + 1) == (WINDOW_BASE, 16 * GiB + 256 * MiB)


def test_enospc_when_the_window_cannot_grow_keeps_the_old_size_and_says_why(fs):
    kernel = make(fs, windowed())
    kernel.window_room[BRIDGE] = 12 * GiB
    before = kernel.snapshot()
    code, _, err = hook(kernel, "prepare", "begin", profile=SEED % {"bar": 0, "size": "16GiB"})
    assert code == 1
    assert "resource0_resize failed: No space left on device" in err
    assert "the bridge window cannot grow to that size" in err
    assert "Above 4G decoding" in err
    assert kernel.snapshot() == before  # old size, same places, drivers back


def test_enoent_when_another_device_has_bars_in_the_window(fs):
    """The audio function's prefetchable BAR keeps the bridge window in use: the kernel
    cannot release it, and fails the resize with ENOENT."""
    audio_bar = {0: Bar(16 * 1024, WINDOW_BASE + 8 * GiB + 128 * MiB, flags=0x0014220C)}
    kernel = make(fs, windowed(**{AUDIO: {"bars": audio_bar}}))
    before = kernel.snapshot()
    code, _, err = hook(kernel, "prepare", "begin", profile=SEED % {"bar": 2, "size": "8MiB"})
    assert code == 1
    assert "resource2_resize failed: No such file or directory" in err
    assert "the bridge window above the device still holds other BARs" in err
    assert kernel.snapshot() == before


def test_ebusy_while_sr_iov_vfs_are_enabled(fs):
    kernel = make(fs, spec(**{GPU: {"sriov_numvfs": 2}}))
    code, _, err = hook(kernel, "prepare", "begin", profile=SEED % {"bar": 2, "size": "8MiB"})
    assert code == 1
    assert "resource2_resize failed: Device or resource busy" in err
    assert "sriov_numvfs" in err


# --- binding ------------------------------------------------------------------------------


def test_bind_of_a_bound_device_is_ebusy_and_of_a_driver_that_does_not_match_enodev(fs):
    kernel = make(fs, spec())
    with pytest.raises(OSError) as bound:
        kernel.model.write("bus/pci/drivers/amdgpu/bind", GPU)
    assert bound.value.errno == errno.EBUSY  # matches, but amdgpu has it already (5.13+)
    kernel.add_driver("vfio-pci")
    kernel.store.set_driver_link(GPU, None)
    with pytest.raises(OSError) as unmatched:
        kernel.model.write("bus/pci/drivers/vfio-pci/bind", GPU)
    assert unmatched.value.errno == errno.ENODEV  # vfio-pci has no id table
    kernel.model.write(f"bus/pci/devices/{GPU}/driver_override", "vfio-pci")
    kernel.model.write("bus/pci/drivers/vfio-pci/bind", GPU)
    assert kernel.driver(GPU) == "vfio-pci"


def test_new_id_takes_every_unbound_matching_device_and_remove_id_unbinds_none(fs):
    kernel = make(fs, spec())
    kernel.add_driver("vfio-pci")
    kernel.store.set_driver_link(AUDIO, None)
    kernel.model.write("bus/pci/drivers/vfio-pci/new_id", "1002 ab28")
    assert kernel.driver(AUDIO) == "vfio-pci"
    assert kernel.driver(GPU) == "amdgpu"  # bound devices are left alone
    kernel.model.write("bus/pci/drivers/vfio-pci/remove_id", "1002 ab28")
    assert kernel.driver(AUDIO) == "vfio-pci"
    with pytest.raises(OSError) as gone:
        kernel.model.write("bus/pci/drivers/vfio-pci/remove_id", "1002 ab28")
    assert gone.value.errno == errno.ENODEV


# --- vfio-pci ids= ------------------------------------------------------------------------

TWIN = "0000:05:00.0"  # a second RX 6750, the host's


def twin_gpus(vfio_at_boot: bool):
    """Two identical RX 6750 cards and `options vfio-pci ids=1002:73df` in modprobe.d;
    the second card (05:00.0) stays with the host."""
    base = spec()
    twin = dataclasses.replace(
        next(f for f in base.functions if f.address == GPU), address=TWIN, group=16, bridge=None
    )
    drivers = [*base.drivers, "vfio-pci"] if vfio_at_boot else base.drivers
    modules = [*base.modules, "vfio_pci"] if vfio_at_boot else base.modules
    return dataclasses.replace(
        base,
        functions=[*base.functions, twin],
        drivers=drivers,
        modules=modules,
        files={"etc/modprobe.d/vfio.conf": "# tutorial\noptions vfio-pci ids=1002:73df,1002:ab28"},
    )


def test_vfio_pci_loaded_with_ids_takes_the_hosts_identical_card_when_it_is_unbound(fs):
    kernel = make(fs, twin_gpus(vfio_at_boot=False))
    kernel.store.set_driver_link(TWIN, None)  # e.g. the host unbound it for a reset
    profile = 'devices: {gpu: "0000:03:00.0"}\nprepare/begin:\n  - modprobe: [vfio_pci]\n'
    code, out, _ = hook(kernel, "prepare", "begin", profile=profile, dry_run=True)
    assert code == 0, out
    assert f"vfio-pci takes {TWIN}: unbound and listed in ids=1002:73df" in out
    assert "/etc/modprobe.d/vfio.conf:2" in out
    code, _, err = hook(kernel, "prepare", "begin")
    assert code == 0, err
    assert kernel.driver(TWIN) == "vfio-pci"


def test_with_vfio_pci_loaded_at_boot_a_reattach_lands_on_vfio_pci(fs):
    """drivers_probe tries drivers in registration order: vfio-pci, loaded at boot with
    ids=, wins over amdgpu. The reattach fails and says which driver took the device."""
    kernel = make(fs, twin_gpus(vfio_at_boot=True))
    profile = 'devices: {gpu: "0000:05:00.0"}\nprepare/begin:\n  - reattach: {devices: [gpu], via: sysfs}\n'
    kernel.store.set_driver_link(TWIN, None)
    code, out, _ = hook(kernel, "prepare", "begin", profile=profile, dry_run=True)
    assert "no host driver took the device (it is on vfio-pci)" in out
    code, _, err = hook(kernel, "prepare", "begin")
    assert code == 1
    assert "no host driver took the device (it is on vfio-pci)" in err


def test_check_warns_when_vfio_pci_ids_match_a_device_the_host_keeps(tmp_path):
    root = tmp_path / "twins"
    from hosts import write_tree

    write_tree(twin_gpus(vfio_at_boot=False), root)
    profiles = tmp_path / "profiles"
    write_tool_profile(profiles, "win10", SEED % {"bar": 2, "size": "8MiB"})
    code, out, err = command("check", "--root", root, "--config-dir", profiles, "--json", "win10")
    assert err == "", err
    found = [f for f in json.loads(out)["findings"] if "ids=" in f["message"]]
    assert [f["severity"] for f in found] == ["warning"]
    assert (
        f"vfio-pci ids=1002:73df (/etc/modprobe.d/vfio.conf:2) also matches {TWIN}"
        in found[0]["message"]
    )


# --- vfio-pci variant drivers -------------------------------------------------------------


def test_a_variant_driver_counts_as_vfio_pci(fs):
    """libvirt's detach picks a vfio-pci variant driver when one matches (here
    nvgrace_gpu_vfio_pci): the detach accepts it, a reattach treats it as no host driver."""
    kernel = make(fs, spec())
    kernel.add_driver("nvgrace_gpu_vfio_pci")
    kernel.libvirt_variant[GPU] = "nvgrace_gpu_vfio_pci"
    profile = 'devices: {gpu: "0000:03:00.0"}\nprepare/begin:\n  - modprobe: [vfio_pci]\n  - detach: [gpu]\n'
    code, _, err = hook(kernel, "prepare", "begin", profile=profile)
    assert code == 0, err
    assert kernel.driver(GPU) == "nvgrace_gpu_vfio_pci"
    code, _, err = hook(kernel, "release", "end")
    assert code == 0, err
    assert kernel.driver(GPU) == "amdgpu"


def test_check_accepts_a_group_member_on_a_variant_driver(tmp_path):
    root = host_tree(tmp_path, "demo")
    link = root / f"sys/bus/pci/devices/{AUDIO}/driver"
    variant = root / "sys/bus/pci/drivers/mlx5_vfio_pci"
    variant.mkdir()
    link.unlink()
    os.symlink(os.path.relpath(variant, os.path.realpath(link.parent)), link)
    profiles = tmp_path / "profiles"
    write_tool_profile(
        profiles,
        "win10",
        'devices: {gpu: "0000:03:00.0"}\nprepare/begin:\n  - detach: [gpu]\n',
    )
    code, out, err = command("check", "--root", root, "--config-dir", profiles, "--json", "win10")
    groups = [f for f in json.loads(out)["findings"] if f["check"] == "groups"]
    assert groups and all(f["severity"] == "ok" for f in groups), groups
