"""Never strand a GPU: ownership, crash recovery, idempotency, the host guard, holders and
timeouts, root-owned configuration, internal errors. (The state dir's lock is StateDir's:
tests/test_state.py.)"""

import json
import os
from pathlib import Path

import hostdeps
import pytest
from fakekernel import Killed
from hosts import SEED_PROFILE
from runs import LOG, STATE, command, hook, recover
from test_json_output import one_document

from passthrough.errors import HostError

GPU, AUDIO, NVME, NIC = "0000:03:00.0", "0000:03:00.1", "0000:01:00.0", "0000:02:00.0"
HOST = Path("/host")


def profile(name: str, text: str, directory: str = "/profiles") -> None:
    path = Path(directory) / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, 0o644)
    os.chmod(path.parent, 0o755)


@pytest.fixture
def seed(kernel):
    profile("win10", SEED_PROFILE)
    return kernel


# --- ownership -----------------------------------------------------------------------------


def test_a_device_held_by_another_domain_is_refused_by_name(seed):
    profile("win11", SEED_PROFILE)
    assert hook(seed, "prepare", "begin", domain="win11")[0] == 0
    held = seed.snapshot()
    result = hook(seed, "prepare", "begin")
    assert result.code == 1
    assert (
        "0000:03:00.0 is held by domain win11 since " in result.text
        and "stop win11 first" in result.text
    )
    assert seed.snapshot() == held
    assert hook(seed, "release", "end", domain="win11")[0] == 0
    assert hook(seed, "prepare", "begin")[0] == 0


# --- crash safety ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        "modprobe vfio_iommu_type1",  # between two modules
        "bus/pci/devices/0000:03:00.1/driver_override",  # libvirt half way through the second device
        "bus/pci/devices/0000:03:00.0/resource2_resize",  # the GPU unbound for the resize
    ],
)
@pytest.mark.parametrize("then", ["recover", "release"])
def test_killed_mid_prepare_is_undone_by_recover_or_release(seed, fault, then):
    start = seed.snapshot()
    seed.fail(fault, "kill")
    with pytest.raises(Killed):
        hook(seed, "prepare", "begin")
    journal = json.loads(Path(STATE, "win10.json").read_text())
    assert journal["entries"][-1]["status"] == "running"
    assert seed.snapshot() != start
    result = recover(seed) if then == "recover" else hook(seed, "release", "end")
    assert result.code == 0, result.text
    assert seed.snapshot() == start
    assert not Path(STATE, "win10.json").exists()


def test_recover_with_nothing_journaled(seed):
    os.makedirs(STATE, exist_ok=True)
    result = recover(seed)
    assert result.code == 0 and "nothing to recover" in result.text


def test_recover_from_a_state_dir_that_does_not_exist_is_an_error(seed):
    result = recover(seed)
    assert result.code == 2 and f"--state-dir {STATE}: no such directory" in result.text


def test_an_undo_that_fails_is_reported_and_kept_for_the_next_try(seed):
    start = seed.snapshot()
    assert hook(seed, "prepare", "begin")[0] == 0
    seed.fail("bus/pci/devices/0000:03:00.0/resource2_resize", "EBUSY")
    result = hook(seed, "release", "end")
    assert result.code == 1
    assert (
        "NOT restored: undo prepare/begin step 3: resize BAR 2 of gpu back to 256 MiB"
        in result.text
    )
    assert "passthrough-hook recover win10" in result.text
    # best effort: the other steps were still undone
    assert seed.driver(AUDIO) == "snd_hda_intel"
    assert recover(seed)[0] == 0
    assert seed.snapshot() == start


# --- idempotency ----------------------------------------------------------------------------


def test_release_after_a_failed_prepare_changes_nothing(seed):
    start = seed.snapshot()
    seed.fail("bus/pci/devices/0000:03:00.0/resource2_resize", "EINVAL")
    assert hook(seed, "prepare", "begin")[0] == 1
    assert seed.snapshot() == start
    writes = len(seed.writes)
    for _ in range(2):
        result = hook(seed, "release", "end")
        assert result.code == 0, result.text
    assert len(seed.writes) == writes and seed.snapshot() == start


