"""PCI addresses and BAR sizes as users write them in profiles."""

from __future__ import annotations

import re

from .constants import PCI_ADDRESS
from .patterns import Lazy

_PCI_ADDRESS = Lazy(f"^{PCI_ADDRESS}$")
_SIZE = Lazy(r"^\s*(\d+)\s*([KMGT]?)(i?B?)\s*$", re.IGNORECASE)
_UNIT_MIB = {"": 1, "M": 1, "G": 1024, "T": 1024 * 1024}


def parse_pci_address(text: str) -> str:
    """Return the canonical `DDDD:BB:DD.F` form (lower case) or raise ValueError.

    A missing domain (`03:00.0`) is accepted and means domain 0000, as lspci prints it.
    """
    candidate = text.strip().lower()
    if re.fullmatch(PCI_ADDRESS.split(":", 1)[1], candidate):  # no domain part
        candidate = "0000:" + candidate
    if not _PCI_ADDRESS.match(candidate):
        raise ValueError(
            f"{text!r} is not a PCI address; expected DDDD:BB:DD.F such as 0000:03:00.0 (see lspci -D)"
        )
    return candidate


def nodedev_name(address: str) -> str:
    """libvirt's node-device name of a PCI address: pci_0000_03_00_0."""
    return "pci_" + address.replace(":", "_").replace(".", "_")


def parse_bar_size(value: object) -> int:
    """Return the resize exponent n (size = 2**n MiB) for `8MiB`, `256M`, `1GiB`, or a raw exponent.

    The kernel's resourceN_resize takes n, the log2 of the size in MiB (3 = 8 MiB).
    Raises ValueError with the accepted forms.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a BAR size")
    if isinstance(value, int):
        if 0 <= value <= 63:
            return value
        raise ValueError(f"exponent {value} is out of range; a raw size is n for 2^n MiB, 0..63")
    match = _SIZE.match(str(value))
    if not match or match.group(2) == "" and match.group(3) != "":
        raise ValueError(
            f"{value!r} is not a BAR size; expected e.g. 8MiB, 256M, 1GiB or an exponent 0..63"
        )
    number, unit = int(match.group(1)), match.group(2).upper()
    if unit == "K":
        raise ValueError(f"{value!r} is below the smallest resizable BAR size (1 MiB)")
    mib = number * _UNIT_MIB[unit]
    if mib <= 0 or mib & (mib - 1):
        raise ValueError(
            f"{value!r} is not a power of two in MiB; BAR sizes are 1MiB, 2MiB, 4MiB, ..."
        )
    return mib.bit_length() - 1


def format_mib(mib: int) -> str:
    """8 -> '8 MiB', 16384 -> '16 GiB'."""
    if mib >= 1024 and mib % 1024 == 0:
        return f"{mib // 1024} GiB"
    return f"{mib} MiB"


def format_bytes(size: int) -> str:
    if size >= 1 << 20 and size % (1 << 20) == 0:
        return format_mib(size >> 20)
    if size >= 1024 and size % 1024 == 0:
        return f"{size // 1024} KiB"
    return f"{size} B"
