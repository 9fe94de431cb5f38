"""What the Linux PCI core does when its sysfs control files are written (kernel 6.1).

Used twice: the dry run predicts the effect of each write on an in-memory overlay of the
host, and the test suite's fake kernel applies it to a pyfakefs tree. Behaviour follows
../shared/notes/kernel-sysfs.md, traps included: drivers_probe reports success even when
nothing binds, an unknown driver in driver_override is accepted silently, resizing a
bound device is EBUSY, an unsupported size EINVAL.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Callable
from typing import Protocol

from .kernel_files import SystemFiles

_DEVICE_FILE = re.compile(r"^bus/pci/devices/([^/]+)/(.+)$")
_DRIVER_FILE = re.compile(r"^bus/pci/drivers/([^/]+)/(bind|unbind|new_id|remove_id)$")
_RESIZE = re.compile(r"^resource(\d)_resize$")

NO_OVERRIDE = "(null)"
# The names the kernel accepts in reset_method (drivers/pci/pci.c pci_reset_fn_methods).
RESET_METHODS = ("device_specific", "acpi", "flr", "af_flr", "pm", "bus", "cxl_bus")


class Store(Protocol):
    """A sysfs tree the model changes; paths relative to /sys, through bus/pci/devices/."""

    def read(self, rel: str) -> str | None: ...
    def set_text(self, rel: str, text: str) -> None: ...
    def link_name(self, rel: str) -> str | None: ...
    def set_driver_link(self, address: str, driver: str | None) -> None: ...
    def exists(self, rel: str) -> bool: ...
    def remove_device(self, address: str) -> None: ...
    def rescan_devices(self) -> list[str]: ...


class KernelModel:
    def __init__(
        self,
        store: Store,
        native_driver: Callable[[str], str | None],
        can_bind: Callable[[str, str], bool] = lambda address, driver: True,
        files: SystemFiles | None = None,
        default_reset_method: Callable[[str], str | None] = lambda address: None,
    ):
        self.store = store
        # Control files outside the PCI bus (consoles, hugepages, cpufreq, cgroups).
        self.files = files or SystemFiles(store)  # type: ignore[arg-type]
        # The driver the kernel's id tables would pick for a device without override.
        self.native_driver = native_driver
        # Whether a driver's probe succeeds (vfio-pci fails without an IOMMU, for example).
        self.can_bind = can_bind
        # The reset methods the kernel found for a device at enumeration (`default`).
        self.default_reset_method = default_reset_method

    def write(self, rel: str, value: str) -> None:
        """Apply a write; raises OSError with the kernel's errno."""
        text = value.strip()
        if not rel.startswith("bus/pci/"):
            return self.files.write(rel, value)
        if rel == "bus/pci/drivers_probe":
            return self.probe(text)
        if rel == "bus/pci/rescan":
            return self.rescan(text)
        match = _DRIVER_FILE.match(rel)
        if match:
            driver, verb = match.groups()
            if verb == "bind":
                return self.bind(text, driver)
            if verb == "unbind":
                if self.driver(text) != driver:
                    raise OSError(errno.ENODEV, "No such device")
                return self.store.set_driver_link(text, None)
            return None  # new_id / remove_id: the project never writes them
        match = _DEVICE_FILE.match(rel)
        if not match or not self.store.exists(f"bus/pci/devices/{match.group(1)}"):
            raise OSError(errno.ENOENT, "No such file or directory")
        address, name = match.groups()
        if name == "driver_override":
            return self.store.set_text(rel, text or NO_OVERRIDE)
        if name == "driver/unbind":
            if self.driver(address) is None:
                raise OSError(errno.ENOENT, "No such file or directory")
            return self.store.set_driver_link(address, None)
        if name == "remove":
            return self.remove(address, text)
        if name == "reset_method":
            return self.set_reset_method(rel, text)
        resize = _RESIZE.match(name)
        if resize:
            return self.resize(address, int(resize.group(1)), text)
        return self.store.set_text(rel, text)

    def driver(self, address: str) -> str | None:
        return self.store.link_name(f"bus/pci/devices/{address}/driver")

    def override(self, address: str) -> str | None:
        value = self.store.read(f"bus/pci/devices/{address}/driver_override")
        return None if value in (None, "", NO_OVERRIDE) else value

    def probe(self, address: str) -> None:
        if not self.store.exists(f"bus/pci/devices/{address}"):
            raise OSError(errno.ENODEV, "No such device")
        if self.driver(address) is not None:
            return
        wanted = self.override(address) or self.native_driver(address)
        # The trap: success is returned whether or not a driver took the device.
        if (
            wanted
            and self.store.exists(f"bus/pci/drivers/{wanted}")
            and self.can_bind(address, wanted)
        ):
            self.store.set_driver_link(address, wanted)

    def bind(self, address: str, driver: str) -> None:
        if not self.store.exists(f"bus/pci/devices/{address}"):
            raise OSError(errno.ENODEV, "No such device")
        if self.driver(address) is not None:
            raise OSError(errno.ENODEV, "No such device")  # bound elsewhere: the kernel says ENODEV
        override = self.override(address)
        if override is not None and override != driver:
            raise OSError(errno.ENODEV, "No such device")
        if not self.can_bind(address, driver):
            raise OSError(errno.EINVAL, "Invalid argument")
        self.store.set_driver_link(address, driver)

    def resize(self, address: str, bar: int, value: str) -> None:
        try:
            exponent = int(value, 0)  # the kernel parses with base 0: "08" is invalid octal
        except ValueError:
            raise OSError(errno.EINVAL, "Invalid argument") from None
        if self.driver(address) is not None:
            raise OSError(errno.EBUSY, "Device or resource busy")
        bitmap = int(self.store.read(f"bus/pci/devices/{address}/resource{bar}_resize") or "0", 16)
        if exponent < 0 or exponent > 63 or not bitmap >> exponent & 1:
            raise OSError(errno.EINVAL, "Invalid argument")
        rel = f"bus/pci/devices/{address}/resource"
        lines = (self.store.read(rel) or "").splitlines()
        start, _end, flags = (int(part, 16) for part in lines[bar].split())
        lines[bar] = resource_line(start, start + (1 << (20 + exponent)) - 1, flags)
        self.store.set_text(rel, "\n".join(lines))

    # --- modules: driver registration ---------------------------------------------------------

    def unregister_driver(self, driver: str, addresses: list[str]) -> list[str]:
        """A module unload unregisters its driver: every device on it is unbound and stays
        driverless (its driver_override is kept). Returns those devices."""
        left = [a for a in addresses if self.driver(a) == driver]
        for address in left:
            self.store.set_driver_link(address, None)
        return left

    def register_driver(self, driver: str, addresses: list[str]) -> list[str]:
        """A module load registers its driver, which probes every driverless device it
        matches: its driver_override, or without one its id table. Returns those bound."""
        bound = []
        for address in addresses:
            if self.driver(address) is not None:
                continue
            if (self.override(address) or self.native_driver(address)) != driver:
                continue
            if self.can_bind(address, driver):
                self.store.set_driver_link(address, driver)
                bound.append(address)
        return bound

    # --- remove and rescan ----------------------------------------------------------------------

    def remove(self, address: str, value: str) -> None:
        """`echo 1 > remove`: the driver is unbound and the function leaves the bus (its
        directory is gone); other values are ignored, as the kernel ignores them."""
        try:
            if int(value, 0) == 0:
                return
        except ValueError:
            raise OSError(errno.EINVAL, "Invalid argument") from None
        if self.driver(address) is not None:
            self.store.set_driver_link(address, None)
        self.store.remove_device(address)

    def rescan(self, value: str) -> None:
        """`echo 1 > /sys/bus/pci/rescan`: removed functions come back as new devices (no
        driver_override) and are probed (their native driver binds)."""
        try:
            if int(value, 0) == 0:
                return
        except ValueError:
            raise OSError(errno.EINVAL, "Invalid argument") from None
        for address in self.store.rescan_devices():
            self.store.set_text(f"bus/pci/devices/{address}/driver_override", NO_OVERRIDE)
            default = self.default_reset_method(address)
            if default is not None:
                self.store.set_text(f"bus/pci/devices/{address}/reset_method", default)
            self.probe(address)

    def set_reset_method(self, rel: str, text: str) -> None:
        """`default`, empty (all methods off), or supported method names in order; any
        other name is EINVAL."""
        if text == "":
            return self.store.set_text(rel, "")
        if text == "default":
            default = self.default_reset_method(rel.split("/")[3])
            return self.store.set_text(rel, default if default is not None else text)
        names = text.split()
        # Only methods the device supports: those found at enumeration (device_specific
        # needs a quirk or vendor-reset).
        default = self.default_reset_method(rel.split("/")[3])
        supported = default.split() if default is not None else RESET_METHODS
        if any(name not in supported for name in names) or len(set(names)) != len(names):
            raise OSError(errno.EINVAL, "Invalid argument")
        return self.store.set_text(rel, " ".join(names))


def resource_line(start: int, end: int, flags: int) -> str:
    return f"0x{start:016x} 0x{end:016x} 0x{flags:016x}"
