"""The dry-run host: reads the real host (or --root tree), changes nothing.

Every change is recorded as an Operation and its effect is predicted on an in-memory
overlay with the same KernelModel the fake kernel uses, so later steps see what earlier
steps would have done (a resize after a detach knows the device is on vfio-pci).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from ..desktop import stopped_by
from ..pci import is_stub_driver
from ..processes import all_processes
from ..units import is_pci_address, nodedev_name
from . import Host
from .commands import RecordedCommands
from .kernel_model import KernelModel
from .modules import Modules, canonical, configured_ids, driver_names
from .procfs import RecordedProcfs
from .sysfs import Sysfs
from .vga import sysfb_policy

T = TypeVar("T")

_DRIVER_LINK = re.compile(r"^bus/pci/devices/([^/]+)/driver$")
_DRIVER_DIR = re.compile(r"^bus/pci/drivers/([^/]+)$")
_DEVICE_PATH = re.compile(r"^bus/pci/devices/([^/]+)(/.*)?$")


class Overlay:
    """The model's store: predicted texts and driver links over the real tree."""

    def __init__(self, real: Sysfs):
        self.real = real
        self.texts: dict[str, str] = {}
        self.drivers: dict[str, str | None] = {}
        self.added: set[str] = set()
        self.removed: set[str] = set()
        self.off_bus: set[str] = set()  # functions written to `remove`, until a rescan

    def _gone(self, rel: str) -> bool:
        """rel is under a function written to `remove`, or rel or a link on its path was
        removed (a platform device unregistered)."""
        match = _DEVICE_PATH.match(rel)
        if match is not None and match.group(1) in self.off_bus:
            return True
        parts = rel.split("/")
        return any("/".join(parts[:n]) in self.removed for n in range(1, len(parts) + 1))

    def read(self, rel: str) -> str | None:
        if self._gone(rel):
            return None
        return self.texts[rel] if rel in self.texts else self.real.read(rel)

    def set_text(self, rel: str, text: str) -> None:
        self.texts[rel] = text

    def link_name(self, rel: str) -> str | None:
        if self._gone(rel):
            return None
        match = _DRIVER_LINK.match(rel)
        if match and match.group(1) in self.drivers:
            return self.drivers[match.group(1)]
        return None if self._gone(rel) else self.real.link_name(rel)

    def set_driver_link(self, address: str, driver: str | None) -> None:
        self.drivers[address] = driver

    def set_link(self, rel: str, target: str | None) -> None:
        """A symlink outside the PCI bus appears (target given) or goes (platform drivers)."""
        (self.added if target else self.removed).add(rel)
        (self.removed if target else self.added).discard(rel)

    def remove_device(self, address: str) -> None:
        self.off_bus.add(address)

    def rescan_devices(self) -> list[str]:
        back, self.off_bus = sorted(self.off_bus), set()
        return back

    def listdir(self, rel: str) -> list[str]:
        """The real entries, less those removed, with those the model made (files it wrote)."""
        entries = {e for e in self.real.listdir(rel) if f"{rel}/{e}" not in self.removed}
        prefix = rel + "/"
        for path in (*self.added, *self.texts):
            if path.startswith(prefix):
                entries.add(path[len(prefix) :].split("/", 1)[0])
        return sorted(entries)

    def upstream(self, address: str) -> str | None:
        """The bridge above a device: the parent directory of its /sys/devices path."""
        parent = self.real.kernel_path(f"bus/pci/devices/{address}").rsplit("/", 2)[-2]
        return parent if is_pci_address(parent) else None

    def exists(self, rel: str) -> bool:
        if self._gone(rel):
            return False
        if rel in self.added or rel in self.texts:
            return True
        if self._gone(rel):
            return False
        match = re.match(r"^bus/pci/devices/([^/]+)/driver(/.*)?$", rel)
        if match and match.group(1) in self.drivers:
            return self.drivers[match.group(1)] is not None
        return self.real.exists(rel)


