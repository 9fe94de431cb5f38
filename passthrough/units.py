"""PCI addresses and BAR sizes as users write them in profiles."""

from __future__ import annotations

from .patterns import Lazy

_SIZE = Lazy(r"(?i)^\s*(\d+)\s*([KMGT]?)(i?B?)\s*$")
_UNIT_MIB = {"": 1, "M": 1, "G": 1024, "T": 1024 * 1024}


def parse_pci_address(text: str) -> str:
    """Return the canonical `DDDD:BB:DD.F` form (lower case) or raise ValueError.

    A missing domain (`03:00.0`) is accepted and means domain 0000, as lspci prints it.
    """
    candidate = text.strip().lower()
    if is_pci_address(candidate, domain=False):
        candidate = "0000:" + candidate
    if not is_pci_address(candidate):
        raise ValueError(
            f"{text!r} is not a PCI address; expected DDDD:BB:DD.F such as 0000:03:00.0 (see lspci -D)"
        )
    return candidate


_HEX = frozenset("0123456789abcdef")


def is_pci_address(text: str, domain: bool = True) -> bool:
    """Whether text is an address as sysfs names a PCI function, `0000:03:00.0` (constants'
    PCI_ADDRESS, in lower case; without the domain part, `03:00.0`). A string test, not
    the pattern: the hook asks it of every device a step touches, and `re` costs an event
    under QEMU a quarter of a second to import."""
    if domain:
        if len(text) != 12 or text[4] != ":" or not _HEX.issuperset(text[:4]):
            return False
        text = text[5:]
    return (
        len(text) == 7
        and text[2] == ":"
        and text[5] == "."
        and _HEX.issuperset(text[:2])
        and text[3] in "01"
        and text[4] in _HEX
        and text[6] in "01234567"
    )


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
