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
    """The pci.ids of the tree being read: this machine's under `/`, a snapshot's own copy
    (`snapshot` carries the lines of its devices) under `--root`. Never this machine's for
    another tree: the names a command prints must not depend on where it runs."""
    for rel in PCI_IDS_PATHS:
        if (Path(root) / rel).is_file():
            return Path(root) / rel
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

    def excerpt(self, ids: set[tuple[str, str]]) -> str:
        """The database's lines for these (vendor, device) pairs, in its own layout, for a
        tree that carries the names of its devices ("" when none is known)."""
        self.load({vendor for vendor, _ in ids})
        lines = []
        for vendor in sorted({v.lower() for v, _ in ids}):
            if vendor not in self._vendors:
                continue
            lines.append(f"{vendor}  {self._vendors[vendor]}")
            for device in sorted({d.lower() for v, d in ids if v.lower() == vendor}):
                if (vendor, device) in self._devices:
                    lines.append(f"\t{device}  {self._devices[(vendor, device)]}")
        if not lines:
            return ""
        return (
            f"# The entries of pci.ids for the devices of this tree (from {self.path})\n"
            + "".join(line + "\n" for line in lines)
        )

    def describe(self, vendor: str, device: str) -> str | None:
        """'Advanced Micro Devices, Inc. [AMD/ATI] Navi 22 [...]', or None without a database entry."""
        vendor_name = self.vendor(vendor)
        if vendor_name is None:
            return None
        device_name = self.device(vendor, device)
        return f"{vendor_name} {device_name}" if device_name else f"{vendor_name} device {device}"
