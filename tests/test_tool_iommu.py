"""`passthrough-hook iommu` on the host shapes of tests/hosts.py."""

import json

import pytest
from runs import command
from tool_trees import REPO, add_pci_ids, host_tree

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
    code, out, err = command("iommu", "--root", DEMO)
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
    code, out, _ = command("iommu", "--root", host_tree(tmp_path, "mixed"))
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
    code, out, _ = command("iommu", "--root", host_tree(tmp_path, "nvidia4"))
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
    code, out, _ = command("iommu", "--root", root, "--json")
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


def advice(tmp_path, name="mixed", files=(), **changes) -> str:
    """`iommu --json`'s advice for a host without IOMMU groups, with extra files in its tree."""
    root = host_tree(tmp_path, name, iommu=False, **changes)
    for rel, text in files:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    code, out, _ = command("iommu", "--root", root, "--json")
    data = json.loads(out)
    assert code == 1 and not data["iommu"] and data["groups"] == []
    return data


DEBIAN = ("etc/os-release", 'ID=debian\nPRETTY_NAME="Debian GNU/Linux 12"\n')
GRUB = ("etc/default/grub", 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n')


def test_no_iommu_groups_says_which_kernel_parameter_to_add(tmp_path):
    root = host_tree(tmp_path, "mixed", iommu=False, cmdline="BOOT_IMAGE=/vmlinuz ro quiet")
    for rel, text in (DEBIAN, GRUB):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    code, out, _ = command("iommu", "--root", root)
    assert code == 1
    assert out.startswith("The kernel has no IOMMU groups")
    flat = " ".join(out.split())  # wrapped to the terminal
    assert (
        "enable VT-d in the firmware setup, and turn the Intel IOMMU on with the kernel parameter "
        "intel_iommu=on (grub): append `intel_iommu=on` to GRUB_CMDLINE_LINUX_DEFAULT in "
        "/etc/default/grub, run `update-grub`, and reboot" in flat
    )
    assert "0000:03:00.0" in out  # the devices are still listed


def test_amd_needs_the_firmware_setting_not_a_parameter(tmp_path):
    data = advice(tmp_path, "demo", cmdline="BOOT_IMAGE=/vmlinuz ro quiet")
    assert data["cpu_vendor"] == "AuthenticAMD" and data["kernel_parameters"] == ""
    assert data["advice"].startswith("enable the IOMMU in the firmware setup")
    assert "there is no amd_iommu=on parameter" in data["advice"]
    assert "`dmesg | grep -i AMD-Vi`" in data["advice"] and "iommu=pt" in data["advice"]
    assert "add `amd_iommu=on" not in data["advice"]


def test_intel_kernel_that_enables_the_iommu_by_default_points_at_the_firmware(tmp_path):
    data = advice(
        tmp_path,
        cmdline="ro quiet",
        files=[
            (
                "boot/config-6.6.9-200.fc39.x86_64",
                "CONFIG_INTEL_IOMMU=y\nCONFIG_INTEL_IOMMU_DEFAULT_ON=y\n",
            )
        ],
    )
    assert data["kernel_parameters"] == ""
    assert (
        "this kernel enables the Intel IOMMU by default (CONFIG_INTEL_IOMMU_DEFAULT_ON"
        in data["advice"]
    )
    assert "so VT-d is off in the firmware" in data["advice"]


def test_a_parameter_that_turns_the_iommu_off_is_named(tmp_path):
    data = advice(tmp_path, cmdline="ro quiet intel_iommu=off")
    assert data["advice"].startswith("the kernel command line has intel_iommu=off")


def test_unknown_cpu_vendor(tmp_path):
    data = advice(tmp_path, cpu_vendor="", cmdline="ro quiet")
    assert data["cpu_vendor"] is None
    assert data["advice"].startswith("the CPU vendor is unknown")
    assert "unknown CPU CPU" not in data["advice"]


@pytest.mark.parametrize(
    "files, name, how",
    [
        ([DEBIAN, GRUB], "grub", "run `update-grub`"),
        ([("etc/os-release", "ID=ubuntu\nID_LIKE=debian\n"), GRUB], "grub", "run `update-grub`"),
        (
            [("etc/os-release", "ID=fedora\n"), GRUB],
            "grub",
            'grubby --update-kernel=ALL --args="intel_iommu=on"',
        ),
        (
            [("etc/os-release", 'ID="opensuse-tumbleweed"\nID_LIKE="opensuse suse"\n'), GRUB],
            "grub",
            "grub2-mkconfig -o /boot/grub2/grub.cfg",
        ),
        ([("etc/os-release", "ID=arch\n"), GRUB], "grub", "grub-mkconfig -o /boot/grub/grub.cfg"),
        (
            [("etc/os-release", "ID=arch\n"), ("boot/loader/loader.conf", "default arch\n")],
            "systemd-boot",
            "/etc/kernel/cmdline",
        ),
        (
            [
                ("etc/os-release", 'ID=pop\nID_LIKE="ubuntu debian"\n'),
                ("etc/kernel/cmdline", "ro quiet\n"),
            ],
            "kernelstub",
            'kernelstub -a "intel_iommu=on"',
        ),
        (
            [
                DEBIAN,
                GRUB,
                ("etc/kernel/proxmox-boot-uuids", "1234-ABCD\n"),
                ("etc/kernel/cmdline", "root=ZFS=rpool\n"),
            ],
            "proxmox-boot-tool",
            "/etc/kernel/cmdline, run `proxmox-boot-tool refresh`",
        ),
        ([DEBIAN], "unknown", "in your boot loader's configuration"),
    ],
    ids=[
        "debian",
        "ubuntu",
        "fedora",
        "opensuse",
        "arch-grub",
        "systemd-boot",
        "pop-os",
        "proxmox",
        "none",
    ],
)
def test_the_boot_loader_is_read_from_the_host_tree(tmp_path, files, name, how):
    data = advice(tmp_path, cmdline="ro quiet", files=files)
    assert data["boot_loader"]["name"] == name
    assert f"intel_iommu=on ({name}): " in data["advice"] and how in data["advice"], data["advice"]


def test_reset_column_tells_none_from_unknown(tmp_path):
    root = host_tree(tmp_path, "demo")
    (root / "sys/devices/pci0000:00/0000:00:01.2/0000:02:00.0/reset_method").unlink()
    _, out, _ = command("iommu", "--root", root)
    assert lines_of(out, "4")[1].split()[4] == "none"  # 6.1 hides the file when there is no reset
    (root / "proc/sys/kernel/osrelease").write_text("5.10.0-26-amd64\n")
    _, out, _ = command("iommu", "--root", root)
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
    code, out, _ = command("iommu", "--root", root)
    assert code == 0
    assert "Navi 22" not in out and "Advanced Micro Devices" not in out
    assert f"(No device names: {root} has no usr/share/misc/pci.ids; a `snapshot` of a host " in out


def test_snapshot_carries_the_names(tmp_path):
    root = host_tree(tmp_path, "nvidia4")
    assert command("snapshot", "--root", root, tmp_path / "copy")[0] == 0
    code, out, _ = command("iommu", "--root", tmp_path / "copy")
    assert code == 0 and "NVIDIA Corporation TU106 [GeForce RTX 2070]" in out
