"""Actions that move PCI functions between drivers: detach, reattach, unbind, bind.

They share one record shape: for each device, its binding (driver and driver_override)
before the step and whether the step changed it. Undo returns each changed device to
that binding, in reverse order, verifying the driver link.
"""

from __future__ import annotations

from ..errors import HostError, StepTimeout
from ..guard import check_not_needed
from ..pci import VFIO_PCI, Binding, PciDevice, is_stub_driver, is_vfio_driver, show
from ..schema import Args, ArgValues, Device, Field, Invalid, ListOf, Str
from .base import Action, StepContext

TYPE_CHECKING = False  # typing's constant, without importing typing (the hook's imports)
if TYPE_CHECKING:
    import yaml

DEVICES = Field(
    "devices",
    ListOf(Device(), "one or more device names"),
    required=True,
    doc="device names from `devices:`",
)
VIA = Field(
    "via",
    Str("libvirt or sysfs", choices=("libvirt", "sysfs")),
    default="libvirt",
    doc="libvirt's node-device API (as virsh nodedev-detach), or sysfs writes with no libvirt call",
)
DRIVER = Str("a driver name", pattern=r"[A-Za-z0-9_.-]+")


class DevicesArgs(ArgValues):
    devices: list[str]  # PCI addresses


class ReattachArgs(DevicesArgs):
    via: str  # libvirt or sysfs


class DetachArgs(ReattachArgs):
    driver: str


class BindArgs(DevicesArgs):
    device: str | None  # as written; `devices` holds it too
    driver: str


class DeviceStep(Action):
    """Common apply/undo: record each device's binding, change it, note progress."""

    params: DevicesArgs

    def addresses(self) -> list[str]:
        return list(self.params.devices)

    def device_names(self) -> str:
        return ", ".join(self.names.get(a, a) for a in self.params.devices)

    def target(self) -> str | None:
        """The driver the step moves devices to (None: whatever the kernel picks)."""
        raise NotImplementedError

    def via(self) -> str:
        """libvirt or sysfs: how the step moves devices (what undo uses too)."""
        return "sysfs"

    def already_done(self, before: Binding) -> bool:
        return before.driver == self.target()

    def change(self, ctx: StepContext, device: PciDevice, before: Binding) -> None:
        raise NotImplementedError

    def apply(self, ctx: StepContext) -> dict:
        record: dict = {"via": self.via(), "devices": []}
        for address in self.params.devices:
            device = PciDevice(ctx.host, address, ctx.label(address))
            device.require()
            before = device.binding()
            entry = {
                "address": address,
                "name": self.names.get(address),
                "before": before.to_json(),
                "changed": True,
                "to": self.target(),
            }
            if self.already_done(before):
                entry["changed"] = False
                ctx.host.record(f"{address} is already on {show(before.driver)}", "nothing to do")
                record["devices"].append(entry)
                continue
            check_not_needed(ctx.host, address, ctx.force, f"{self.name} {ctx.label(address)}")
            if before.driver:
                device.check_holders()  # an unbind of a device in use would block in the kernel
            # Journaled before the change: if the hook dies half way, recovery restores it.
            record["devices"].append(entry)
            ctx.note(record)
            self.change(ctx, device, before)
        return record

    @classmethod
    def changed(cls, record: dict) -> bool:
        return any(entry.get("changed") for entry in record.get("devices", []))

    @classmethod
    def held_addresses(cls, record: dict) -> list[str]:
        return [e["address"] for e in record.get("devices", []) if e.get("changed")]

    @classmethod
    def held_changes(cls, record: dict) -> dict[str, list]:
        devices = [
            {
                "address": e["address"],
                "name": e.get("name"),
                "was": (e.get("before") or {}).get("driver"),
            }
            for e in record.get("devices", [])
            if e.get("changed")
        ]
        return {"devices": devices} if devices else {}

    @classmethod
    def undo(cls, ctx: StepContext, record: dict) -> None:
        stuck: list[str] = []
        timeout: StepTimeout | None = None
        for entry in reversed(record.get("devices", [])):
            if not entry.get("changed"):
                continue
            if entry["address"] in ctx.host.stuck:
                stuck.append(entry["address"])  # its lock is held; the others go on
                continue
            try:
                cls._undo_device(ctx, record, entry)
            except StepTimeout as exc:
                if entry["address"] not in ctx.host.stuck:
                    raise
                timeout = timeout or exc  # stuck now: the other devices go on
        if timeout is not None:
            raise timeout
        if stuck:
            ctx.host.refuse_if_stuck(stuck[0], "restore its driver")

    @classmethod
    def _undo_device(cls, ctx: StepContext, record: dict, entry: dict) -> None:
        before = Binding.from_json(entry["before"])
        device = PciDevice(ctx.host, entry["address"], ctx.label(entry["address"]))
        if not device.exists():
            raise HostError("the device disappeared; nothing to restore", device=entry["address"])
        now = device.driver()
        if before.driver is None and now not in (None, entry.get("to")) and not is_stub_driver(now):
            # Driverless before this step (a module unload left it so), and its host driver
            # has taken it back since (that module's undo ran first): leave it there.
            ctx.host.record(
                f"{entry['address']} is on {now} again", "left there (it had no driver before)"
            )
            return
        if record.get("via") == "libvirt" and before.driver and device.driver() != before.driver:
            now = device.driver()
            ctx.host.nodedev.reattach(
                entry["address"], f"{show(now)} → {before.driver}", before.driver
            )
            if device.wait_for_driver(before.driver):
                device.set_override(before.override)
                return
            ctx.warnings.append(
                f"{entry['address']}: libvirt reattach left it on {show(device.driver())}; "
                f"binding {before.driver} through sysfs"
            )
        device.restore(before)

    @classmethod
    def describe_undo(cls, record: dict) -> str:
        moves = [
            f"{e.get('name') or e['address']} → {show(e['before']['driver'])}"
            for e in reversed(record.get("devices", []))
            if e.get("changed")
        ]
        return "restore " + ", ".join(moves) if moves else "nothing (no device was changed)"


