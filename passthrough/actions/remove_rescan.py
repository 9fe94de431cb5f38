"""Take PCI functions off the bus and find them again: the AMD reset bug workaround."""

from __future__ import annotations

from ..errors import HostError
from ..guard import check_not_needed
from ..pci import Binding, PciDevice, show
from ..schema import Args, Field, Seconds
from .base import Action, StepContext
from .drivers import DEVICES, DevicesArgs


class RemoveRescanArgs(DevicesArgs):
    wait: float


class RemoveRescan(Action):
    """Remove devices from the PCI bus and rescan it (`remove_rescan: [gpu, gpu-audio]`),
    the workaround for AMD cards with the reset bug (Polaris, Vega 10/20, Navi 10/14) that
    come back from a VM unusable: 1 is written to each device's `remove`, then to
    /sys/bus/pci/rescan, and the step waits (up to `wait` seconds) until every function is
    back and on the driver it had before (on release/end: its host driver). Meant for
    release/end, after `undo`. Refused for a device the host depends on or a process holds
    open. Journaled before the first removal, so a hook killed half way leaves a record
    that `recover` finishes with a rescan; once the devices are back there is nothing to undo."""

    name = "remove_rescan"
    args = Args(
        values=RemoveRescanArgs,
        fields=(
            DEVICES,
            Field(
                "wait",
                Seconds(),
                default=30.0,
                doc="seconds to wait for the functions to come back on their drivers (default 30)",
            ),
        ),
        shorthand="devices",
    )
    params: RemoveRescanArgs
    default_timeout = 90.0

    def addresses(self) -> list[str]:
        return list(self.params.devices)

    def describe(self) -> str:
        names = ", ".join(self.label(a) for a in self.params.devices)
        return f"remove {names} from the PCI bus and rescan it"

    def apply(self, ctx: StepContext) -> dict:
        record: dict = {"devices": [], "removed": [], "back": False, "wait": self.params.wait}
        for address in self.params.devices:
            device = PciDevice(ctx.host, address, ctx.label(address))
            device.require()
            check_not_needed(ctx.host, address, ctx.force, "remove")
            if device.driver():
                device.check_holders()  # removal unbinds the driver: it would block like an unbind
            record["devices"].append(
                {
                    "address": address,
                    "name": self.names.get(address),
                    "before": device.binding().to_json(),
                }
            )
        for entry in record["devices"]:
            address = entry["address"]
            record["removed"].append(address)
            ctx.note(record)  # journaled before each removal: recover rescans
            ctx.host.sysfs.write(
                f"bus/pci/devices/{address}/remove",
                "1",
                device=address,
                effect=f"{ctx.label(address)}: {show(entry['before']['driver'])} → off the bus",
            )
        rescan(ctx, record)
        record["back"] = True
        return record

    @classmethod
    def changed(cls, record: dict) -> bool:
        return bool(record.get("removed")) and not record.get("back")

    @classmethod
    def held_addresses(cls, record: dict) -> list[str]:
        return list(record.get("removed", [])) if cls.changed(record) else []

    @classmethod
    def undo(cls, ctx: StepContext, record: dict) -> None:
        rescan(ctx, record)

    @classmethod
    def describe_undo(cls, record: dict) -> str:
        if not cls.changed(record):
            return "nothing (the devices came back)"
        names = ", ".join(
            e.get("name") or e["address"]
            for e in record.get("devices", [])
            if e["address"] in record.get("removed", [])
        )
        return f"rescan the PCI bus until {names} are back on their drivers"


def rescan(ctx: StepContext, record: dict) -> None:
    """Write 1 to bus/pci/rescan, wait for the removed functions, put each back on the
    driver (and driver_override) it had before."""
    host = ctx.host
    removed = [e for e in record.get("devices", []) if e["address"] in record.get("removed", [])]
    host.sysfs.write("bus/pci/rescan", "1", effect="the removed functions are found again")
    problems = []
    for entry in removed:
        before = Binding.from_json(entry["before"])
        device = PciDevice(host, entry["address"], ctx.label(entry["address"]))
        # The kernel adds a function and probes its drivers inside the rescan write, so
        # waiting is only for its sysfs directory; a driver it got then is the one it gets.
        if not host.wait_until(
            f"{device.address} to come back",
            device.exists,
            host.time_left(float(record.get("wait") or 30.0)),
        ):
            problems.append(f"{device.label} did not come back after the rescan")
            continue
        if before.driver not in (None, device.driver()):
            # Back, but the kernel gave it another driver (or none): vfio-pci before a
            # rescan is not what the id tables pick, so bind it through driver_override.
            try:
                device.restore(before)
            except HostError as exc:
                problems.append(str(exc))
                continue
        else:
            device.set_override(before.override)
        host.record(f"check {device.address} driver", f"back → {show(device.driver())}")
    if problems:
        raise HostError(
            "; ".join(problems),
            hint="see `dmesg` (the card may need a host reboot); `passthrough-hook recover` "
            "rescans again",
        )
