"""What the Linux PCI core does when its sysfs control files are written (kernel 6.1).

Used twice: the dry run predicts the effect of each write on an in-memory overlay of the
host, and the test suite's fake kernel applies it to a pyfakefs tree. Behaviour follows
../shared/notes/kernel-sysfs.md, traps included: drivers_probe reports success even when
nothing binds, an unknown driver in driver_override is accepted silently, resizing a
bound device is EBUSY, an unsupported size EINVAL.

A BAR resize (drivers/pci/pci-sysfs.c __resource_resize_store, setup-res.c
pci_resize_resource) does more than resize:
- EBUSY while a driver is bound or SR-IOV VFs are enabled (sriov_numvfs > 0).
- On a VGA-class device (class 0x0300) it first calls aperture_remove_conflicting_pci_devices
  (drivers/video/aperture.c), before the size is even checked: the firmware framebuffer
  (sysfb's efi-framebuffer.N / simple-framebuffer.N, which efifb or simpledrm drive) is
  unregistered for good (sysfb_disable) when this is the default VGA device, and on
  kernels from 6.0.3 (commit ee7a69aa38d8) until commit 5ae3716cfdcd (6.5, 6.1.47) for any
  VGA-class device, another GPU's console included; vgacon, when bound, hands the
  consoles to the dummy console if this is the default VGA device.
- Every BAR with the same flags as the one resized is released and all are assigned
  again: other BARs may move. When the upstream bridge's window of that type still holds
  other devices' BARs, it cannot be released (pci_reassign_bridge_resources: ENOENT);
  when the bigger window finds no room above it, ENOSPC. Either way the old size is
  written back and the BARs go back where they were.

Binding: `drivers/X/bind` is ENODEV when X does not match the device (driver_override
names another driver; X's id table and dynamic ids do not list it), EBUSY when it
matches but the device has a driver (5.13+). Dynamic ids (`new_id`, or vfio-pci's `ids=`
at module load) make the driver take every unbound matching device at once, and a later
drivers_probe of such a device lands on that driver when it registered before the
device's own driver (vfio-pci loaded at boot, as `ids=` setups do).
"""

from __future__ import annotations

import errno
import re
from collections.abc import Callable
from typing import Protocol

from ..constants import RESET_METHODS
from .kernel_files import SystemFiles
from .vga import (
    PLATFORM_DEVICES,
    VTCONSOLES,
    resize_removals,
)

_DEVICE_FILE = re.compile(r"^bus/pci/devices/([^/]+)/(.+)$")
_DRIVER_FILE = re.compile(r"^bus/pci/drivers/([^/]+)/(bind|unbind|new_id|remove_id)$")
_RESIZE = re.compile(r"^resource(\d)_resize$")
_ID = re.compile(r"^([0-9a-fA-F]{1,4})\s+([0-9a-fA-F]{1,4})(\s|$)")
PREFETCH = 0x2000  # IORESOURCE_PREFETCH in the flags column of `resource`
BRIDGE_MEM_WINDOW, BRIDGE_PREFETCH_WINDOW = 14, 15  # lines of a bridge's `resource`
MIB = 1 << 20

NO_OVERRIDE = "(null)"


def parse_resource(text: str | None) -> list[tuple[int, int, int]]:
    return [tuple(int(p, 16) for p in line.split()) for line in (text or "").splitlines()]  # type: ignore[misc]


class Store(Protocol):
    """A sysfs tree the model changes; paths relative to /sys, through bus/pci/devices/."""

    def read(self, rel: str) -> str | None: ...
    def set_text(self, rel: str, text: str) -> None: ...
    def link_name(self, rel: str) -> str | None: ...
    def set_driver_link(self, address: str, driver: str | None) -> None: ...
    def exists(self, rel: str) -> bool: ...
    def listdir(self, rel: str) -> list[str]: ...
    def set_link(self, rel: str, target: str | None) -> None: ...
    def upstream(self, address: str) -> str | None: ...
    def remove_device(self, address: str) -> None: ...
    def rescan_devices(self) -> list[str]: ...


