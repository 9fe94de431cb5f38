"""Host shapes for tests and the bundled demo host, written as sysfs-like trees.

A tree has the layout of the real kernel's: /sys/bus/pci/devices/X are symlinks into
/sys/devices/pci0000:00/..., each function has `driver` and `iommu_group` symlinks,
`resource` and, for Resizable BARs, `resourceN_resize`; drivers have bind/unbind files
and links to their devices; /proc/modules lists loaded modules.

`python3 tests/hosts.py demo config/demo-host` regenerates the bundled demo host
(a test checks the committed copy matches).
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

MiB = 1 << 20
GiB = 1 << 30


@dataclass
class Bar:
    size: int  # bytes
    start: int
    resizable: tuple[int, ...] = ()  # supported sizes in MiB (a ReBAR capability)
    flags: int = 0x0014220C  # 64-bit prefetchable memory


@dataclass
class Function:
    address: str
    vendor: str
    device: str
    pci_class: str  # e.g. 0x030000
    driver: str | None
    group: int
    bridge: str | None = None  # address of the upstream bridge; None: on the root bus
    bars: dict[int, Bar] = field(default_factory=dict)
    reset_method: str = "bus"
    boot_vga: bool | None = None
    description: str = ""


@dataclass
class HostSpec:
    functions: list[Function]
    modules: list[str]  # loaded modules; PCI drivers named like them exist under drivers/
    drivers: list[str]  # PCI drivers registered (directories under /sys/bus/pci/drivers)
    builtin: list[str] = field(default_factory=list)
    cmdline: str = "BOOT_IMAGE=/boot/vmlinuz-6.1.0-13-amd64 root=UUID=1c1b9c1e ro quiet amd_iommu=on iommu=pt"
    cpu_vendor: str = "AuthenticAMD"


def _bridge(address: str, group: int, parent: str | None = None) -> Function:
    return Function(address, "0x1022", "0x1483", "0x060400", "pcieport", group, parent,
                    description="PCIe GPP bridge")


def demo_host() -> HostSpec:
    """The seed's machine: an AMD RX 6750 GRE for the VM (ReBAR on: BAR 0 16 GiB, BAR 2
    256 MiB), an Intel A380 that stays with the host for transcoding, NVMe, 2.5G NIC."""
    return HostSpec(
        functions=[
            _bridge("0000:00:01.1", 1), _bridge("0000:00:01.2", 2), _bridge("0000:00:03.1", 14),
            _bridge("0000:00:03.2", 15),
            Function("0000:01:00.0", "0x144d", "0xa80a", "0x010802", "nvme", 3, "0000:00:01.1",
                     {0: Bar(16 * 1024, 0xFCF00000, flags=0x00140204)}, reset_method="flr bus",
                     description="Samsung 980 PRO NVMe SSD"),
            Function("0000:02:00.0", "0x8086", "0x15f3", "0x020000", "igc", 4, "0000:00:01.2",
                     {0: Bar(1 * MiB, 0xFCA00000, flags=0x00040200)}, reset_method="flr bus",
                     description="Intel I225-V 2.5GbE"),
            Function("0000:03:00.0", "0x1002", "0x73df", "0x030000", "amdgpu", 14, "0000:00:03.1",
                     {0: Bar(16 * GiB, 0x7C00000000, resizable=tuple(1 << n for n in range(8, 15))),
                      2: Bar(256 * MiB, 0x7800000000, resizable=tuple(1 << n for n in range(1, 9)))},
                     boot_vga=False, description="AMD Radeon RX 6750 GRE (Navi 22)"),
            Function("0000:03:00.1", "0x1002", "0xab28", "0x040300", "snd_hda_intel", 14, "0000:00:03.1",
                     {0: Bar(16 * 1024, 0xFCB20000, flags=0x00040200)}, description="Navi 21/23 HDMI/DP audio"),
            Function("0000:04:00.0", "0x8086", "0x56a5", "0x030000", "i915", 15, "0000:00:03.2",
                     {0: Bar(16 * MiB, 0xFB000000, flags=0x00140204),
                      2: Bar(8 * GiB, 0x7A00000000, resizable=tuple(1 << n for n in range(8, 14)))},
                     boot_vga=True, description="Intel Arc A380 (host transcoding)"),
        ],
        modules=["amdgpu", "i915", "snd_hda_intel", "nvme", "igc", "kvm_amd", "kvm"],
        drivers=["amdgpu", "i915", "snd_hda_intel", "nvme", "igc", "pcieport"],
    )


def write_tree(spec: HostSpec, root: Path) -> None:
    """Write spec as a sysfs-like tree under root (sys/, proc/)."""
    sys_dir = root / "sys"
    paths: dict[str, Path] = {}

    def device_dir(fn: Function) -> Path:
        if fn.address not in paths:
            parent = sys_dir / "devices" / "pci0000:00"
            if fn.bridge:
                parent = device_dir(next(f for f in spec.functions if f.address == fn.bridge))
            paths[fn.address] = parent / fn.address
        return paths[fn.address]

    def put(path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n" if text else "")

    def link(path: Path, target: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(target, path.parent), path)

    drivers = sys_dir / "bus" / "pci" / "drivers"
    for driver in spec.drivers:
        for name in ("bind", "unbind", "new_id", "remove_id"):
            put(drivers / driver / name, "")
    put(sys_dir / "bus" / "pci" / "drivers_probe", "")
    put(sys_dir / "bus" / "pci" / "drivers_autoprobe", "1")
    for fn in spec.functions:
        d = device_dir(fn)
        for name, value in (("vendor", fn.vendor), ("device", fn.device), ("class", fn.pci_class),
                            ("subsystem_vendor", fn.vendor), ("subsystem_device", "0x0000"),
                            ("driver_override", "(null)"), ("reset_method", fn.reset_method),
                            ("enable", "1"), ("numa_node", "-1"),
                            ("modalias", f"pci:v0000{fn.vendor[2:].upper()}d0000{fn.device[2:].upper()}"
                                         f"sv0000{fn.vendor[2:].upper()}sd00000000bc{fn.pci_class[2:4].upper()}"
                                         f"sc{fn.pci_class[4:6].upper()}i{fn.pci_class[6:8].upper()}")):
            put(d / name, value)
        if fn.boot_vga is not None:
            put(d / "boot_vga", "1" if fn.boot_vga else "0")
        lines = []
        for number in range(7):
            bar = fn.bars.get(number)
            lines.append("0x%016x 0x%016x 0x%016x" % ((bar.start, bar.start + bar.size - 1, bar.flags)
                                                       if bar else (0, 0, 0)))
            if bar and bar.resizable:
                bitmap = sum(1 << (mib.bit_length() - 1) for mib in bar.resizable)
                put(d / f"resource{number}_resize", f"{bitmap:016x}")
        put(d / "resource", "\n".join(lines))
        link(sys_dir / "bus" / "pci" / "devices" / fn.address, d)
        group = sys_dir / "kernel" / "iommu_groups" / str(fn.group)
        put(group / "type", "DMA")
        link(group / "devices" / fn.address, d)
        link(d / "iommu_group", group)
        if fn.driver:
            link(d / "driver", drivers / fn.driver)
            link(drivers / fn.driver / fn.address, d)
    for module in spec.modules:
        put(sys_dir / "module" / module / "initstate", "live")
    for module in spec.builtin:
        (sys_dir / "module" / module).mkdir(parents=True, exist_ok=True)
    proc = root / "proc"
    put(proc / "modules", "\n".join(f"{m} 65536 0 - Live 0x0000000000000000" for m in spec.modules))
    put(proc / "cmdline", spec.cmdline)
    put(proc / "cpuinfo", f"processor\t: 0\nvendor_id\t: {spec.cpu_vendor}\n")


HOSTS = {"demo": demo_host}


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in HOSTS:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(HOSTS)}}} DIR")
    target = Path(sys.argv[2])
    if target.exists():
        shutil.rmtree(target)
    write_tree(HOSTS[sys.argv[1]](), target)
