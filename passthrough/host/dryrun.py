"""The dry-run host: reads the real host (or --root tree), changes nothing.

Every change is recorded as an Operation and its effect is predicted on an in-memory
overlay with the same KernelModel the fake kernel uses, so later steps see what earlier
steps would have done (a resize after a detach knows the device is on vfio-pci).
"""

from __future__ import annotations

import re
from pathlib import Path

from ..constants import STUB_DRIVERS
from ..units import nodedev_name
from . import Host
from .commands import RecordedCommands
from .kernel_model import KernelModel
from .modules import Modules, canonical, driver_names
from .procfs import RecordedProcfs
from .sysfs import Sysfs

_DRIVER_LINK = re.compile(r"^bus/pci/devices/([^/]+)/driver$")
_DRIVER_DIR = re.compile(r"^bus/pci/drivers/([^/]+)$")
# Drivers that never bind by id table; a device on one of them has an unknown native driver.


class Overlay:
    """The model's store: predicted texts and driver links over the real tree."""

    def __init__(self, real: Sysfs):
        self.real = real
        self.texts: dict[str, str] = {}
        self.drivers: dict[str, str | None] = {}
        self.added: set[str] = set()
        self.removed: set[str] = set()

    def read(self, rel: str) -> str | None:
        return self.texts[rel] if rel in self.texts else self.real.read(rel)

    def set_text(self, rel: str, text: str) -> None:
        self.texts[rel] = text

    def link_name(self, rel: str) -> str | None:
        match = _DRIVER_LINK.match(rel)
        if match and match.group(1) in self.drivers:
            return self.drivers[match.group(1)]
        return self.real.link_name(rel)

    def set_driver_link(self, address: str, driver: str | None) -> None:
        self.drivers[address] = driver

    def set_link(self, rel: str, target: str | None) -> None:
        """A symlink outside the PCI bus appears (target given) or goes (platform drivers)."""
        (self.added if target else self.removed).add(rel)
        (self.removed if target else self.added).discard(rel)

    def exists(self, rel: str) -> bool:
        if rel in self.added:
            return True
        if rel in self.removed:
            return False
        match = re.match(r"^bus/pci/devices/([^/]+)/driver(/.*)?$", rel)
        if match and match.group(1) in self.drivers:
            return self.drivers[match.group(1)] is not None
        return self.real.exists(rel)


class DryRunSysfs(Sysfs):
    def __init__(self, root: Path, host: Host):
        super().__init__(root, host)
        real = Sysfs(root, host)
        self.overlay = Overlay(real)
        self.model = KernelModel(self.overlay, native_driver=self.native_driver)
        self.native_hints: dict[str, str] = {}

    def native_driver(self, address: str) -> str | None:
        """Predicted choice of the kernel's id tables: the driver the device has now, or the one
        it had before a detach (hinted by reattach), never a stub driver."""
        if address in self.native_hints:
            return self.native_hints[address]
        current = self.overlay.real.link_name(f"bus/pci/devices/{address}/driver")
        return None if current in STUB_DRIVERS else current

    def read(self, rel: str) -> str | None:
        self.path(rel)
        return self.overlay.read(rel)

    def link_name(self, rel: str) -> str | None:
        self.path(rel)
        return self.overlay.link_name(rel)

    def exists(self, rel: str) -> bool:
        self.path(rel)
        return self.overlay.exists(rel)

    def listdir(self, rel: str) -> list[str]:
        """A driver's directory lists the devices predicted bound to it, so undoing a modprobe
        after a predicted detach back to the host driver knows vfio-pci drives nothing."""
        if not self.exists(rel):
            return []
        entries = set(super().listdir(rel))
        match = _DRIVER_DIR.match(rel)
        if match:
            for address, driver in self.overlay.drivers.items():
                if driver == match.group(1):
                    entries.add(address)
                else:
                    entries.discard(address)
        return sorted(entries)

    def _apply(self, rel: str, path: Path, value: str) -> None:
        self.model.write(rel, value)

    def _write_detached(self, rel: str, path: Path, value: str, what: str) -> None:
        self.model.write(rel, value)  # predicted in this process: no helper, nothing can block


class PredictedModules(Modules):
    def __init__(self, root: Path, host: Host, sysfs: DryRunSysfs):
        super().__init__(root, host)
        self.sysfs = sysfs
        self.changed: dict[str, bool] = {}

    def is_loaded(self, module: str) -> bool:
        return self.changed.get(canonical(module), super().is_loaded(module))

    def load(self, module: str) -> None:
        self.host.record(f"modprobe {module}", f"{module}: not loaded → loaded")
        self.changed[canonical(module)] = True
        driver_dir = f"bus/pci/drivers/{driver_names(module)[0]}"
        self.sysfs.overlay.added.add(driver_dir)
        self.sysfs.overlay.removed.discard(driver_dir)

    def unload(self, module: str) -> None:
        self.host.refuse_if_driver_stuck(driver_names(module), f"unload {module}")
        self.host.record(f"modprobe -r {module}", f"{module}: loaded → not loaded")
        self.changed[canonical(module)] = False
        driver_dir = f"bus/pci/drivers/{driver_names(module)[0]}"
        self.sysfs.overlay.removed.add(driver_dir)
        self.sysfs.overlay.added.discard(driver_dir)


class PredictedNodeDevices:
    """What libvirt's node-device calls do to sysfs (virpci.c), predicted; no daemon needed."""

    def __init__(self, sysfs: DryRunSysfs, host: Host):
        self.sysfs = sysfs
        self.host = host

    def _reprobe(self, address: str, override: str) -> None:
        """Both calls are the same sysfs sequence, only the override differs."""
        model = self.sysfs.model
        model.write(f"bus/pci/devices/{address}/driver_override", override)
        if model.driver(address):
            model.write(f"bus/pci/devices/{address}/driver/unbind", address)
        model.write("bus/pci/drivers_probe", address)

    def detach(self, address: str, driver: str, effect: str) -> None:
        self.host.refuse_if_stuck(address, "detach it through libvirt")
        self.host.record(f"libvirt nodedev-detach {nodedev_name(address)} --driver vfio", effect)
        self._reprobe(address, "vfio-pci")

    def reattach(self, address: str, effect: str, previous_driver: str | None = None) -> None:
        self.host.refuse_if_stuck(address, "reattach it through libvirt")
        self.host.record(f"libvirt nodedev-reattach {nodedev_name(address)}", effect)
        if previous_driver:
            self.sysfs.native_hints[address] = previous_driver
        self._reprobe(address, "\n")


def make_dry_run_host(root: str | Path = "/") -> Host:
    root_path = Path(root)
    host = Host(root=root_path, dry_run=True)
    sysfs = DryRunSysfs(root_path, host)
    host.sysfs = sysfs
    host.modules = PredictedModules(root_path, host, sysfs)
    host.nodedev = PredictedNodeDevices(sysfs, host)
    host.commands = RecordedCommands(root_path, host)
    host.procfs = RecordedProcfs(root_path, host)
    return host