def _libvirt_only_vfio(values: dict, node: yaml.Node) -> None:
    if values["via"] == "libvirt" and values["driver"] != VFIO_PCI:
        raise Invalid(
            node, f"libvirt detaches to vfio-pci only; for {values['driver']} use via: sysfs"
        )


class Detach(DeviceStep):
    """Detach devices from their host drivers to vfio-pci. By default through libvirt's
    node-device API, exactly what `virsh nodedev-detach` does; with `via: sysfs` by
    driver_override, unbind and drivers_probe, with no call into libvirt. The driver
    link is checked afterwards. Undo returns each device to its previous driver."""

    name = "detach"
    args = Args(
        values=DetachArgs,
        fields=(
            DEVICES,
            VIA,
            Field("driver", DRIVER, default="vfio-pci", doc="the driver to detach to (vfio-pci)"),
        ),
        shorthand="devices",
        check_all=_libvirt_only_vfio,
    )
    params: DetachArgs

    def target(self) -> str:
        return self.params.driver

    def via(self) -> str:
        return self.params.via

    def asks_first(self) -> bool:
        return True  # takes the devices from their drivers (cli asks only for a GPU)

    def already_done(self, before: Binding) -> bool:
        # On a vfio-pci variant driver already is on vfio-pci for every purpose of a detach.
        target = self.target()
        return before.driver == target or (target == VFIO_PCI and is_vfio_driver(before.driver))

    def describe(self) -> str:
        return f"detach {self.device_names()} to {self.target()} via {self.params.via}"

    def change(self, ctx: StepContext, device: PciDevice, before: Binding) -> None:
        if self.params.via == "sysfs":
            device.move_to(self.target())
            return
        ctx.host.nodedev.detach(device.address, "vfio", f"{show(before.driver)} → {self.target()}")
        # libvirt picks a vfio-pci variant driver (mlx5_vfio_pci...) when one matches the device.
        device.verify(self.target(), before.driver, accept=is_vfio_driver)