class DryRunSysfs(Sysfs):
    def __init__(self, root: str | os.PathLike, host: Host):
        super().__init__(root, host)
        real = Sysfs(root, host)
        self.overlay = Overlay(real)
        self.model = KernelModel(
            self.overlay,
            native_driver=self.native_driver,
            sysfb_any_vga=sysfb_policy(root),
            default_reset_method=lambda address: real.read(
                f"bus/pci/devices/{address}/reset_method"
            ),
        )
        self.native_hints: dict[str, str] = {}
        # vfio-pci loaded already (at boot, with its ids= option): its ids are live.
        if real.exists("bus/pci/drivers/vfio-pci"):
            ids = {device_id for device_id, _where in configured_ids(root)}
            if ids:
                self.model.dynamic_ids["vfio-pci"] = ids

    def addresses(self) -> list[str]:
        """The functions on the bus, as predicted."""
        return self.listdir("bus/pci/devices")

    def native_driver(self, address: str) -> str | None:
        """Predicted choice of the kernel's id tables: the driver the device has now, or the one
        it had before a detach (hinted by reattach), never a stub driver."""
        if address in self.native_hints:
            return self.native_hints[address]
        current = self.overlay.real.link_name(f"bus/pci/devices/{address}/driver")
        return None if is_stub_driver(current) else current

    def read(self, rel: str) -> str | None:
        self.where(rel)
        return self.overlay.read(rel)

    def link_name(self, rel: str) -> str | None:
        self.where(rel)
        return self.overlay.link_name(rel)

    def exists(self, rel: str) -> bool:
        self.where(rel)
        return self.overlay.exists(rel)

    def listdir(self, rel: str) -> list[str]:
        """A driver's directory lists the devices predicted bound to it, so undoing a modprobe
        after a predicted detach back to the host driver knows vfio-pci drives nothing."""
        if not self.exists(rel):
            return []
        entries = set(self.overlay.listdir(rel))
        if rel == "bus/pci/devices":
            entries -= self.overlay.off_bus
        match = _DRIVER_DIR.match(rel)
        if match:
            for address, driver in self.overlay.drivers.items():
                if driver == match.group(1):
                    entries.add(address)
                else:
                    entries.discard(address)
        return sorted(entries)

    def _apply(self, rel: str, path: str, value: str) -> None:
        self.model.write(rel, value)

    def _write_detached(self, rel: str, path: str, value: str, what: str) -> None:
        self.model.write(rel, value)  # predicted in this process: no helper, nothing can block


class PredictedModules(Modules):
    """modprobe predicted on the overlay: an unload unregisters the module's PCI drivers
    (their devices left driverless) and takes the dependencies nothing else uses with it,
    as `modprobe -r` does; a load registers the drivers, which probe the driverless devices
    they match."""

    def __init__(self, root: str | os.PathLike, host: Host, sysfs: DryRunSysfs):
        super().__init__(root, host)
        self.sysfs = sysfs
        self.changed: dict[str, bool] = {}
        self.drivers_of: dict[str, list[str]] = {}  # drivers an unload predicted gone

    def is_loaded(self, module: str) -> bool:
        return self.changed.get(canonical(module), super().is_loaded(module))

    def loaded(self) -> set[str]:
        names = super().loaded() | {m for m, now in self.changed.items() if now}
        return {m for m in names if self.changed.get(m, True)}

    def usage(self, module: str) -> tuple[int, list[str]]:
        """What /proc/modules shows now, less the users predicted unloaded."""
        count, users = super().usage(module)
        gone = [u for u in users if not self.is_loaded(u)]
        return max(0, count - len(gone)), [u for u in users if u not in gone]

    def load(self, module: str, drivers: tuple[str, ...] = ()) -> None:
        self.host.refuse_if_module_stuck(module, f"load {module}")
        self.host.record(f"modprobe {module}", f"{module}: not loaded → loaded")
        name = canonical(module)
        self.changed[name] = True
        configured = configured_ids(self.root, module)
        ids = {device_id for device_id, _where in configured}
        for driver in self.drivers_of.pop(name, None) or list(drivers) or [driver_names(module)[0]]:
            driver_dir = f"bus/pci/drivers/{driver}"
            self.sysfs.overlay.added.add(driver_dir)
            self.sysfs.overlay.removed.discard(driver_dir)
            for address in self.sysfs.model.driver_registered(driver, ids):
                device_id = self.sysfs.model.device_id(address)
                where = next(w for i, w in configured if i == device_id)
                self.host.record(
                    f"{driver} takes {address}: unbound and listed in ids={device_id} ({where})",
                    f"no driver → {driver}",
                )
            self.sysfs.model.register_driver(driver, self.sysfs.addresses())

    def unload(self, module: str) -> None:
        self.refuse_unload(module)
        self.host.record(f"modprobe -r {module}", f"{module}: loaded → not loaded")
        self._remove(canonical(module))

    def _remove(self, name: str) -> None:
        drivers = self.pci_drivers(name) or [driver_names(name)[0]]
        dependencies = self.dependencies(name)
        self.drivers_of[name] = drivers
        for driver in drivers:
            for address in self.sysfs.model.unregister_driver(driver, self.sysfs.addresses()):
                self.sysfs.native_hints.setdefault(address, driver)
            driver_dir = f"bus/pci/drivers/{driver}"
            self.sysfs.overlay.removed.add(driver_dir)
            self.sysfs.overlay.added.discard(driver_dir)
        self.changed[name] = False
        for dependency in dependencies:
            if self.usage(dependency)[0] == 0 and not self.is_builtin(dependency):
                self._remove(dependency)


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