class KernelModel:
    def __init__(
        self,
        store: Store,
        native_driver: Callable[[str], str | None],
        can_bind: Callable[[str, str], bool] = lambda address, driver: True,
        files: SystemFiles | None = None,
        sysfb_any_vga: bool | None = False,
        window_room: Callable[[str], int | None] = lambda bridge: None,
        default_reset_method: Callable[[str], str | None] = lambda address: None,
    ):
        self.store = store
        # Control files outside the PCI bus (consoles, hugepages, cpufreq, cgroups).
        self.files = files or SystemFiles(store)
        # The driver the kernel's id tables would pick for a device without override.
        self.native_driver = native_driver
        # Whether a driver's probe succeeds (vfio-pci fails without an IOMMU, for example).
        self.can_bind = can_bind
        self.sysfb_any_vga = sysfb_any_vga
        # The largest window of a bridge its parent has room for (None: no limit known).
        self.window_room = window_room
        # Dynamic ids per driver ("1002:73df"), from new_id or a module's ids= at load, and
        # the drivers that registered during this run (after the devices' own drivers).
        self.dynamic_ids: dict[str, set[str]] = {}
        self.late_drivers: set[str] = set()
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
            return self.new_id(driver, text) if verb == "new_id" else self.remove_id(driver, text)
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

    def device_id(self, address: str) -> str:
        rel = f"bus/pci/devices/{address}"
        vendor, device = (
            (self.store.read(f"{rel}/{name}") or "0x0000")[2:].lower()
            for name in ("vendor", "device")
        )
        return f"{vendor}:{device}"

    def matches(self, address: str, driver: str) -> bool:
        """driver_match_device: the override alone decides when set; otherwise the driver's
        dynamic ids or (as far as the model knows) its id table."""
        override = self.override(address)
        if override is not None:
            return override == driver
        return self.device_id(address) in self.dynamic_ids.get(driver, set()) or (
            self.native_driver(address) == driver
        )

    def probe(self, address: str) -> None:
        if not self.store.exists(f"bus/pci/devices/{address}"):
            raise OSError(errno.ENODEV, "No such device")
        if self.driver(address) is not None:
            return
        wanted = self.override(address)
        if wanted is None:
            native = self.native_driver(address)
            # Drivers are tried in the order they registered: a dynamic id of a driver loaded
            # before the device's own one (vfio-pci with ids= at boot) wins.
            dynamic = [
                d
                for d, ids in self.dynamic_ids.items()
                if self.device_id(address) in ids and self.store.exists(f"bus/pci/drivers/{d}")
            ]
            early = [d for d in dynamic if d not in self.late_drivers]
            if early:
                wanted = early[0]
            elif native and self.store.exists(f"bus/pci/drivers/{native}"):
                wanted = native
            else:
                wanted = dynamic[0] if dynamic else native
        # The trap: success is returned whether or not a driver took the device.
        if (
            wanted
            and self.store.exists(f"bus/pci/drivers/{wanted}")
            and self.can_bind(address, wanted)
        ):
            self.store.set_driver_link(address, wanted)

    def bind(self, address: str, driver: str) -> None:
        if not self.store.exists(f"bus/pci/devices/{address}") or not self.matches(address, driver):
            raise OSError(errno.ENODEV, "No such device")
        if self.driver(address) is not None:
            raise OSError(errno.EBUSY, "Device or resource busy")  # 5.13+; ENODEV before
        if not self.can_bind(address, driver):
            raise OSError(errno.EINVAL, "Invalid argument")
        self.store.set_driver_link(address, driver)

    # --- dynamic ids --------------------------------------------------------------------------

    def new_id(self, driver: str, text: str) -> None:
        """`new_id "VVVV DDDD"`: the driver takes every unbound device that matches, at once."""
        match = _ID.match(text)
        if not match:
            raise OSError(errno.EINVAL, "Invalid argument")
        self.add_ids(driver, {f"{int(match.group(1), 16):04x}:{int(match.group(2), 16):04x}"})

    def remove_id(self, driver: str, text: str) -> None:
        """`remove_id`: forgets the id; devices it bound stay bound."""
        match = _ID.match(text)
        wanted = match and f"{int(match.group(1), 16):04x}:{int(match.group(2), 16):04x}"
        if not wanted or wanted not in self.dynamic_ids.get(driver, set()):
            raise OSError(errno.ENODEV, "No such device")
        self.dynamic_ids[driver].discard(wanted)

    def add_ids(self, driver: str, ids: set[str]) -> list[str]:
        """Ids given to a driver (new_id, or ids= when its module loads): it then probes
        every unbound device matching them. Returns the devices it took."""
        self.dynamic_ids.setdefault(driver, set()).update(i.lower() for i in ids)
        taken = []
        for address in self.store.listdir("bus/pci/devices"):
            if (
                self.driver(address) is None
                and self.override(address) in (None, driver)
                and self.device_id(address) in self.dynamic_ids[driver]
                and self.can_bind(address, driver)
            ):
                self.store.set_driver_link(address, driver)
                taken.append(address)
        return taken

    def driver_registered(self, driver: str, ids: set[str] = frozenset()) -> list[str]:  # type: ignore[assignment]
        """A driver's module loaded during this run, with its ids= option; returns the
        unbound devices it took."""
        self.late_drivers.add(driver)
        return self.add_ids(driver, set(ids)) if ids else []

    # --- BAR resize ---------------------------------------------------------------------------

    def resize(self, address: str, bar: int, value: str) -> None:
        try:
            exponent = int(value, 0)  # the kernel parses with base 0: "08" is invalid octal
        except ValueError:
            raise OSError(errno.EINVAL, "Invalid argument") from None
        rel = f"bus/pci/devices/{address}"
        if self.driver(address) is not None or int(self.store.read(f"{rel}/sriov_numvfs") or "0"):
            raise OSError(errno.EBUSY, "Device or resource busy")
        # aperture_remove_conflicting_pci_devices runs before the size is looked at.
        self.remove_conflicting(address)
        bitmap = int(self.store.read(f"{rel}/resource{bar}_resize") or "0", 16)
        if exponent < 0 or exponent > 63 or not bitmap >> exponent & 1:
            raise OSError(errno.EINVAL, "Invalid argument")
        bars = parse_resource(self.store.read(f"{rel}/resource"))
        flags = bars[bar][2]
        # Every BAR with the same flags is released; all are assigned again together.
        released = {
            n: (end - start + 1)
            for n, (start, end, f) in enumerate(bars[:6])
            if f == flags and end > start
        }
        released[bar] = 1 << (20 + exponent)
        placed = self.reassign(address, released, flags, bars[bar][0])
        for n, start in placed.items():
            bars[n] = (start, start + released[n] - 1, flags)
        self.store.set_text(f"{rel}/resource", "\n".join(resource_line(*line) for line in bars))

    def reassign(
        self, address: str, sizes: dict[int, int], flags: int, start: int
    ) -> dict[int, int]:
        """Where the released BARs go (BAR -> start), largest first, each aligned to its size,
        in the upstream bridge's window; the window is released and grown when nothing else
        is in it. Raises ENOENT / ENOSPC as pci_reassign_bridge_resources does, and then
        nothing has changed. Without a bridge window to go by, BARs keep their starts."""
        bridge = self.store.upstream(address)
        line = BRIDGE_PREFETCH_WINDOW if flags & PREFETCH else BRIDGE_MEM_WINDOW
        windows = (
            parse_resource(self.store.read(f"bus/pci/devices/{bridge}/resource")) if bridge else []
        )
        own = parse_resource(self.store.read(f"bus/pci/devices/{address}/resource"))
        if bridge is None or len(windows) <= line or windows[line][1] <= windows[line][0]:
            return {n: own[n][0] for n in sizes}
        base, end, window_flags = windows[line]
        # The window is released only when nothing else is left in it: another device's BAR
        # of that type, or one of this device's that was not released (other flags).
        left = [(other, n) for n, bar in enumerate(own[:6]) if n not in sizes for other in [bar]]
        for other in self.store.listdir("bus/pci/devices"):
            if other != address and self.store.upstream(other) == bridge:
                bars = parse_resource(self.store.read(f"bus/pci/devices/{other}/resource"))[:6]
                left += [(bar, n) for n, bar in enumerate(bars)]
        for (o_start, o_end, o_flags), _n in left:
            if (
                o_end > o_start
                and base <= o_start <= end
                and o_flags & PREFETCH == flags & PREFETCH
            ):
                raise OSError(errno.ENOENT, "No such file or directory")
        placed, cursor = {}, base
        for n in sorted(sizes, key=lambda n: (-sizes[n], n)):
            cursor = -(-cursor // sizes[n]) * sizes[n]
            placed[n] = cursor
            cursor += sizes[n]
        needed = -(-(cursor - base) // MIB) * MIB
        if needed > end - base + 1:
            room = self.window_room(bridge)
            if room is not None and needed > room:
                raise OSError(errno.ENOSPC, "No space left on device")
            windows[line] = (base, base + needed - 1, window_flags)
            self.store.set_text(
                f"bus/pci/devices/{bridge}/resource",
                "\n".join(resource_line(*w) for w in windows),
            )
        return placed

    def remove_conflicting(self, address: str) -> None:
        """aperture_remove_conflicting_pci_devices on a VGA-class device: the firmware
        framebuffers go (their platform devices unregistered), and vgacon hands the
        consoles to the dummy console."""
        for kind, name in resize_removals(self.store, address, self.sysfb_any_vga):
            if kind == "framebuffer":
                driver = self.store.link_name(f"{PLATFORM_DEVICES}/{name}/driver")
                if driver:
                    self.store.set_link(f"bus/platform/drivers/{driver}/{name}", None)
                self.store.set_link(f"{PLATFORM_DEVICES}/{name}", None)
            else:
                self.store.set_text(f"{VTCONSOLES}/{name}/bind", "0")
                consoles = self.store.listdir(VTCONSOLES)
                dummy = next(
                    (
                        c
                        for c in consoles
                        if "dummy" in (self.store.read(f"{VTCONSOLES}/{c}/name") or "")
                    ),
                    None,
                )
                if dummy is None:  # do_take_over_console registers the dummy console
                    numbers = [int(c[5:]) for c in consoles if c[5:].isdigit()]
                    dummy = f"vtcon{max(numbers, default=-1) + 1}"
                    self.store.set_text(f"{VTCONSOLES}/{dummy}/name", "(S) dummy device")
                self.store.set_text(f"{VTCONSOLES}/{dummy}/bind", "1")

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