def test_a_device_already_on_vfio_is_a_recorded_no_op(seed):
    profile(
        "win10",
        'devices: {gpu: "0000:03:00.0"}\nprepare/begin:\n  - modprobe: [vfio_pci]\n'
        "  - bind: {device: gpu, driver: vfio-pci}\n  - detach: {devices: [gpu], via: sysfs}\n",
    )
    assert hook(seed, "prepare", "begin")[0] == 0
    entries = json.loads(Path(STATE, "win10.json").read_text())["entries"]
    assert entries[2]["record"]["devices"][0]["changed"] is False
    assert hook(seed, "release", "end")[0] == 0
    assert seed.driver(GPU) == "amdgpu"


# --- host guard -----------------------------------------------------------------------------


def test_the_disk_the_root_filesystem_is_on_is_refused(kernel):
    hostdeps.add_disk(HOST, NVME, "nvme0n1", ["nvme0n1p1", "nvme0n1p2"])
    hostdeps.add_mounts(
        HOST, [("/dev/nvme0n1p1", "/boot/efi"), ("/dev/mapper/root", "/")], swaps=["/dev/nvme0n1p3"]
    )
    hostdeps.add_dm(HOST, "dm-0", "root", ["nvme0n1p2"])
    profile(
        "win10",
        'devices: {gpu: "0000:01:00.0"}\nprepare/begin:\n  - detach: {devices: [gpu], via: sysfs}\n',
    )
    start = kernel.snapshot()
    result = hook(kernel, "prepare", "begin")
    assert result.code == 1
    assert (
        "0000:01:00.0: refusing to detach gpu (0000:01:00.0) it: the host depends on it now "
        "(/boot/efi is mounted from /dev/nvme0n1p1; / is mounted from /dev/mapper/root)"
    ) in result.text.replace("detach gpu (0000:01:00.0) it", "detach gpu (0000:01:00.0) it")
    assert kernel.snapshot() == start


def test_block_devices_come_from_the_kernels_list_and_match_a_walk(kernel):
    """guard.block_devices reads /sys/class/block (one link per block device); the walk of
    the function's subtree it replaced finds the same disks, and a tree without that list
    (a snapshot) is still walked."""
    from passthrough.guard import _walked_block_devices, block_devices
    from passthrough.host import make_host

    hostdeps.add_disk(HOST, NVME, "nvme0n1", ["nvme0n1p1", "nvme0n1p2"])
    host = make_host(str(HOST))
    listed = block_devices(host, NVME)
    assert sorted(listed) == sorted(_walked_block_devices(host, NVME))
    assert sorted(listed) == ["nvme0n1", "nvme0n1p1", "nvme0n1p2"]
    assert block_devices(host, GPU) == []
    # A USB disk sits deeper than the walk went (usb2/2-1/2-1:1.0/host6/target6:0:0/...).
    deep = "usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0/block"
    hostdeps.add_disk(HOST, NIC, "sdb", ["sdb1"], path=deep)
    assert sorted(block_devices(host, NIC)) == ["sdb", "sdb1"]
    for name in os.listdir(HOST / "sys/class/block"):
        os.unlink(HOST / "sys/class/block" / name)
    os.rmdir(HOST / "sys/class/block")
    assert sorted(block_devices(host, NVME)) == ["nvme0n1", "nvme0n1p1", "nvme0n1p2"]


def test_an_interface_that_is_up_is_refused_unless_forced(kernel):
    hostdeps.add_interface(HOST, NIC, "enp2s0", up=True)
    kernel.add_driver("vfio-pci")
    profile(
        "win10",
        'devices: {nic: "0000:02:00.0"}\nprepare/begin:\n  - detach: {devices: [nic], via: sysfs}\n',
    )
    result = hook(kernel, "prepare", "begin")
    assert (
        result.code == 1
        and "network interface enp2s0 is up" in result.text
        and "force: true" in result.text
    )
    profile(
        "win10",
        'devices: {nic: "0000:02:00.0"}\nprepare/begin:\n  - detach: {devices: [nic], via: sysfs}\n'
        "    force: true\n",
    )
    result = hook(kernel, "prepare", "begin")
    assert result.code == 0, result.text
    assert kernel.driver(NIC) == "vfio-pci"


