"""`passthrough-hook snapshot DIR`: a tree that --root accepts, equal to the host it copies."""

import json
import os
import re
from pathlib import Path

import pytest
from hosts import HOSTS
from runs import command
from tool_trees import REPO, host_tree

DEMO = REPO / "config" / "demo-host"
ADDRESS = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
PROC_FILES = ("proc/modules", "proc/cmdline", "proc/sys/kernel/osrelease")


def is_a_fact(rel: str) -> bool:
    """What snapshot copies: the PCI, IOMMU and module facts (host trees also hold processes,
    consoles and the like for other tests)."""
    parts = rel.split("/")
    if (
        rel.startswith(("sys/bus/pci/", "sys/kernel/iommu_groups/", "lib/modules/", "boot/config-"))
        or rel in PROC_FILES
        or rel == "usr/share/misc/pci.ids"
    ):
        return True
    if parts[:2] == ["sys", "module"]:
        return len(parts) == 3 or parts[3:] == ["initstate"]
    if parts[:2] == ["sys", "devices"] and parts[2].startswith("pci"):
        return all(
            ADDRESS.match(part) for part in parts[3:-1]
        )  # files and links of device directories
    return False


def facts(root) -> dict[str, str]:
    """Every fact under root: path -> file content or link target; for cpuinfo, its vendor."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            if os.path.islink(path) and is_a_fact(rel):
                found[rel] = "-> " + os.readlink(path)
            elif os.path.isfile(path) and is_a_fact(rel):
                found[rel] = Path(path).read_bytes().decode(errors="replace")
                if rel.endswith("pci.ids"):  # the entries; the header names the source
                    found[rel] = "".join(
                        line for line in found[rel].splitlines(True) if not line.startswith("#")
                    )
            elif os.path.isdir(path) and rel.startswith("sys/module/") and is_a_fact(rel):
                found[rel] = "dir"
    vendors = re.findall(r"^vendor_id\s*:\s*(\S+)", Path(root, "proc/cpuinfo").read_text(), re.M)
    found["proc/cpuinfo vendor"] = vendors[0]
    return found


@pytest.mark.parametrize("name", sorted(HOSTS))
def test_snapshot_of_a_host_tree_is_that_tree(tmp_path, name):
    root = host_tree(tmp_path, name)
    code, out, err = command("snapshot", "--root", root, tmp_path / "copy")
    assert (code, err) == (0, "")
    assert out.startswith(f"Wrote a snapshot of {root} to {tmp_path}/copy: ")
    copied, original = facts(tmp_path / "copy"), facts(root)
    assert copied == original
    assert "usr/share/misc/pci.ids" in copied  # the names of its devices travel with it
    assert len(copied) > 100 and {"vendor", "driver", "iommu_group"} <= {
        rel.rsplit("/", 1)[-1] for rel in copied
    }
    extra = [
        os.path.relpath(os.path.join(d, f), tmp_path / "copy")
        for d, _, files in os.walk(tmp_path / "copy")
        for f in files
    ]
    assert [rel for rel in extra if not is_a_fact(rel)] == [
        "proc/cpuinfo"
    ]  # nothing else is copied


def test_snapshot_of_a_host_without_iommu(tmp_path):
    root = host_tree(tmp_path, "mixed", iommu=False)
    assert command("snapshot", "--root", root, tmp_path / "copy")[0] == 0
    assert facts(tmp_path / "copy") == facts(root)
    assert not os.path.exists(tmp_path / "copy/sys/kernel/iommu_groups")


def test_commands_read_a_snapshot_as_they_read_the_host(tmp_path):
    root = host_tree(tmp_path, "nvidia4")
    command("snapshot", "--root", root, tmp_path / "copy")
    for words in (["iommu", "--json"], ["status", "--json"]):
        original = command(*words, "--root", root)[1].replace(str(root), "ROOT")
        copied = command(*words, "--root", tmp_path / "copy")[1].replace(
            str(tmp_path / "copy"), "ROOT"
        )
        assert json.loads(copied) == json.loads(original)


def test_never_config_space_roms_bars_or_big_files(tmp_path):
    root = host_tree(tmp_path, "demo")
    gpu = root / "sys/devices/pci0000:00/0000:00:03.1/0000:03:00.0"
    for name in ("config", "rom", "resource0", "resource2", "resource2_wc", "vpd"):
        (gpu / name).write_bytes(b"\xff" * 256)
    (gpu / "modalias").write_text("x" * (64 * 1024 + 1))
    code, out, _ = command("snapshot", "--root", root, tmp_path / "copy")
    assert code == 0
    copied = tmp_path / "copy/sys/devices/pci0000:00/0000:00:03.1/0000:03:00.0"
    names = set(os.listdir(copied))
    assert not names & {
        "config",
        "rom",
        "resource0",
        "resource2",
        "resource2_wc",
        "vpd",
        "modalias",
    }
    assert {
        "resource",
        "resource0_resize",
        "resource2_resize",
        "vendor",
        "driver",
        "iommu_group",
    } <= names
    assert (
        "Note: skipped sys/devices/pci0000:00/0000:00:03.1/0000:03:00.0/modalias: over 64 KiB"
        in out
    )


def test_links_that_leave_sys_are_not_copied(tmp_path):
    root = host_tree(tmp_path, "demo")
    os.symlink("/etc", root / "sys/bus/pci/drivers/amdgpu/0000:0f:00.0")
    code, out, _ = command("snapshot", "--root", root, tmp_path / "copy")
    assert code == 0 and not os.path.lexists(
        tmp_path / "copy/sys/bus/pci/drivers/amdgpu/0000:0f:00.0"
    )
    assert (
        "Note: skipped the link sys/bus/pci/drivers/amdgpu/0000:0f:00.0 -> /etc: it leads outside sys/"
        in out
    )


def test_a_large_modules_builtin_keeps_its_vfio_lines(tmp_path):
    root = host_tree(tmp_path, "demo")
    builtin = root / "lib/modules/6.1.0-13-amd64/modules.builtin"
    builtin.write_text(
        "".join(f"kernel/drivers/misc/m{i}.ko\n" for i in range(4000))
        + "kernel/drivers/vfio/vfio.ko\n"
    )
    command("snapshot", "--root", root, tmp_path / "copy")
    assert (
        tmp_path / "copy/lib/modules/6.1.0-13-amd64/modules.builtin"
    ).read_text() == "kernel/drivers/vfio/vfio.ko\n"


def test_refuses_a_directory_that_is_not_empty(tmp_path):
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy/keep").write_text("mine")
    code, _, err = command("snapshot", "--root", DEMO, tmp_path / "copy")
    assert code == 2 and err == (
        f"passthrough-hook: {tmp_path}/copy exists and is not an empty directory; give a "
        f"new directory\n"
    )
    assert os.listdir(tmp_path / "copy") == ["keep"]


def test_a_directory_that_cannot_be_written_is_a_one_line_error(tmp_path):
    (tmp_path / "file").write_text("")
    code, _, err = command("snapshot", "--root", DEMO, tmp_path / "file/copy")
    assert code == 2 and err.startswith(
        f"passthrough-hook: cannot write the snapshot in {tmp_path}/file/copy: "
    )


def test_a_device_whose_lock_is_held_is_named_and_the_rest_is_written(tmp_path, monkeypatch):
    """driver_override's read takes the device lock, which a write stuck in the kernel holds:
    here a FIFO nobody writes, so reading it blocks. The snapshot names the device and
    writes everything else, its other files included."""
    monkeypatch.setattr("passthrough.tools.snapshot.READ_TIMEOUT", 2.0)
    root = host_tree(tmp_path, "demo")
    audio = "0000:03:00.1"
    device = root / "sys/devices/pci0000:00/0000:00:03.1" / audio
    (device / "driver_override").unlink()
    os.mkfifo(device / "driver_override")
    try:
        code, out, err = command("snapshot", "--json", "--root", root, tmp_path / "copy")
        assert code == 0
        assert (
            f"passthrough-hook snapshot: warning: {audio}: reading driver_override did not "
            "return within 2 s: a write stuck in the kernel holds the device's lock" in err
        )
        document = json.loads(out)
        assert document["unanswered"] == [audio]
        assert f"{audio}: driver_override did not answer; left out" in document["notes"]
        copied = tmp_path / "copy/sys/devices/pci0000:00/0000:00:03.1"
        assert not (copied / audio / "driver_override").exists()
        assert (copied / audio / "vendor").read_text() == (device / "vendor").read_text()
        gpu = "0000:03:00.0"
        assert (copied / gpu / "driver_override").read_text() == (
            root / "sys/devices/pci0000:00/0000:00:03.1" / gpu / "driver_override"
        ).read_text()
    finally:
        fd = os.open(device / "driver_override", os.O_WRONLY | os.O_NONBLOCK)  # let them go
        os.close(fd)