class Reattach(DeviceStep):
    """Give devices back to the driver the kernel picks for them (undo of a detach done
    outside this program): libvirt's reattach, or with `via: sysfs` clearing
    driver_override, unbind and drivers_probe. Fails if no host driver takes the device."""

    name = "reattach"
    args = Args(values=ReattachArgs, fields=(DEVICES, VIA), shorthand="devices")
    params: ReattachArgs

    def target(self) -> None:
        return None

    def via(self) -> str:
        return self.params.via

    def already_done(self, before: Binding) -> bool:
        return before.driver is not None and not is_stub_driver(before.driver)

    def describe(self) -> str:
        return f"reattach {self.device_names()} to their host drivers via {self.params.via}"

    def change(self, ctx: StepContext, device: PciDevice, before: Binding) -> None:
        if self.params.via == "libvirt":
            ctx.host.nodedev.reattach(device.address, f"{show(before.driver)} → host driver")
        else:
            device.set_override(None)
            device.unbind(check_holders=False)
            device.probe()
        settled = ctx.host.wait_until(
            f"{device.address} to get a host driver",
            lambda: (driver := device.driver()) is not None and not is_stub_driver(driver),
            ctx.host.bind_wait,
        )
        if not settled:
            raise HostError(
                f"no host driver took the device (it is on {show(device.driver())})",
                device=device.address,
                hint="load the host driver's module, or name it with `bind: {device, driver}`",
            )
        ctx.host.record(
            f"check {device.address} driver", f"{show(before.driver)} → {device.driver()}"
        )


class Unbind(DeviceStep):
    """Unbind devices from whatever driver holds them, leaving them without a driver
    (as needed before some firmware or BAR operations). Undo binds the previous driver."""

    name = "unbind"
    args = Args(values=DevicesArgs, fields=(DEVICES,), shorthand="devices")

    def target(self) -> None:
        return None

    def asks_first(self) -> bool:
        return True  # takes the devices from their drivers (cli asks only for a GPU)

    def describe(self) -> str:
        return f"unbind {self.device_names()} from their drivers"

    def already_done(self, before: Binding) -> bool:
        return before.driver is None

    def change(self, ctx: StepContext, device: PciDevice, before: Binding) -> None:
        device.unbind(check_holders=False)


class Bind(DeviceStep):
    """Bind devices to a named driver (`bind: {device: gpu, driver: vfio-pci}`) through
    driver_override, unbind and drivers_probe, then check the driver link. Undo returns
    each device to its previous driver."""

    name = "bind"
    args = Args(
        values=BindArgs,
        fields=(
            Field(
                "devices",
                ListOf(Device(), "one or more device names"),
                doc="device names from `devices:`",
            ),
            Field("device", Device(), doc="a device name (same as devices: [name])"),
            Field(
                "driver", DRIVER, required=True, doc="the driver to bind, e.g. vfio-pci or amdgpu"
            ),
        ),
        check_all=lambda values, node: _one_device_field(values, node),
    )
    params: BindArgs

    def target(self) -> str:
        return self.params.driver

    def asks_first(self) -> bool:
        return True  # takes the devices from their drivers (cli asks only for a GPU)

    def describe(self) -> str:
        return f"bind {self.device_names()} to {self.target()}"

    def change(self, ctx: StepContext, device: PciDevice, before: Binding) -> None:
        device.move_to(self.target())


def _one_device_field(values: dict, node: yaml.Node) -> None:
    if bool(values["devices"]) == bool(values["device"]):
        raise Invalid(node, "bind needs `device: name` or `devices: [names]` (one of them)")
    if values["device"]:
        values["devices"] = [values["device"]]