# --- holders and timeouts -------------------------------------------------------------------


def test_a_gpu_held_by_a_process_is_not_unbound(seed):
    hostdeps.add_drm(HOST, GPU, "card1", "renderD128")
    hostdeps.add_process(HOST, 1234, "Xorg", files=["/dev/null", "/dev/dri/card1"])
    hostdeps.add_process(
        HOST, 2000, "vkcube", maps=["/sys/devices/pci0000:00/0000:00:03.1/0000:03:00.0/resource0"]
    )
    profile(
        "win10",
        'devices: {gpu: "0000:03:00.0"}\nprepare/begin:\n  - modprobe: [vfio_pci]\n'
        "  - detach: {devices: [gpu], via: sysfs}\n",
    )
    start = seed.snapshot()
    result = hook(seed, "prepare", "begin")
    assert result.code == 1
    assert (
        "cannot unbind while in use: Xorg (pid 1234) holds /dev/dri/card1 of 0000:03:00.0; vkcube (pid 2000) "
        "holds /sys/devices/pci0000:00/0000:00:03.1/0000:03:00.0/resource0 of 0000:03:00.0"
    ) in result.text
    assert (
        "Rolled back, newest first: unload vfio_pci." in result.text
    )  # the detach itself changed nothing
    assert seed.snapshot() == start


def test_the_holder_scan_reads_no_fds_of_kernel_threads_but_those_it_cannot_tell(seed):
    """A process without any memory map is a kernel thread (or a zombie): it holds no files,
    so its fd directory is not read. One whose maps cannot be read is scanned in full."""
    from passthrough.holders import find_holders
    from passthrough.host import make_host

    hostdeps.add_drm(HOST, GPU, "card1")
    hostdeps.add_process(HOST, 1234, "Xorg", files=["/dev/dri/card1"])
    hostdeps.add_process(HOST, 1300, "unknown", files=["/dev/dri/card1"])
    os.unlink(HOST / "proc/1300/maps")  # unreadable: exited, or another kernel's /proc
    hostdeps.add_process(HOST, 2, "kthreadd")
    (HOST / "proc/2/maps").write_text("")
    host = make_host(str(HOST))
    listed: list[str] = []
    listdir = host.procfs.listdir
    host.procfs.listdir = lambda rel="": listed.append(rel) or listdir(rel)  # type: ignore[method-assign]
    found = {(h.pid, h.command) for h in find_holders(host, GPU)}
    assert found == {(1234, "Xorg"), (1300, "unknown")}
    assert "2/fd" not in listed and "1234/fd" in listed and "1300/fd" in listed


def test_a_sound_device_in_use_is_only_noted(seed):
    hostdeps.add_sound(HOST, AUDIO, 1, "controlC1", "pcmC1D3p")
    hostdeps.add_process(HOST, 900, "pipewire", files=["/dev/snd/controlC1"])
    result = hook(seed, "prepare", "begin")
    assert result.code == 0, result.text
    assert "pipewire (pid 900) holds /dev/snd/controlC1 of 0000:03:00.1" in Path(LOG).read_text()


