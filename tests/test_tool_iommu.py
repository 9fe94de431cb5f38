"""`passthrough-hook iommu` on the host shapes of tests/hosts.py."""

import json

from tool_trees import REPO, add_pci_ids, host_tree, run

from passthrough.tools.pcidb import PciIds

DEMO = REPO / "config" / "demo-host"


def lines_of(output: str, group: str) -> list[str]:
    """The lines of one group: its header, devices and advice."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split(":")[0] == f"Group {group}")
    end = next(
        (i for i in range(start + 1, len(lines)) if lines[i].startswith("Group ") or not lines[i]),
        len(lines),
    )
    return lines[start:end]


def test_demo_host_lists_groups_with_class_ids_driver_and_reset():
    code, out, err = run("iommu", "--root", DEMO)
    assert (code, err) == (0, "")
    assert out.startswith(f"IOMMU groups of {DEMO}: 6 groups, 9 devices\n")
    gpu_group = lines_of(out, "14")
    assert gpu_group[0] == (
        "Group 14: GPU 0000:03:00.0: its functions go to the VM together "
        "(bridges stay with the host)"
    )
    assert gpu_group[2].split()[:5] == ["0000:03:00.0", "0300", "1002:73df", "amdgpu", "bus"]
    assert gpu_group[3].split()[:5] == ["0000:03:00.1", "0403", "1002:ab28", "snd_hda_intel", "bus"]
    assert "VGA compatible controller" in gpu_group[2]
    assert lines_of(out, "3")[1].split()[:5] == [
        "0000:01:00.0",
        "0108",
        "144d:a80a",
        "nvme",
        "flr,bus",
    ]
    assert lines_of(out, "15")[0] == "Group 15: GPU 0000:04:00.0 is the boot display (boot_vga)"
    assert "WARNING" not in out and "mix a GPU" not in out


def test_mixed_group_is_marked_with_the_host_devices_it_holds(tmp_path):
    code, out, _ = run("iommu", "--root", host_tree(tmp_path, "mixed"))
    assert code == 0
    group = lines_of(out, "7")
    assert group[0] == (
        "Group 7: WARNING: GPU 0000:03:00.0 shares this group with devices the host needs: "
        "0000:02:00.0 (USB controller, xhci_hcd)"
    )
    assert [line.split()[0] for line in group[1:6]] == [
        "0000:00:1c.0",
        "0000:00:1c.4",
        "0000:02:00.0",
        "0000:03:00.0",
        "0000:03:00.1",
    ]
    assert "Put the card in another slot" in " ".join(" ".join(group[6:]).split())
    assert "Groups that mix a GPU with host devices: 7." in out


def test_four_function_card_is_one_clean_group(tmp_path):
    code, out, _ = run("iommu", "--root", host_tree(tmp_path, "nvidia4"))
    assert code == 0
    group = lines_of(out, "16")
    assert [line.split()[:4] for line in group[2:]] == [
        ["0000:0a:00.0", "0300", "10de:1f02", "nouveau"],
        ["0000:0a:00.1", "0403", "10de:10f9", "snd_hda_intel"],
        ["0000:0a:00.2", "0c03", "10de:1ada", "xhci_hcd"],
        ["0000:0a:00.3", "0c80", "10de:1adb", "nvidia-gpu"],
    ]
    assert "Serial bus controller" in group[5]
    assert "WARNING" not in out


def test_json_names_come_from_the_trees_pci_ids(tmp_path):
    root = host_tree(tmp_path, "mixed")
    ids = add_pci_ids(root)
    code, out, _ = run("iommu", "--root", root, "--json")
    data = json.loads(out)
    assert code == 0 and data["iommu"] and data["pci_ids"] == str(ids) and data["advice"] is None
    group = next(g for g in data["groups"] if g["group"] == "7")
    assert (
        group["gpu"]
        and group["conflicts"] == ["0000:02:00.0"]
        and data["devices_in_no_group"] == []
    )
    names = {d["address"]: d["name"] for d in group["devices"]}
    assert names["0000:03:00.0"] == (
        "Advanced Micro Devices, Inc. [AMD/ATI] Ellesmere [Radeon RX 470/480/570/570X/580/580X/590]"
    )
    assert (
        names["0000:02:00.0"] == "ASMedia Technology Inc. ASM2142/ASM3142 USB 3.1 Host Controller"
    )
    assert (
        names["0000:03:00.1"] == "Advanced Micro Devices, Inc. [AMD/ATI] device aaf0"
    )  # not in the excerpt
    assert names["0000:00:1c.0"] is None  # vendor 8086 is not in the excerpt
    gpu = next(d for d in group["devices"] if d["address"] == "0000:03:00.0")
    assert (gpu["class"], gpu["driver"], gpu["reset_methods"], gpu["iommu_group"]) == (
        "0x030000",
        "amdgpu",
        ["bus"],
        "7",
    )


def test_no_iommu_groups_says_which_kernel_parameter_to_add(tmp_path):
    root = host_tree(tmp_path, "mixed", iommu=False, cmdline="BOOT_IMAGE=/vmlinuz ro quiet")
    code, out, _ = run("iommu", "--root", root)
    assert code == 1
    assert out.startswith("The kernel has no IOMMU groups")
    flat = " ".join(out.split())  # wrapped to the terminal
    assert "add `intel_iommu=on iommu=pt` to the kernel command line (GenuineIntel CPU)" in flat
    assert "enable VT-d in the firmware setup" in flat
    assert "0000:03:00.0" in out  # the devices are still listed


def test_no_iommu_groups_with_the_parameter_points_at_the_firmware(tmp_path):
    root = host_tree(tmp_path, "demo", iommu=False)  # its command line has amd_iommu=on
    code, out, _ = run("iommu", "--root", root, "--json")
    data = json.loads(out)
    assert code == 1 and not data["iommu"] and data["groups"] == []
    assert (
        len(data["devices_in_no_group"]) == 9
        and data["devices_in_no_group"][0]["iommu_group"] is None
    )
    assert data["kernel_parameters"] == "amd_iommu=on iommu=pt"
    assert data["advice"].startswith(
        "the kernel command line already has amd_iommu=on, so the IOMMU is off in the firmware"
    )


def test_reset_column_tells_none_from_unknown(tmp_path):
    root = host_tree(tmp_path, "demo")
    (root / "sys/devices/pci0000:00/0000:00:01.2/0000:02:00.0/reset_method").unlink()
    _, out, _ = run("iommu", "--root", root)
    assert lines_of(out, "4")[1].split()[4] == "none"  # 6.1 hides the file when there is no reset
    (root / "proc/sys/kernel/osrelease").write_text("5.10.0-26-amd64\n")
    _, out, _ = run("iommu", "--root", root)
    assert lines_of(out, "4")[1].split()[4] == "?"  # before 5.15 there is no such file at all


def test_pci_ids_reads_only_the_vendors_asked_for(tmp_path):
    path = tmp_path / "pci.ids"
    path.write_text(
        "0001  First\n\t0002  Gadget\n1002  AMD\n\t73df  Navi 22\n\t\t1002 0e36  Subsystem\n"
        "10de  NVIDIA\n\t1f02  TU106\nffff  Last\n\t0001  Not read\nC 03  Display controller\n"
        "\t00  VGA compatible controller\n"
    )
    ids = PciIds(path)
    ids.load({"10de"})
    assert ids.describe("10de", "1f02") == "NVIDIA TU106"
    assert ids._devices == {("10de", "1f02"): "TU106"}  # stopped after its vendor
    assert ids.describe("1002", "73df") == "AMD Navi 22"
    assert ids.describe("1002", "0e36") == "AMD device 0e36"  # a subsystem line is not a device
    assert ids.describe("dead", "beef") is None
    assert PciIds(None).describe("1002", "73df") is None


def test_names_come_only_from_the_tree(tmp_path):
    """A tree without pci.ids gets no names, whatever this machine has installed: the output
    of `--root` must not depend on where it runs."""
    root = host_tree(tmp_path, "demo")
    (root / "usr/share/misc/pci.ids").unlink()
    code, out, _ = run("iommu", "--root", root)
    assert code == 0
    assert "Navi 22" not in out and "Advanced Micro Devices" not in out
    assert f"(No device names: {root} has no usr/share/misc/pci.ids; a `snapshot` of a host " in out


def test_snapshot_carries_the_names(tmp_path):
    root = host_tree(tmp_path, "nvidia4")
    assert run("snapshot", "--root", root, tmp_path / "copy")[0] == 0
    code, out, _ = run("iommu", "--root", tmp_path / "copy")
    assert code == 0 and "NVIDIA Corporation TU106 [GeForce RTX 2070]" in out
