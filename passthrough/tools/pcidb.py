"""Names for PCI classes and IDs: class names built in (as lspci prints them), vendor and
device names from the pci.ids database when it is installed (pciutils/hwdata).

pci.ids is over a megabyte; it is read once, line by line, only as far as the vendors
asked for, and only when a command prints names.
"""

from __future__ import annotations

from pathlib import Path

# Where distributions put pci.ids: Debian/Ubuntu (pciutils), Fedora/Arch (hwdata).
PCI_IDS_PATHS = ("usr/share/misc/pci.ids", "usr/share/hwdata/pci.ids")

SUBCLASS_NAMES = {
    0x0000: "Non-VGA unclassified device",
    0x0100: "SCSI storage controller",
    0x0101: "IDE interface",
    0x0104: "RAID bus controller",
    0x0106: "SATA controller",
    0x0107: "Serial Attached SCSI controller",
    0x0108: "Non-Volatile memory controller",
    0x0200: "Ethernet controller",
    0x0207: "Infiniband controller",
    0x0280: "Network controller",
    0x0300: "VGA compatible controller",
    0x0302: "3D controller",
    0x0380: "Display controller",
    0x0400: "Multimedia video controller",
    0x0401: "Multimedia audio controller",
    0x0403: "Audio device",
    0x0480: "Multimedia controller",
    0x0500: "RAM memory",
    0x0600: "Host bridge",
    0x0601: "ISA bridge",
    0x0604: "PCI bridge",
    0x0680: "Bridge",
    0x0700: "Serial controller",
    0x0780: "Communication controller",
    0x0805: "SD Host controller",
    0x0806: "IOMMU",
    0x0880: "System peripheral",
    0x0C00: "FireWire (IEEE 1394)",
    0x0C03: "USB controller",
    0x0C05: "SMBus",
    0x0C80: "Serial bus controller",
    0x0D11: "Bluetooth",
    0x0D80: "Wireless controller",
    0x1080: "Encryption controller",
    0x1180: "Signal processing controller",
    0x1200: "Processing accelerators",
}
BASE_CLASS_NAMES = {
    0x00: "Unclassified device",
    0x01: "Mass storage controller",
    0x02: "Network controller",
    0x03: "Display controller",
    0x04: "Multimedia controller",
    0x05: "Memory controller",
    0x06: "Bridge",
    0x07: "Communication controller",
    0x08: "Generic system peripheral",
    0x09: "Input device controller",
    0x0A: "Docking station",
    0x0B: "Processor",
    0x0C: "Serial bus controller",
    0x0D: "Wireless controller",
    0x0E: "Intelligent controller",
    0x0F: "Satellite communications controller",
    0x10: "Encryption controller",
    0x11: "Signal processing controller",
    0x12: "Processing accelerators",
    0xFF: "Unassigned class",
}


def class_name(pci_class: int) -> str:
    """0x030000 -> 'VGA compatible controller'."""
    return (
        SUBCLASS_NAMES.get(pci_class >> 8)
        or BASE_CLASS_NAMES.get(pci_class >> 16)
        or f"Class {pci_class >> 8:04x}"
    )


def find_pci_ids(root: Path) -> Path | None:
    """pci.ids inside the tree first (a snapshot may carry one), then this machine's: names
    do not depend on which host the devices came from."""
    bases = [Path(root)] + ([Path("/")] if Path(root).resolve() != Path("/") else [])
    for base in bases:
        for rel in PCI_IDS_PATHS:
            if (base / rel).is_file():
                return base / rel
    return None


class PciIds:
    """Vendor and device names from a pci.ids file (None: no database, no names)."""

    def __init__(self, path: Path | None):
        self.path = path
        self._vendors: dict[str, str] = {}
        self._devices: dict[tuple[str, str], str] = {}
        self._looked_up: set[str] = set()

    def load(self, vendors: set[str]) -> None:
        """Read the entries of these vendors (4 hex digits, lower case) in one pass that
        stops as soon as all of them were seen."""
        wanted = {v.lower() for v in vendors} - self._looked_up
        self._looked_up |= wanted
        if not wanted or self.path is None:
            return
        current = None
        try:
            with open(self.path, encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    if not line.strip() or line.startswith("#"):
                        continue
                    if line.startswith("C "):
                        break  # the device class section follows the vendors
                    if not line.startswith("\t"):
                        if current is not None and not wanted:
                            break
                        vendor, _, name = line.partition("  ")
                        current = vendor if vendor in wanted else None
                        if current:
                            wanted.discard(current)
                            self._vendors[current] = name.strip()
                    elif current and not line.startswith("\t\t"):
                        device, _, name = line[1:].partition("  ")
                        self._devices[(current, device)] = name.strip()
        except OSError:
            self.path = None

    def vendor(self, vendor: str) -> str | None:
        self.load({vendor})
        return self._vendors.get(vendor.lower())

    def device(self, vendor: str, device: str) -> str | None:
        self.load({vendor})
        return self._devices.get((vendor.lower(), device.lower()))

    def describe(self, vendor: str, device: str) -> str | None:
        """'Advanced Micro Devices, Inc. [AMD/ATI] Navi 22 [...]', or None without a database entry."""
        vendor_name = self.vendor(vendor)
        if vendor_name is None:
            return None
        device_name = self.device(vendor, device)
        return f"{vendor_name} {device_name}" if device_name else f"{vendor_name} device {device}"