class PredictedProcfs(RecordedProcfs):
    """/proc without the processes that the recorded commands would have ended, so a later
    step's holder scan sees the GPU free once a display manager stop or a kill_holders
    step would have ended its users."""

    def __init__(self, root: str | os.PathLike, host: Host):
        super().__init__(root, host)
        self.ended: set[str] = set()

    def end(self, pids: list[int]) -> None:
        self.ended.update(str(pid) for pid in pids)
        self.host.step_cache.pop("open_files", None)  # the holder scan of this step is stale

    def _gone(self, rel: str) -> bool:
        return rel.split("/", 1)[0] in self.ended

    def read(self, rel: str) -> str | None:
        return None if self._gone(rel) else super().read(rel)

    def link(self, rel: str) -> str | None:
        return None if self._gone(rel) else super().link(rel)

    def listdir(self, rel: str = "") -> list[str]:
        if rel and self._gone(rel):
            return []
        return [name for name in super().listdir(rel) if rel or name not in self.ended]


class PredictedCommands(RecordedCommands):
    """Commands are recorded, not run; what they would do to processes (systemctl stop,
    kill) is predicted with passthrough.desktop.stopped_by, as the fake systemd does it."""

    def run(
        self,
        argv: list[str],
        timeout: float | None = None,
        stdin: bytes | None = None,
        effect: str = "",
    ) -> str:
        super().run(argv, timeout, stdin, effect)
        procfs = self.host.procfs
        assert isinstance(procfs, PredictedProcfs)  # make_dry_run_host pairs them
        procfs.end([p.pid for p in stopped_by(self.root, argv, all_processes(self.host))])
        return ""


class PredictedClock:
    """The dry run's time: nothing blocks (every write is predicted), and a wait is over at
    once with what the predicted kernel shows."""

    def bounded(self, what: str, fn: Callable[[], T], limit: float) -> T:
        return fn()

    def wait_until(self, what: str, predicate: Callable[[], bool], seconds: float) -> bool:
        return predicate()


def make_dry_run_host(root: str | Path = "/") -> Host:
    root_path = os.fspath(root)
    host = Host(root=root_path, dry_run=True, clock=PredictedClock())
    sysfs = DryRunSysfs(root_path, host)
    host.sysfs = sysfs
    host.modules = PredictedModules(root_path, host, sysfs)
    host.nodedev = PredictedNodeDevices(sysfs, host)
    host.commands = PredictedCommands(root_path, host)
    host.procfs = PredictedProcfs(root_path, host)
    return host
