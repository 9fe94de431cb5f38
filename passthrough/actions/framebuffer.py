from __future__ import annotations

from ..errors import HostError
from ..patterns import Lazy
from ..schema import UNBIND_ONLY, OperationArgs
from .base import Action, StepContext

TYPE_CHECKING = False  # typing's constant, without importing typing (the hook's imports)
if TYPE_CHECKING:
    from ..host import Host

DRIVERS_DIR = "bus/platform/drivers"
# The firmware framebuffers the kernel sets up at boot (sysfb): efifb, simplefb/simpledrm,
# vesafb. Each is a platform device; on a single-GPU host it sits on the GPU's memory.
FIRMWARE_FRAMEBUFFER = Lazy(r"(efi|simple|vesa|platform)-framebuffer\.\d+")


def bound_framebuffers(host: Host) -> list[tuple[str, str]]:
    """(driver, device) of each firmware framebuffer bound to a driver now."""
    found = []
    for driver in host.sysfs.listdir(DRIVERS_DIR):
        for entry in host.sysfs.listdir(f"{DRIVERS_DIR}/{driver}"):
            if FIRMWARE_FRAMEBUFFER.fullmatch(entry):
                found.append((driver, entry))
    return found


def is_bound(host: Host, driver: str, device: str) -> bool:
    return host.sysfs.exists(f"{DRIVERS_DIR}/{driver}/{device}")


class Framebuffer(Action):
    """Unbind the firmware framebuffer from its driver (`framebuffer: unbind`): efifb
    (efi-framebuffer.0), simplefb or simpledrm (simple-framebuffer.0), vesafb. On a
    single-GPU host it holds the GPU's memory until it is unbound. Only framebuffers bound
    now are unbound; undo binds exactly those again. When a GPU driver has since taken
    the framebuffer over, the kernel has removed the device and there is nothing to bind
    (a warning says so)."""

    name = "framebuffer"
    args = UNBIND_ONLY
    params: OperationArgs
    default_timeout = 20.0

    def describe(self) -> str:
        return "unbind the firmware framebuffer (efifb, simpledrm, vesafb)"

    def apply(self, ctx: StepContext) -> dict:
        record: dict = {"unbound": []}
        framebuffers = bound_framebuffers(ctx.host)
        if not framebuffers:
            ctx.host.record("no firmware framebuffer is bound to a driver", "nothing to do")
        for driver, device in framebuffers:
            record["unbound"].append({"driver": driver, "device": device})
            ctx.note(record)
            ctx.host.sysfs.write(
                f"{DRIVERS_DIR}/{driver}/unbind", device, effect=f"{device}: {driver} → no driver"
            )
            if is_bound(ctx.host, driver, device):
                raise HostError(
                    f"{device} is still bound to {driver} after the unbind", hint="see `dmesg`"
                )
        return record

    @classmethod
    def changed(cls, record: dict) -> bool:
        return bool(record.get("unbound"))

    @classmethod
    def undo(cls, ctx: StepContext, record: dict) -> None:
        host = ctx.host
        for entry in reversed(record.get("unbound", [])):
            driver, device = entry["driver"], entry["device"]
            if is_bound(host, driver, device):
                continue
            if not host.sysfs.exists(f"bus/platform/devices/{device}"):
                ctx.warnings.append(
                    f"{device} is gone (the kernel removed it when a GPU driver took the "
                    f"framebuffer over, or for a BAR resize); nothing to bind until reboot"
                )
                continue
            host.sysfs.write(
                f"{DRIVERS_DIR}/{driver}/bind", device, effect=f"{device}: no driver → {driver}"
            )
            if not is_bound(host, driver, device):
                raise HostError(f"{driver} did not take {device} back", hint="see `dmesg`")

    @classmethod
    def describe_undo(cls, record: dict) -> str:
        entries = list(reversed(record.get("unbound", [])))
        if not entries:
            return "nothing (no framebuffer was unbound)"
        return "bind " + ", ".join(f"{e['device']} to {e['driver']}" for e in entries) + " again"
