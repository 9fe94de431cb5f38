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


class Store(Protocol):
    """A sysfs tree the model changes; paths relative to /sys, through bus/pci/devices/."""

    def read(self, rel: str) -> str | None: ...
    def set_text(self, rel: str, text: str) -> None: ...
    def link_name(self, rel: str) -> str | None: ...
    def set_driver_link(self, address: str, driver: str | None) -> None: ...
    def exists(self, rel: str) -> bool: ...


class KernelModel:
    def __init__(
        self,
        store: Store,
        native_driver: Callable[[str], str | None],
        can_bind: Callable[[str, str], bool] = lambda address, driver: True,
        files: SystemFiles | None = None,
    ):
        self.store = store
        # Control files outside the PCI bus (consoles, hugepages, cpufreq, cgroups).
        self.files = files or SystemFiles(store)  # type: ignore[arg-type]
        # The driver the kernel's id tables would pick for a device without override.
        self.native_driver = native_driver
        # Whether a driver's probe succeeds (vfio-pci fails without an IOMMU, for example).
        self.can_bind = can_bind

    def write(self, rel: str, value: str) -> None:
        """Apply a write; raises OSError with the kernel's errno."""
        text = value.strip()
        if not rel.startswith("bus/pci/"):
            return self.files.write(rel, value)
        if rel == "bus/pci/drivers_probe":
            return self.probe(text)
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


def resource_line(start: int, end: int, flags: int) -> str:
    return f"0x{start:016x} 0x{end:016x} 0x{flags:016x}"
