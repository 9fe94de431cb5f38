"""What a BAR resize of a VGA-class device takes from the host, and which kernels take it.

The kernel's side of it is described in kernel_model.py; this is the part the real
hook needs on every resize (to say it in the journal and the plan), without the whole
model the dry run and the fake kernel use.
"""

from __future__ import annotations

import os

from . import textfile

# The platform devices sysfb registers for the firmware's framebuffer (efifb, simplefb and
# simpledrm drive them); drivers/firmware/sysfb.c.
SYSFB_KINDS = ("efi", "simple", "vesa")
PLATFORM_DEVICES = "bus/platform/devices"
VTCONSOLES = "class/vtconsole"
VGA_CLASS = 0x0300

TYPE_CHECKING = False  # typing's constant, without importing typing (the hook's imports)
if TYPE_CHECKING:
    from typing import Protocol

    class Reader(Protocol):
        """What resize_removals reads: a Store, or the program's Sysfs."""

        def read(self, rel: str) -> str | None: ...
        def link_name(self, rel: str) -> str | None: ...
        def listdir(self, rel: str) -> list[str]: ...


def is_sysfb_device(name: str) -> bool:
    """efi-framebuffer.0, simple-framebuffer.0, vesa-framebuffer.0: sysfb's device."""
    kind, _, number = name.partition("-framebuffer.")
    return kind in SYSFB_KINDS and number.isdecimal()


def sysfb_on_any_vga(release: str, version: str = "") -> bool | None:
    """Whether a BAR resize of any VGA-class device unregisters the firmware framebuffer
    (True), only one of the default VGA device (False), or cannot be told (None: a distro
    release such as Debian's 6.1.0-13 hides the upstream patch level, unless /proc/version
    names it). Affected: 6.0.3 (ee7a69aa38d8) to 6.1.46, and 6.2 to 6.4 (5ae3716cfdcd is
    in 6.5 and 6.1.47; a 6.4.y backport is not counted)."""
    import re  # only for a resize of a VGA device: other events need no pattern

    found = re.search(r"Debian (\d+)\.(\d+)\.(\d+)", version)
    patch_known = bool(found)
    if not found:
        found = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?(.*)", release)
        # "6.1.0-13-amd64": the .0 is the distro's ABI number, not a patch level.
        patch_known = bool(
            found and found.group(3) and (found.group(3) != "0" or not found.group(4))
        )
    if not found:
        return None
    major, minor, patch = int(found.group(1)), int(found.group(2)), int(found.group(3) or 0)
    if (major, minor) in ((6, 0), (6, 1)):
        if not patch_known:
            return None
        return (6, 0, 3) <= (major, minor, patch) < (6, 1, 47)
    return (6, 2) <= (major, minor) < (6, 5)


def sysfb_policy(root: str | os.PathLike) -> bool | None:
    """sysfb_on_any_vga() for the kernel of a root (its /proc/sys/kernel/osrelease, /proc/version)."""

    def text(rel: str) -> str:
        return (textfile.read(os.path.join(root, rel)) or "").strip()

    return sysfb_on_any_vga(text("proc/sys/kernel/osrelease"), text("proc/version"))


def is_vga(reader: Reader, address: str) -> bool:
    text = reader.read(f"bus/pci/devices/{address}/class") or "0"
    try:
        return int(text, 16) >> 8 == VGA_CLASS
    except ValueError:
        return False


def resize_removals(
    reader: Reader, address: str, sysfb_any_vga: bool | None
) -> list[tuple[str, str]]:
    """What the kernel takes away before it resizes a BAR of address, as (kind, name):
    ("framebuffer", "efi-framebuffer.0") and ("vgacon", "vtcon0"). sysfb_any_vga as
    sysfb_on_any_vga() gives it; None (unknown) counts as True: the worst case."""
    if not is_vga(reader, address):
        return []
    primary = reader.read(f"bus/pci/devices/{address}/boot_vga") == "1"
    removed = []
    if primary or sysfb_any_vga is not False:
        removed += [
            ("framebuffer", name)
            for name in reader.listdir(PLATFORM_DEVICES)
            if is_sysfb_device(name)
        ]
    if primary:
        for console in reader.listdir(VTCONSOLES):
            name = reader.read(f"{VTCONSOLES}/{console}/name") or ""
            if "VGA" in name and reader.read(f"{VTCONSOLES}/{console}/bind") == "1":
                removed.append(("vgacon", console))
    return removed
