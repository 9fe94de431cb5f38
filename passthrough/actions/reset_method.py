"""Choose how the kernel resets a device."""

from __future__ import annotations

from ..constants import RESET_METHODS
from ..errors import HostError
from ..guard import check_not_needed
from ..pci import PciDevice
from ..schema import Args, ArgValues, Device, Field, Str
from .base import OneDeviceAction, StepContext

_NAMES = "|".join(RESET_METHODS)
METHOD = Str(
    f"default, or reset methods in the order to try ({', '.join(RESET_METHODS)})",
    pattern=rf"default|(?:{_NAMES})(?: (?:{_NAMES}))*",
)


class ResetMethodArgs(ArgValues):
    device: str  # PCI address
    method: str


class ResetMethod(OneDeviceAction):
    """Set how the kernel resets a device (`reset_method: {device: gpu, method: device_specific}`),
    by writing its `reset_method` file: `default`, or one or more methods in the order to
    try (device_specific, acpi, flr, af_flr, pm, bus, cxl_bus). With the vendor-reset module
    loaded, `device_specific` is the clean fix for the AMD reset bug. The kernel accepts only
    methods the device supports; the value is read back to check. Refused for a device the
    host depends on. Undo writes back the value read before."""

    name = "reset_method"
    args = Args(
        values=ResetMethodArgs,
        fields=(
            Field("device", Device(), required=True, doc="a device name from `devices:`"),
            Field("method", METHOD, required=True, doc="default, or methods separated by spaces"),
        ),
    )
    params: ResetMethodArgs
    default_timeout = 20.0

    def addresses(self) -> list[str]:
        return [self.params.device]

    def describe(self) -> str:
        return f"set the reset method of {self.label(self.params.device)} to {self.params.method}"

    def apply(self, ctx: StepContext) -> dict:
        device = PciDevice(ctx.host, self.params.device, ctx.label(self.params.device))
        device.require()
        before = device.attribute("reset_method")
        if before is None:
            raise HostError(
                "the device has no reset_method file (kernels before 5.15, or no reset method at all)",
                device=device.address,
            )
        method = self.params.method
        record = {
            "address": device.address,
            "name": self.names.get(device.address),
            "before": before,
            "method": method,
            "changed": before != method,
        }
        if not record["changed"]:
            ctx.host.record(
                f"reset_method of {device.address} is {before} already", "nothing to do"
            )
            return record
        check_not_needed(ctx.host, device.address, ctx.force, "change the reset method of")
        ctx.note(record)
        _write(ctx, device, method, before)
        return record

    @classmethod
    def undo(cls, ctx: StepContext, record: dict) -> None:
        device = PciDevice(ctx.host, record["address"], ctx.label(record["address"]))
        if not device.exists():
            raise HostError("the device disappeared; nothing to restore", device=device.address)
        now = device.attribute("reset_method") or ""
        if now != record["before"]:
            _write(ctx, device, record["before"], now)

    @classmethod
    def describe_undo(cls, record: dict) -> str:
        if not record.get("changed"):
            return "nothing (it already had that reset method)"
        return (
            f"set the reset method of {record.get('name') or record['address']} back to "
            f"{record['before'] or '(none)'}"
        )


def _write(ctx: StepContext, device: PciDevice, method: str, before: str) -> None:
    ctx.host.sysfs.write(
        f"bus/pci/devices/{device.address}/reset_method",
        (method or "") + "\n",
        device=device.address,
        effect=f"reset: {before or '(none)'} → {method or '(none)'}",
    )
    now = device.attribute("reset_method")
    if method != "default" and (now or "") != method:
        raise HostError(
            f"the kernel accepted reset_method {method!r} but it reads {now!r}",
            device=device.address,
        )
