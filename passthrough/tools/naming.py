"""Device names for profiles, from what the devices are: `gpu`, `gpu-audio`, `gpu-usb`,
`gpu-serial` for the functions of a graphics card, `nic`, `nvme`, `usb`... for the rest."""

from __future__ import annotations

import re

from .facts import PciFunction

# (class mask, class value, role); the first match wins. Classes are 24-bit: base, sub, prog-if.
ROLES = (
    (0xFF0000, 0x030000, "gpu"),
    (0xFFFF00, 0x040300, "audio"),
    (0xFF0000, 0x040000, "media"),
    (0xFFFF00, 0x0C0300, "usb"),
    (0xFFFF00, 0x0C8000, "serial"),
    (0xFF0000, 0x0C0000, "serial"),
    (0xFFFF00, 0x010800, "nvme"),
    (0xFFFF00, 0x010600, "sata"),
    (0xFF0000, 0x010000, "storage"),
    (0xFF0000, 0x020000, "nic"),
    (0xFF0000, 0x0D0000, "wireless"),
)


# Words of a class name that say nothing about what the device is.
_FILLER = {"controller", "device", "compatible", "class", "other", "non-volatile"}


def role(fn: PciFunction) -> str:
    """What the function is, as a name: `audio`, `usb`..., else from its class name
    ("Signal processing controller" is `signal-processing`), never a bare `device`."""
    for mask, value, name in ROLES:
        if fn.pci_class & mask == value:
            return name
    if fn.vendor == "0000":  # not on the host (init keeps an address from the XML)
        return "missing"
    if fn.class_name.startswith("Class "):  # a class without a name
        return f"class-{fn.class_code}"
    words = [w for w in re.split(r"[^a-z0-9]+", fn.class_name.lower()) if w and w not in _FILLER]
    return "-".join(words[:3]) or f"class-{fn.class_code}"


def suggest_names(
    functions: list[PciFunction], known: dict[str, str] | None = None
) -> dict[str, str]:
    """address -> name for every function, unique, in address order. Functions in `known`
    (address -> name, e.g. a profile's devices) keep their names.

    Functions sharing a slot with a display function are one card: `gpu` for the video
    function, `gpu-<role>` for the others; a second card is `gpu2`, `gpu2-audio`... A card
    whose video function is known as `vga` gets `vga-audio`.
    """
    known = dict(known or {})
    used = set(known.values())
    gpu_slots = sorted({fn.slot for fn in functions if fn.is_gpu})
    card_prefix: dict[str, str] = {}
    for fn in functions:
        if fn.is_gpu and fn.address in known:
            card_prefix.setdefault(fn.slot, known[fn.address])
    for slot in gpu_slots:
        if slot not in card_prefix:
            card_prefix[slot] = unique("gpu", used | set(card_prefix.values()), first_suffix="")
    names: dict[str, str] = {}
    for fn in sorted(functions, key=lambda f: f.address):
        if fn.address in known:
            names[fn.address] = known[fn.address]
            continue
        prefix = card_prefix.get(fn.slot)
        if prefix is None:
            base = role(fn)
        elif fn.is_gpu:
            base = prefix
        else:
            base = f"{prefix}-{role(fn)}"
        names[fn.address] = unique(base, used)
        used.add(names[fn.address])
    return names


def unique(base: str, used: set[str], first_suffix: str = "-") -> str:
    """base, or base-2, base-3... (gpu2, gpu3 for cards: first_suffix="")."""
    if base not in used:
        return base
    number = 2
    while f"{base}{first_suffix}{number}" in used:
        number += 1
    return f"{base}{first_suffix}{number}"