def test_a_write_stuck_in_the_kernel_fails_the_step_and_the_rest_is_rolled_back(seed):
    """The audio function's unbind never returns (a process holds it, as QEMU would): the
    hook gives up after the step's timeout, leaves the helper in the kernel, restores the
    GPU and the module, names the stuck device and its holder, and writes nothing more to
    it. recover refuses while the write is stuck and restores everything once it is not."""
    profile(
        "win10",
        'devices: {gpu: "0000:03:00.0", gpu-audio: "0000:03:00.1"}\nprepare/begin:\n'
        "  - modprobe: [vfio_pci]\n  - detach: {devices: [gpu, gpu-audio], via: sysfs}\n"
        "    timeout: 3\n    force: true\n",  # the steps before the stuck write fit at 4x load
    )
    start = seed.snapshot()
    mapped = seed.hold_open(4321, "qemu-system-x86", AUDIO)
    seed.fail("bus/pci/drivers/snd_hda_intel/unbind", "stuck")
    try:
        result = hook(seed, "prepare", "begin")
        assert result.code == 1, result.text
        unbind = f"/sys/bus/pci/devices/{AUDIO}/driver/unbind"
        assert f"{AUDIO}: writing '{AUDIO}' to {unbind} did not return within " in result.text
        assert "it is stuck in the kernel (helper pid " in result.text
        assert f"still open: qemu-system-x86 (pid 4321) holds {mapped} of {AUDIO}" in result.text
        assert f"STUCK: {AUDIO}: `write {AUDIO} > {unbind}` has not returned" in result.text
        assert "passthrough-hook recover win10" in result.text
        assert seed.writes_on_stuck == []
        now = seed.snapshot()
        assert now[GPU] == start[GPU]  # the other device is back
        assert now[AUDIO][1] == "vfio-pci"  # the override set before the stuck unbind stays
        host = seed.host()
        host.stuck[AUDIO] = {"address": AUDIO, "write": "unbind"}
        with pytest.raises(HostError, match="not going to read /sys/bus/pci/devices/.*stuck"):
            host.sysfs.read(f"bus/pci/devices/{AUDIO}/driver_override")  # it takes the device lock
        journal = json.loads(Path(STATE, "win10.json").read_text())
        assert journal["stuck"][AUDIO]["pid"] == seed.helpers[0]

        status_result = command("status", "--root", "/host", "--state-dir", STATE)
        status = " ".join(status_result.text.split())
        assert status_result.code == 1
        assert (
            f"PROBLEM (stuck): {AUDIO}: `write {AUDIO} > {unbind}` is stuck in the kernel since "
            in status
        )
        assert f"(helper pid {seed.helpers[0]}, state S)" in status
        [win10] = one_document(
            command("status", "--root", "/host", "--state-dir", STATE, "--json").text
        )["domains"]
        [stuck] = [p for p in win10["problems"] if p["kind"] == "stuck"]
        assert (stuck["address"], stuck["helper"]) == (AUDIO, seed.helpers[0])
        result = recover(seed)
        assert result.code == 1
        assert f"not recovering win10 yet: {AUDIO} is still stuck in the kernel" in result.text
        assert "qemu-system-x86 (pid 4321)" in result.text
    finally:
        seed.release_stuck()
    result = recover(seed)
    assert result.code == 0, result.text
    assert seed.snapshot() == start
    assert not Path(STATE, "win10.json").exists()


# --- root-owned configuration and bad input -----------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="the ownership rules apply when running as root")
def test_profiles_others_can_write_are_refused(seed):
    os.chmod("/profiles/win10.yaml", 0o666)
    result = hook(seed, "prepare", "begin")
    assert (
        result.code == 2
        and "writable by group or others (mode 666)" in result.text
        and "chmod go-w" in result.text
    )
    os.chmod("/profiles/win10.yaml", 0o644)
    os.chown("/profiles/win10.yaml", 1000, 1000)
    result = hook(seed, "prepare", "begin")
    assert result.code == 2 and "owned by uid 1000, not root" in result.text
    assert seed.writes == []


def test_an_internal_error_exits_3_with_the_traceback_in_the_log(seed, monkeypatch):
    from passthrough.actions.drivers import Detach

    def broken(self, ctx):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(Detach, "apply", broken)
    result = hook(seed, "prepare", "begin")
    assert result.code == 3
    assert (
        "internal error (a bug, not your profile); the traceback is in /host/log/hook.log"
        in result.text
    )
    assert "Traceback" not in result.text
    assert "ZeroDivisionError: a bug" in Path(LOG).read_text()


def test_a_profile_broken_while_the_vm_runs_still_releases(seed):
    """The user edits the YAML into an error while the VM runs: release must still put
    the devices back from the journal, and say why it ignored the profile."""
    start = seed.snapshot()
    assert hook(seed, "prepare", "begin")[0] == 0
    profile("win10", SEED_PROFILE + "release/end:\n  - detatch: [gpu]\n")
    result = hook(seed, "release", "end")
    assert result.code == 0, result.text
    assert (
        "warning: the profile did not load, so its release/end steps were not used" in result.text
    )
    assert 'unknown action "detatch"' in result.text
    assert seed.snapshot() == start
    # Other events still refuse the broken profile.
    assert hook(seed, "prepare", "begin")[0] == 2
