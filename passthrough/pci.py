"""One PCI function as sysfs shows it, and the driver moves the actions are made of.

Every bind or probe is verified through the `driver` link afterwards: the kernel
reports success for drivers_probe writes that bound nothing.
"""

from __future__ import annotations

import errno

from .constants import STUB_DRIVERS
from .errors import HostError
from .record import record
from .units import format_bytes

TYPE_CHECKING = False  # typing's constant, without importing typing (the hook's imports)
if TYPE_CHECKING:
    from collections.abc import Callable

    from .host import Host

NO_DRIVER = "no driver"
VFIO_PCI = "vfio-pci"


def is_vfio_driver(driver: str | None) -> bool:
    """vfio-pci or one of its variant drivers (mlx5_vfio_pci, nvgrace_gpu_vfio_pci,
    hisi_acc_vfio_pci, ...): they bind like vfio-pci and hand the device to VFIO."""
    return driver is not None and (driver == VFIO_PCI or driver.endswith("_vfio_pci"))


def is_stub_driver(driver: str | None) -> bool:
    """A driver that binds only when told to (driver_override, new_id, ids=), not by an id
    table: a device on one has an unknown host driver."""
    return driver in STUB_DRIVERS or is_vfio_driver(driver)


@record(frozen=True)
class Binding:
    """A device's driver and driver_override, as recorded in the journal."""

    driver: str | None
    override: str | None

    def to_json(self) -> dict:
        return {"driver": self.driver, "override": self.override}

    @classmethod
    def from_json(cls, data: dict) -> Binding:
        return cls(driver=data.get("driver"), override=data.get("override"))


def show(driver: str | None) -> str:
    return driver or NO_DRIVER


