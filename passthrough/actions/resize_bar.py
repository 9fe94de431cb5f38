from __future__ import annotations

from ..errors import HostError
from ..guard import check_not_needed
from ..pci import Binding, PciDevice
from ..schema import Args, ArgValues, BarSize, Device, Field, Int
from ..units import format_bytes, format_mib
from .base import OneDeviceAction, StepContext


class ResizeBarArgs(ArgValues):
    device: str  # PCI address
    bar: int
    size: int  # exponent: 2^size MiB


class ResizeBar(OneDeviceAction):
    """Set a Resizable BAR to a size (`resize_bar: {device: gpu, bar: 2, size: 8MiB}`), the
    Code 43 fix for AMD cards on hosts with ReBAR enabled. The size must be one the BAR
    supports (read from resourceN_resize). The kernel refuses to resize a bound device, so
    whatever driver holds it is unbound first and bound again after, and the new size is
    checked in `resource`. Undo puts the original size back the same way."""

    name = "resize_bar"
    args = Args(
        values=ResizeBarArgs,
        fields=(
            Field("device", Device(), required=True, doc="a device name from `devices:`"),
            Field("bar", Int("a BAR number", 0, 5), required=True, doc="the BAR number (0-5)"),
            Field(
                "size",
                BarSize(),
                required=True,
                doc="the new size: 8MiB, 256M, 1GiB, or n for 2^n MiB",
            ),
        ),
    )
    default_timeout = 60.0
    params: ResizeBarArgs

    def addresses(self) -> list[str]:
        return [self.params.device]

    def describe(self) -> str:
        size = format_mib(1 << self.params.size)
        return f"resize BAR {self.params.bar} of {self.label(self.params.device)} to {size}"

    def apply(self, ctx: StepContext) -> dict:
        bar, exponent = self.params.bar, self.params.size
        device = PciDevice(ctx.host, self.params.device, ctx.label(self.params.device))
        device.require()
        supported = device.resizable_sizes(bar)
        if supported is None:
            raise HostError(
                f"BAR {bar} has no Resizable BAR capability (no resource{bar}_resize)",
                device=device.address,
                hint="enable Resizable BAR / Above 4G decoding in the firmware, or check the BAR number",
            )
        if (1 << exponent) not in supported:
            sizes = ", ".join(format_mib(m) for m in supported) or "none"
            raise HostError(
                f"BAR {bar} does not support {format_mib(1 << exponent)}; supported sizes: {sizes}",
                device=device.address,
            )
        before_size = device.bar_size(bar)
        record: dict = {
            "address": device.address,
            "name": self.names.get(device.address),
            "bar": bar,
            "before_size": before_size,
            "size": 1 << (20 + exponent),
            "binding": device.binding().to_json(),
            "changed": before_size != 1 << (20 + exponent),
        }
        if not record["changed"]:
            ctx.host.record(
                f"BAR {bar} of {device.address} is already {format_bytes(before_size or 0)}",
                "nothing to do",
            )
            return record
        check_not_needed(ctx.host, device.address, ctx.force, f"resize {ctx.label(device.address)}")
        ctx.note(record)
        set_size(device, bar, 1 << (20 + exponent), Binding.from_json(record["binding"]))
        return record

    @classmethod
    def held_changes(cls, record: dict) -> dict[str, list]:
        if not cls.changed(record):
            return {}
        bar = {
            "address": record["address"],
            "name": record.get("name"),
            "bar": record["bar"],
            "was": record.get("before_size"),
            "set": record.get("size"),
        }
        return {"bars": [bar]}

    @classmethod
    def undo(cls, ctx: StepContext, record: dict) -> None:
        device = PciDevice(ctx.host, record["address"], ctx.label(record["address"]))
        # Rebind what holds the device now: later undos may have moved it on since. Only a
        # device left without a driver (a crash mid-resize) goes back to the recorded one.
        binding = device.binding()
        if binding.driver is None:
            binding = Binding.from_json(record["binding"])
        if binding.driver and not device.driver_exists(binding.driver):
            # Its module is gone (the undo of the step that loaded it ran first, while this
            # device was stuck in the kernel): leave it without a driver for the undo of the
            # step that bound it, which comes next.
            binding = Binding(None, binding.override)
        if device.bar_size(record["bar"]) == record["before_size"]:
            device.restore(
                binding
            )  # the resize never happened; only the binding may need putting back
            return
        set_size(device, record["bar"], record["before_size"], binding)

    @classmethod
    def describe_undo(cls, record: dict) -> str:
        if not record.get("changed"):
            return "nothing (the BAR already had that size)"
        return (
            f"resize BAR {record['bar']} of {record.get('name') or record['address']} back to "
            f"{format_bytes(record['before_size'])}"
        )


def set_size(device: PciDevice, bar: int, size: int, binding: Binding) -> None:
    """Unbind, write the exponent, bind the recorded driver again, verify the size."""
    exponent = (size >> 20).bit_length() - 1
    device.unbind()
    try:
        device.resize(bar, exponent)
    finally:
        # Rebind even when the resize failed: never leave the device without its driver.
        device.restore(binding)
    now = device.bar_size(bar)
    if now != size:
        raise HostError(
            f"the kernel accepted the resize of BAR {bar} but it is {format_bytes(now or 0)}, "
            f"not {format_bytes(size)}",
            device=device.address,
        )
