"""Read-only facts about a host, from a root directory (`/` or a snapshot tree): PCI
functions, IOMMU groups, the CPU vendor, the kernel and its vfio modules.

Reads go through host.sysfs.Sysfs, so the test suite's guard against the real /sys
covers these commands too.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from ..constants import PCI_ADDRESS
from ..host import Host
from ..host.modules import KernelModules, canonical, module_file_name
from ..host.sysfs import Sysfs
from .bootloader import BootLoader
from .bootloader import detect as detect_boot_loader
from .pcidb import class_name

ADDRESS = re.compile(f"^{PCI_ADDRESS}$")
BRIDGE_CLASS = 0x0604
GPU_VENDORS = {"1002": "AMD", "10de": "NVIDIA", "8086": "Intel"}
# What a profile loads for vfio: vfio_pci pulls in vfio, its IOMMU backend (vfio_iommu_type1,
# or iommufd) and, before 6.2, vfio_virqfd, on every kernel since 5.15.
VFIO_MODULES = ("vfio_pci",)


@dataclass(frozen=True)
class PciFunction:
    address: str
    vendor: str  # 4 hex digits, lower case, no 0x
    device: str
    pci_class: int  # 0x030000
    driver: str | None
    group: str | None
    reset_methods: (
        tuple[str, ...] | None
    )  # None: no reset_method file (see HostFacts.reset_methods)
    boot_vga: bool

    @property
    def slot(self) -> str:
        """0000:03:00 for 0000:03:00.1: the functions of one card share it."""
        return self.address.rsplit(".", 1)[0]

    @property
    def function(self) -> int:
        return int(self.address[-1])

    @property
    def is_bridge(self) -> bool:
        return self.pci_class >> 8 == BRIDGE_CLASS

    @property
    def is_gpu(self) -> bool:
        return self.pci_class >> 16 == 0x03

    @property
    def ids(self) -> str:
        return f"{self.vendor}:{self.device}"

    @property
    def class_code(self) -> str:
        return f"{self.pci_class >> 8:04x}"

    @property
    def class_name(self) -> str:
        return class_name(self.pci_class)

    def short(self) -> str:
        """'0000:02:00.0 (USB controller, xhci_hcd)'."""
        return f"{self.address} ({self.class_name}, {self.driver or 'no driver'})"

    def to_json(self) -> dict:
        return {
            "address": self.address,
            "class": f"0x{self.pci_class:06x}",
            "class_name": self.class_name,
            "vendor": self.vendor,
            "device": self.device,
            "driver": self.driver,
            "iommu_group": self.group,
            "reset_methods": list(self.reset_methods) if self.reset_methods is not None else None,
            "boot_vga": self.boot_vga,
        }


def _hex_id(text: str | None) -> str:
    return (text or "0x0000").lower().removeprefix("0x").zfill(4)


class HostFacts:
    """What the commands read about one host. Everything is read lazily and cached."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.sysfs = Sysfs(self.root, host=None)  # reads only; writing needs a Host
        self._functions: dict[str, PciFunction] | None = None
        self._groups: dict[str, list[PciFunction]] | None = None
        self._release: tuple[str | None] | None = None
        self._kernel_modules: KernelModules | None = None

    @property
    def is_live(self) -> bool:
        """True for this machine (root /), False for a tree."""
        return self.root.resolve() == Path("/")

    # --- PCI ----------------------------------------------------------------------------------

    def functions(self) -> dict[str, PciFunction]:
        if self._functions is None:
            self._functions = {}
            for address in self.sysfs.listdir("bus/pci/devices"):
                if ADDRESS.match(address):
                    self._functions[address] = self._read_function(address)
        return self._functions

    def function(self, address: str) -> PciFunction | None:
        return self.functions().get(address)

    def _read_function(self, address: str) -> PciFunction:
        rel = f"bus/pci/devices/{address}"
        reset = self.sysfs.read(f"{rel}/reset_method")
        if reset is None and self.kernel_has_reset_method():
            reset = ""  # since 5.15 the file is hidden when the device has no reset method
        try:
            pci_class = int(self.sysfs.read(f"{rel}/class") or "0", 16)
        except ValueError:
            pci_class = 0
        return PciFunction(
            address=address,
            vendor=_hex_id(self.sysfs.read(f"{rel}/vendor")),
            device=_hex_id(self.sysfs.read(f"{rel}/device")),
            pci_class=pci_class,
            driver=self.sysfs.link_name(f"{rel}/driver"),
            group=self.sysfs.link_name(f"{rel}/iommu_group"),
            reset_methods=tuple(reset.split()) if reset is not None else None,
            boot_vga=self.sysfs.read(f"{rel}/boot_vga") == "1",
        )

    def bar_resize(self, address: str, bar: int) -> tuple[int | None, list[int] | None]:
        """(current size in bytes, supported sizes in MiB or None without ReBAR) of one BAR."""
        from ..pci import PciDevice

        device = PciDevice(Host(root=str(self.root), sysfs=self.sysfs), address)
        try:
            current = device.bar_size(bar)
        except ValueError:
            current = None
        try:
            return current, device.resizable_sizes(bar)
        except ValueError:
            return current, None

    # --- IOMMU --------------------------------------------------------------------------------

    def groups(self) -> dict[str, list[PciFunction]]:
        """IOMMU group -> its PCI functions, groups in numeric order. Empty: no IOMMU."""
        if self._groups is None:
            names = self.sysfs.listdir("kernel/iommu_groups")
            ordered = sorted(
                names, key=lambda g: (not g.isdigit(), int(g) if g.isdigit() else 0, g)
            )
            self._groups = {group: self.group_members(group) for group in ordered}
        return self._groups

    def group_members(self, group: str) -> list[PciFunction]:
        return [
            f
            for f in (
                self.function(a) for a in self.sysfs.listdir(f"kernel/iommu_groups/{group}/devices")
            )
            if f is not None
        ]

    def cpu_vendor(self) -> str | None:
        for line in self._proc("cpuinfo").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "vendor_id":
                return value.strip() or None
        return None

    def cmdline(self) -> str:
        return self._proc("cmdline").replace("\0", " ").strip()

    def intel_iommu_default_on(self) -> bool:
        """Whether the kernel turns the Intel IOMMU on by itself (CONFIG_INTEL_IOMMU_DEFAULT_ON,
        from /boot/config-<release>): then intel_iommu=on is not needed."""
        release = self.kernel_release()
        if not release:
            return False
        config = _read_text(self.root / "boot" / f"config-{release}")
        return "CONFIG_INTEL_IOMMU_DEFAULT_ON=y" in config.splitlines()

    def iommu_parameters(self) -> str:
        """The kernel parameters this CPU's IOMMU needs on the command line ("" for none).
        AMD's is on whenever the firmware enables it (there is no amd_iommu=on); Intel's
        needs intel_iommu=on unless the kernel was built to enable it by default."""
        vendor = self.cpu_vendor()
        if vendor == "GenuineIntel" and not self.intel_iommu_default_on():
            return "intel_iommu=on"
        return ""

    def boot_loader(self) -> BootLoader:
        return detect_boot_loader(self.root)

    def no_iommu_advice(self) -> str:
        """What to do when the kernel has no IOMMU groups, for this CPU, kernel, command line
        and boot loader."""
        vendor = self.cpu_vendor()
        cmdline = self.cmdline().split()
        loader = self.boot_loader()
        off = [p for p in cmdline if p in ("intel_iommu=off", "amd_iommu=off", "iommu=off")]
        if off:
            return (
                f"the kernel command line has {off[0]}, which turns the IOMMU off: remove it "
                f"where the boot loader sets the command line ({loader.name}) and reboot"
            )
        if vendor in ("AuthenticAMD", "HygonGenuine"):
            return (
                "enable the IOMMU in the firmware setup (named IOMMU, AMD-Vi or AMD IOMMU, often "
                "under Advanced > AMD CBS or North Bridge) and reboot: the kernel turns the AMD "
                "IOMMU on by itself when the firmware enables it, there is no amd_iommu=on "
                "parameter; `dmesg | grep -i AMD-Vi` shows whether the kernel found it "
                "(`iommu=pt` on the kernel command line is optional: it spares the host's own "
                "devices the translation)"
            )
        if vendor == "GenuineIntel":
            if self.intel_iommu_default_on() or "intel_iommu=on" in cmdline:
                why = (
                    "the kernel command line already has intel_iommu=on"
                    if "intel_iommu=on" in cmdline
                    else f"this kernel enables the Intel IOMMU by default "
                    f"(CONFIG_INTEL_IOMMU_DEFAULT_ON in /boot/config-{self.kernel_release()})"
                )
                return (
                    f"{why}, so VT-d is off in the firmware: enable VT-d (Intel Virtualization "
                    f"Technology for Directed I/O) in the firmware setup and reboot "
                    f"(`dmesg | grep -i -e DMAR -e IOMMU` says why)"
                )
            return (
                f"enable VT-d in the firmware setup, and turn the Intel IOMMU on with the kernel "
                f"parameter intel_iommu=on ({loader.name}): {loader.advice('intel_iommu=on')}"
            )
        return (
            "the CPU vendor is unknown (no vendor_id in /proc/cpuinfo): on an Intel CPU enable "
            f"VT-d in the firmware setup and add intel_iommu=on ({loader.name}: "
            f"{loader.advice('intel_iommu=on')}); on an AMD CPU enable the IOMMU (AMD-Vi) in the "
            f"firmware setup, no parameter is needed"
        )

    # --- kernel and modules -------------------------------------------------------------------

    def kernel_has_reset_method(self) -> bool:
        """Whether the kernel shows reset_method (5.15 and newer), so that its absence means
        the device cannot be reset; older kernels do not say."""
        match = re.match(r"(\d+)\.(\d+)", self.kernel_release() or "")
        return match is not None and (int(match.group(1)), int(match.group(2))) >= (5, 15)

    def kernel_release(self) -> str | None:
        """uname -r of the kernel the tree describes (this machine's for /)."""
        if self._release is None:
            release = self._proc("sys/kernel/osrelease").strip()
            self._release = (release or (os.uname().release if self.is_live else None),)
        return self._release[0]

    def module_dir(self) -> Path | None:
        release = self.kernel_release()
        return self.root / "lib" / "modules" / release if release else None

    def module_loaded(self, module: str) -> bool:
        name = canonical(module)
        loaded = {
            line.split(" ", 1)[0] for line in self._proc("modules").splitlines() if line.strip()
        }
        return name in loaded or self.sysfs.exists(f"module/{name}/initstate")

    def kernel_modules(self) -> KernelModules:
        if self._kernel_modules is None:
            self._kernel_modules = KernelModules(self.root, self.kernel_release())
        return self._kernel_modules

    def module_source(self, module: str) -> str | None:
        """How the running kernel provides a module: 'loaded', 'built in', the module file's
        path, or None when it cannot load it."""
        name = canonical(module)
        if self.module_loaded(name):
            return "loaded"
        if self.sysfs.exists(f"module/{name}"):
            return "built in"  # built-in modules have a /sys/module directory without initstate
        directory = self.module_dir()
        if directory is None:
            return None
        kernel = self.kernel_modules()
        if name in kernel.builtin():
            return "built in"
        for line in _read_text(directory / "modules.dep").splitlines():
            path = line.split(":", 1)[0]
            if module_file_name(path) == name:
                return str(directory / path)
        # Trees written by `snapshot` keep the names of the vfio module files, not modules.dep.
        for dirpath, _dirs, files in os.walk(directory / "kernel" / "drivers" / "vfio"):
            for file in files:
                if module_file_name(file) == name:
                    return os.path.join(dirpath, file)
        return None

    def obsolete_module(self, module: str) -> str | None:
        """Why this kernel has no `module` although older ones had (merged, not built)."""
        if self.module_loaded(module) or self.sysfs.exists(f"module/{canonical(module)}"):
            return None
        return self.kernel_modules().obsolete(module)

    def _proc(self, rel: str) -> str:
        return _read_text(self.root / "proc" / rel)


def _read_text(path: Path, limit: int = 4 << 20) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read(limit)
    except OSError:
        return ""


def card_conflicts(
    members: list[PciFunction], allowed: Collection[str] = frozenset()
) -> list[PciFunction]:
    """Devices of a GPU's IOMMU group that belong to neither the card (its slot) nor the
    bridges above it, and are not in `allowed`: devices the host most likely needs."""
    card_slots = {f.slot for f in members if f.is_gpu}
    if not card_slots:
        return []
    return [
        f
        for f in members
        if not f.is_bridge and f.slot not in card_slots and f.address not in allowed
    ]
