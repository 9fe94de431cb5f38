from __future__ import annotations

from ..errors import HostError
from ..schema import UNBIND_ONLY, OperationArgs
from .base import Action, StepContext

TYPE_CHECKING = False  # typing's constant, without importing typing (the hook's imports)
if TYPE_CHECKING:
    from ..host import Host

CLASS_DIR = "class/vtconsole"


def console_number(name: str) -> int:
    number = name.removeprefix("vtcon")
    return int(number) if name.startswith("vtcon") and number.isdecimal() else -1


def is_system_driver(name: str) -> bool:
    """The system console driver ("(S) dummy device" on UEFI boots, "(S) VGA+", vgacon, on
    BIOS/CSM ones): the kernel keeps it, and writing 0 to its bind does nothing."""
    return name.startswith("(S)")


def bound_consoles(host: Host, system: bool = False) -> list[tuple[str, str]]:
    """(vtconN, driver name) of the console drivers bound now; the system driver only when
    asked: it cannot be unbound, and takes the consoles when nothing else holds them."""
    found = []
    for console in sorted(host.sysfs.listdir(CLASS_DIR), key=console_number):
        name = host.sysfs.read(f"{CLASS_DIR}/{console}/name") or console
        if host.sysfs.read(f"{CLASS_DIR}/{console}/bind") == "1" and (
            system or not is_system_driver(name)
        ):
            found.append((console, name))
    return found


def set_bound(host: Host, console: str, name: str, bound: bool) -> None:
    value = "1" if bound else "0"
    effect = "unbound → bound" if bound else "bound → unbound"
    host.sysfs.write(f"{CLASS_DIR}/{console}/bind", value, effect=f"{console} {name}: {effect}")
    # The kernel accepts the write and keeps the last console driver bound; say so.
    if host.sysfs.read(f"{CLASS_DIR}/{console}/bind") != value:
        raise HostError(
            f"the kernel kept {console} ({name}) {'unbound' if bound else 'bound'} after writing "
            f"{value} to /sys/{CLASS_DIR}/{console}/bind",
            hint="see `dmesg`; a console driver stays bound when it is the only one left",
        )


class VtConsoles(Action):
    """Unbind the virtual consoles from the framebuffer console (fbcon) and other modular
    console drivers (`vtconsoles: unbind`), so they let go of the GPU on single-GPU hosts.
    Only consoles bound now are unbound (`/sys/class/vtconsole/vtconN/bind` reading 1).
    The system console driver takes the consoles then and cannot be unbound: the dummy
    console on UEFI boots, vgacon (VGA text mode on the default VGA device) on BIOS/CSM
    boots, which lets go of the GPU only when a BAR resize or the GPU's driver removes it.
    Undo binds exactly those consoles again, newest first."""

    name = "vtconsoles"
    args = UNBIND_ONLY
    params: OperationArgs
    default_timeout = 20.0

    def describe(self) -> str:
        return "unbind the virtual consoles from their console drivers"

    def apply(self, ctx: StepContext) -> dict:
        record: dict = {"unbound": []}
        consoles = bound_consoles(ctx.host)
        if not consoles:
            ctx.host.record("no virtual console is bound to a console driver", "nothing to do")
        for console, name in consoles:
            record["unbound"].append({"console": console, "name": name})
            ctx.note(record)
            set_bound(ctx.host, console, name, bound=False)
        for console, name in bound_consoles(ctx.host, system=True):
            if consoles and "VGA" in name:
                ctx.host.record(
                    f"{console} {name} (vgacon) takes the consoles: a BIOS/CSM boot's VGA text "
                    f"console, on the default VGA device",
                    "the system console driver cannot be unbound",
                )
        return record

    @classmethod
    def changed(cls, record: dict) -> bool:
        return bool(record.get("unbound"))

    @classmethod
    def undo(cls, ctx: StepContext, record: dict) -> None:
        for entry in reversed(record.get("unbound", [])):
            if ctx.host.sysfs.read(f"{CLASS_DIR}/{entry['console']}/bind") != "1":
                set_bound(ctx.host, entry["console"], entry["name"], bound=True)

    @classmethod
    def describe_undo(cls, record: dict) -> str:
        consoles = [e["console"] for e in reversed(record.get("unbound", []))]
        return (
            "bind " + ", ".join(consoles) + " again"
            if consoles
            else "nothing (no console was unbound)"
        )