class PciDevice:
    def __init__(self, host: Host, address: str, label: str | None = None):
        self.host = host
        self.sysfs = host.sysfs
        self.address = address
        self.label = label or address
        self.rel = f"bus/pci/devices/{address}"

    def exists(self) -> bool:
        return self.sysfs.exists(self.rel)

    def require(self) -> None:
        if not self.exists():
            raise HostError(
                "no such PCI device on this host",
                device=self.address,
                hint="check the address with `lspci -D` and the profile's devices:",
            )

    def attribute(self, name: str) -> str | None:
        return self.sysfs.read(f"{self.rel}/{name}")

    def driver(self) -> str | None:
        return self.sysfs.link_name(f"{self.rel}/driver")

    def override(self) -> str | None:
        value = self.attribute("driver_override")
        return None if value in (None, "", "(null)") else value

    def binding(self) -> Binding:
        return Binding(self.driver(), self.override())

    def what(self) -> str:
        """What the function is, as lspci names its class: 'VGA compatible controller'."""
        from .tools.pcidb import class_name

        try:
            return class_name(int(self.attribute("class") or "", 16))
        except ValueError:
            return "PCI function"

    def iommu_group(self) -> str | None:
        return self.sysfs.link_name(f"{self.rel}/iommu_group")

    def driver_exists(self, driver: str) -> bool:
        return self.sysfs.exists(f"bus/pci/drivers/{driver}")

    # --- driver moves -----------------------------------------------------------------------

    def set_override(self, driver: str | None) -> None:
        if self.override() == driver:
            return
        self.sysfs.write(
            f"{self.rel}/driver_override",
            (driver or "") + "\n",
            device=self.address,
            effect=f"driver_override: {self.override() or 'none'} → {driver or 'none'}",
        )

    def unbind(self, check_holders: bool = True) -> None:
        current = self.driver()
        if current is None:
            return
        if check_holders:
            self.check_holders()
        self.sysfs.write(
            f"{self.rel}/driver/unbind",
            self.address,
            device=self.address,
            effect=f"{current} → {NO_DRIVER}",
        )

    def check_holders(self) -> None:
        """Refuse to unbind a device a process holds (the write would block in the kernel)."""
        from .holders import blocking, find_holders

        holders = find_holders(self.host, self.address)
        for holder in holders:
            self.host.record(
                f"open: {holder.describe(self.address)}",
                "will block the unbind" if holder in blocking(holders) else "sound: disconnected",
            )
        stuck = blocking(holders)
        if stuck and not self.host.force:
            raise HostError(
                "cannot unbind while in use: " + "; ".join(h.describe(self.address) for h in stuck),
                device=self.address,
                hint="stop those processes (display manager, compositor, a running VM), add a "
                "kill_holders step, or set force: true to unbind anyway",
            )

    def probe(self) -> None:
        self.sysfs.write("bus/pci/drivers_probe", self.address, device=self.address)

    def wait_for_driver(
        self, wanted: str | None, accept: Callable[[str | None], bool] | None = None
    ) -> bool:
        """Poll until the driver link shows wanted (or any driver accept() takes)."""
        matches = accept or (lambda driver: driver == wanted)
        return self.host.wait_until(
            f"{self.address} to bind {wanted}",
            lambda: matches(self.driver()),
            self.host.bind_wait,
        )

    def move_to(self, driver: str) -> None:
        """Bind to `driver` by the route that works for any driver: driver_override, unbind,
        drivers_probe; then verify. The override is left set so nothing else claims the device.
        The caller checks holders first (check_holders), before it journals anything."""
        before = self.driver()
        if before == driver and self.override() in (None, driver):
            return
        if not self.driver_exists(driver):
            raise HostError(
                f"driver {driver} is not loaded, so it cannot take the device",
                device=self.address,
                hint=f"add a modprobe step for it before this one (e.g. `modprobe: [{driver.replace('-', '_')}]`)",
            )
        self.set_override(driver)
        self.unbind(check_holders=False)
        self.probe()
        self.verify(driver, before)

    def restore(self, binding: Binding) -> None:
        """Return to a recorded binding: its driver (forced with driver_override, then verified)
        and its original driver_override."""
        if binding.driver is None:
            self.unbind()
        elif self.driver() != binding.driver:
            before = self.driver()
            if self.override() != binding.driver:
                self.sysfs.write(
                    f"{self.rel}/driver_override", binding.driver + "\n", device=self.address
                )
            self.unbind()
            self.probe()
            self.verify(binding.driver, before)
        self.set_override(binding.override)

    def verify(
        self, wanted: str, before: str | None, accept: Callable[[str | None], bool] | None = None
    ) -> None:
        """Check the driver link shows wanted; accept widens it (libvirt's detach to "vfio"
        may pick a vfio-pci variant driver, as virPCIDeviceFindBestVFIOVariant does)."""
        if self.wait_for_driver(wanted, accept):
            self.host.record(f"check {self.address} driver", f"{show(before)} → {self.driver()}")
            return
        now = self.driver()
        if now is None:
            raise HostError(
                f"{wanted} did not bind: the kernel accepted the probe but the device has no driver",
                device=self.address,
                hint=f"see `dmesg | grep {self.address}`; for vfio-pci check that the IOMMU is enabled "
                f"(`passthrough-hook iommu` says how on this host) and the whole IOMMU group is passed through",
            )
        raise HostError(f"expected driver {wanted} but {now} took the device", device=self.address)

    # --- BARs ---------------------------------------------------------------------------------

    def bar_size(self, bar: int) -> int | None:
        """Current size in bytes from line `bar` of the resource file (end - start + 1)."""
        lines = (self.attribute("resource") or "").splitlines()
        if bar >= len(lines):
            return None
        start, end, _flags = (int(part, 16) for part in lines[bar].split())
        return end - start + 1 if end else 0

    def resizable_sizes(self, bar: int) -> list[int] | None:
        """Supported sizes in MiB from resourceN_resize (bit n = 2^n MiB); None without ReBAR."""
        text = self.attribute(f"resource{bar}_resize")
        if text is None:
            return None
        bitmap = int(text, 16)
        return [1 << n for n in range(64) if bitmap >> n & 1]

    def resize(self, bar: int, exponent: int) -> None:
        """Write the size; say first what the kernel removes with it on a VGA-class device
        (firmware framebuffers, vgacon), and turn a failed bridge reassignment into advice."""
        from .host.vga import is_vga, resize_removals, sysfb_policy

        before = self.bar_size(bar) or 0
        # The kernel's version matters only for a VGA-class device (it is parsed with re).
        policy = sysfb_policy(self.host.root) if is_vga(self.sysfs, self.address) else None
        for kind, name in resize_removals(self.sysfs, self.address, policy):
            if kind == "vgacon":
                self.host.record(
                    f"kernel removes vgacon from {name} (VGA text console of the default VGA "
                    f"device)",
                    "the consoles go to the dummy console",
                )
            elif self.attribute("boot_vga") == "1" or policy is True:
                self.host.record(
                    f"kernel removes {name} (host console) — it cannot come back until reboot"
                )
            else:  # not the default VGA device, and the kernel's version does not tell
                self.host.record(
                    f"kernel may remove {name} (host console; kernels before 6.1.47, and 6.2 to "
                    f"6.4, do for any VGA-class device) — it cannot come back until reboot"
                )
        self.sysfs.write(
            f"{self.rel}/resource{bar}_resize",
            f"{exponent}\n",
            device=self.address,
            effect=f"BAR {bar}: {format_bytes(before)} → {format_bytes(1 << (20 + exponent))}",
            hints=RESIZE_HINTS,
        )


# What a failed resize means (pci_resize_resource, pci_reassign_bridge_resources). In both
# bridge cases the kernel wrote the old size back and the BARs are where they were.
RESIZE_HINTS = {
    errno.ENOENT: (
        "the kernel kept the old size: the bridge window above the device still holds other "
        "BARs (another function of the card, or SR-IOV VF BARs), so it could not be released "
        "and reassigned. Give the other devices behind that bridge to the VM too and resize "
        "while all are unbound, or set the size in the firmware setup"
    ),
    errno.ENOSPC: (
        "the kernel kept the old size: the bridge window cannot grow to that size, there is no "
        "room above it. Enable Above 4G decoding in the firmware, try a smaller size, or boot "
        "with pci=realloc (see `dmesg | grep -i bar`)"
    ),
    errno.EBUSY: (
        "a driver is bound, or SR-IOV VFs are enabled (sriov_numvfs > 0): write 0 to "
        "sriov_numvfs first"
    ),
}
