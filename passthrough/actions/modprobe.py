from __future__ import annotations

from ..constants import STUB_DRIVERS
from ..errors import HostError
from ..guard import check_not_needed
from ..host.commands import CommandError
from ..host.modules import canonical, driver_names
from ..pci import Binding, PciDevice
from ..schema import Args, ArgValues, Field, Invalid, ListOf, Str
from ..units import is_pci_address
from .base import Action, StepContext

TYPE_CHECKING = False  # typing's constant, without importing typing (the hook's imports)
if TYPE_CHECKING:
    import yaml

    from ..host import Host
    from ..host.parts import ModuleControl

MODULE = Str("a module name", pattern=r"[A-Za-z0-9_-]+")


def _one_of_load_or_remove(values: dict, node: yaml.Node) -> None:
    if bool(values["load"]) == bool(values["remove"]):
        raise Invalid(
            node, "modprobe takes either a list of modules to load or {remove: [...]}, not both"
        )


def bound_devices(host: Host, module: str) -> list[str]:
    """PCI devices bound to the driver a module registers (`modprobe -r vfio_pci` would
    silently unbind them and leave them without a driver)."""
    for driver in driver_names(module):
        entries = host.sysfs.listdir(f"bus/pci/drivers/{driver}")
        devices = [e for e in entries if is_pci_address(e)]
        if devices:
            return devices
    return []


class ModprobeArgs(ArgValues):
    load: list[str] | None
    remove: list[str] | None


class Modprobe(Action):
    """Load kernel modules in order (`modprobe: [vfio, vfio_iommu_type1, vfio_pci]`), or unload
    them (`modprobe: {remove: [nvidia_drm, nvidia_modeset, nvidia_uvm, nvidia]}`). Undo reverses
    only what this step changed: modules that were already loaded stay loaded. A module the
    running kernel has built in, merged into another (vfio_virqfd on 6.2+) or does not build
    (vfio_iommu_type1 with iommufd only) needs no loading: the step notes it and goes on.

    An unload leaves the devices of the module's driver without a driver (a later detach
    binds them to vfio-pci), so every one of them must be in the profile's `devices:`, none
    may be open in a process, and the host must not depend on it; otherwise the step fails
    naming it. A module another module uses is unloaded only after it: list the stack top
    first. `modprobe -r` also removes dependencies nothing else uses; they are journaled and
    loaded again by the undo, which then checks that every device is back on its driver
    (probing it again if the kernel did not)."""

    name = "modprobe"
    args = Args(
        values=ModprobeArgs,
        fields=(
            Field("load", ListOf(MODULE), doc="modules to load, in order"),
            Field("remove", ListOf(MODULE), doc="modules to unload, in order (users first)"),
        ),
        shorthand="load",
        check_all=_one_of_load_or_remove,
    )
    params: ModprobeArgs

    def describe(self) -> str:
        if self.params.remove:
            return "unload modules " + " ".join(self.params.remove)
        return "load modules " + " ".join(self.params.load or [])

    def apply(self, ctx: StepContext) -> dict:
        if self.params.remove:
            return self._unload_all(ctx)
        modules = ctx.host.modules
        record: dict = {"loaded": []}
        for module in self.params.load or []:  # the schema gives one of load and remove
            if modules.is_loaded(module):
                ctx.host.record(f"modprobe {module}", f"{module}: already loaded, nothing to do")
                continue
            provided = modules.without_loading(module)
            if provided:
                # Tutorials written for 5.x kernels name vfio_virqfd and vfio_iommu_type1; on newer
                # kernels modprobe would fail on them and stop the VM for nothing.
                ctx.host.record(f"modprobe {module}", f"{module}: {provided}; nothing to load")
                if modules.obsolete(module):
                    ctx.warnings.append(
                        f"modprobe {module} skipped: {provided}; drop it from the step "
                        f"(`modprobe: [vfio_pci]` loads what vfio needs on every kernel since 5.15)"
                    )
                continue
            record["loaded"].append(module)
            ctx.note(record)
            before = modules.loaded()
            modules.load(module)
            # modprobe loads dependencies and soft dependencies too (vfio_pci brings vfio_pci_core,
            # irqbypass...); undo unloads them as well, once nothing holds them.
            pulled_in = sorted(modules.loaded() - before - {canonical(module)})
            if pulled_in:
                record.setdefault("pulled_in", []).extend(pulled_in)
                ctx.note(record)
        return record

    # --- unloading a driver stack -----------------------------------------------------------

    def _unload_all(self, ctx: StepContext) -> dict:
        modules, remove = ctx.host.modules, self.params.remove or []
        record: dict = {"unloaded": [], "devices": []}
        # Every listed module's devices first, so that a refusal leaves everything loaded.
        for module in remove:
            if modules.is_loaded(module):
                self._check_devices(ctx, module, module)
        for module in remove:
            if not modules.is_loaded(module):
                gone = canonical(module) in record["unloaded"]
                ctx.host.record(
                    f"modprobe -r {module}",
                    "already removed with the modules before it" if gone else "not loaded",
                )
                continue
            if modules.is_builtin(module):
                raise HostError(
                    f"module {module} is built into the kernel and cannot be unloaded",
                    hint="leave it out of remove:; detach its devices instead",
                )
            self._check_users(ctx, module)
            driven = [
                entry
                for taken in goes_with(modules, module)
                for entry in self._check_devices(ctx, taken, module)
            ]
            # Journaled before the change: a crash after the unload leaves what to load back.
            record["devices"] += [d for d in driven if d not in record["devices"]]
            before = modules.loaded()
            record["unloaded"].append(canonical(module))
            ctx.note(record)
            drivers_before = _drivers(ctx.host)
            self._unload(ctx, module)
            also = sorted(before - modules.loaded() - {canonical(module)})
            for taken in also:
                ctx.host.record(f"modprobe -r removes {taken} too", f"{taken}: unused → not loaded")
            record["unloaded"] += [m for m in also if m not in record["unloaded"]]
            ctx.note(record)
            self._left_driverless(ctx, module, drivers_before, record)
        return record

    def _check_users(self, ctx: StepContext, module: str) -> None:
        users = ctx.host.modules.usage(module)[1]
        if users:
            order = [*users, module]
            raise HostError(
                f"module {module} is used by {', '.join(users)}, which "
                f"{'is' if len(users) == 1 else 'are'} still loaded",
                hint=f"unload the users first, in this order: remove: [{', '.join(order)}]",
            )

    def _check_devices(self, ctx: StepContext, module: str, unloaded: str) -> list[dict]:
        """The devices the module drives, each refused unless it is the profile's, unused and
        not needed by the host (`modprobe -r unloaded` takes the module with it). Returns
        their journal entries."""
        host = ctx.host
        entries = []
        for driver in host.modules.pci_drivers(module):
            for address in _bound(host, driver):
                device = PciDevice(host, address, ctx.label(address))
                if address not in ctx.names and not ctx.force:
                    taken = (
                        ""
                        if module == canonical(unloaded)
                        else f" (`modprobe -r {unloaded}` removes it too)"
                    )
                    raise HostError(
                        f"module {module}{taken} also drives {address} ({device.what()}, "
                        f"{_hex(device.attribute('vendor'))}:{_hex(device.attribute('device'))}), "
                        f"which is not in this profile's devices; unloading it would leave that "
                        f"device without a driver",
                        hint="unload only modules whose devices all go to the VM, or detach the "
                        "VM's devices without unloading the module",
                    )
                check_not_needed(host, address, ctx.force, f"unload {module}, which drives")
                device.check_holders()
                entries.append(
                    {
                        "address": address,
                        "name": ctx.names.get(address),
                        "module": canonical(module),
                        **device.binding().to_json(),
                    }
                )
        return entries

    def _unload(self, ctx: StepContext, module: str) -> None:
        count, users = ctx.host.modules.usage(module)
        try:
            ctx.host.modules.unload(module)
        except CommandError as exc:
            raise HostError(
                f"{exc} (its reference count is {count})",
                hint="something still holds it: a display server or nvidia-persistenced (stop "
                "them first: display_manager, command), a console on its framebuffer "
                "(vtconsoles: unbind), or a process with its device open (kill_holders)",
            ) from None

    def _left_driverless(
        self, ctx: StepContext, module: str, before: dict[str, str | None], record: dict
    ) -> None:
        """Show (and check) the devices this unload left without a driver."""
        ours = {d["address"] for d in record["devices"]}
        now = _drivers(ctx.host)
        for address, driver in before.items():
            if driver is None or now.get(address) is not None:
                continue
            ctx.host.record(
                f"check {address} driver", f"{driver} → no driver ({ctx.label(address)})"
            )
            if address in ours:
                continue
            # A driver of a dependency that modprobe -r took along: journaled, so the undo
            # checks it too; refused (and so rolled back) when it is not the profile's.
            record["devices"].append(
                {
                    "address": address,
                    "name": ctx.names.get(address),
                    "module": canonical(module),
                    "driver": driver,
                    "override": PciDevice(ctx.host, address).override(),
                }
            )
            ctx.note(record)
            if address not in ctx.names and not ctx.force:
                raise HostError(
                    f"unloading {module} also left it without its driver {driver}, and it is "
                    f"not in this profile's devices",
                    device=address,
                )

    @classmethod
    def changed(cls, record: dict) -> bool:
        return bool(record.get("loaded") or record.get("unloaded"))

    @classmethod
    def held_addresses(cls, record: dict) -> list[str]:
        return [d["address"] for d in record.get("devices", [])] if record.get("unloaded") else []

    @classmethod
    def held_changes(cls, record: dict) -> dict[str, list]:
        changes: dict[str, list] = {}
        if record.get("loaded"):
            changes["modules"] = list(record["loaded"])
        if record.get("unloaded"):
            # The devices the unload left without a driver; `other` says what undo loads.
            changes["devices"] = [
                {"address": d["address"], "name": d.get("name"), "was": d["driver"]}
                for d in record.get("devices", [])
            ]
            changes["other"] = [cls.describe_undo({"unloaded": record["unloaded"]})]
        return changes

    @classmethod
    def undo(cls, ctx: StepContext, record: dict) -> None:
        modules = ctx.host.modules
        kept, named = [], []
        for module in reversed(record.get("loaded", [])):
            if not modules.is_loaded(module):
                continue  # unloading a later module took its dependencies with it
            holders = bound_devices(ctx.host, module)
            if holders:
                kept.append(f"{module} (it still drives {', '.join(holders)})")
                continue
            named.append(module)
        # Each module once nothing holds it: vfio is held by vfio_iommu_type1, which `modprobe vfio`
        # pulled in, so the order of the profile is not an order modprobe -r can follow.
        unload_unused(modules, named + record.get("pulled_in", []))
        for module in named:
            if modules.is_loaded(module):
                modules.unload(module)  # still held by something else: modprobe -r says by what
        devices = record.get("devices", [])
        stuck: list[HostError] = []
        for module in reversed(record.get("unloaded", [])):
            try:
                # An unload stuck in the kernel: not loaded back behind its back, nor done;
                # the journal keeps the step for recover once that unload has returned.
                ctx.host.refuse_if_module_stuck(module, f"load {module} back")
            except HostError as exc:
                stuck.append(exc)
                continue
            if not modules.is_loaded(module):
                drivers = tuple(
                    dict.fromkeys(d["driver"] for d in devices if d["module"] == module)
                )
                modules.load(module, drivers)
        problems = _back_on_drivers(ctx, devices)
        if stuck:
            raise HostError("; ".join([str(stuck[0]), *problems]))
        if kept or problems:
            # Not done: the journal keeps the step, and the next release or recover retries it
            # once those devices are back on their own drivers.
            raise HostError(
                "; ".join((["left loaded: " + "; ".join(kept)] if kept else []) + problems),
                hint="modprobe -r would leave those devices without a driver"
                if kept
                else "see `dmesg` for the driver's probe; `passthrough-hook recover` retries",
            )

    @classmethod
    def describe_undo(cls, record: dict) -> str:
        parts = []
        if record.get("loaded"):
            parts.append("unload " + " ".join(reversed(record["loaded"])))
        if record.get("pulled_in"):
            parts.append("unload, once unused, " + " ".join(record["pulled_in"]))
        if record.get("unloaded"):
            parts.append("load " + " ".join(reversed(record["unloaded"])))
            devices = record.get("devices", [])
            if devices:
                parts.append(
                    "check "
                    + ", ".join(f"{d.get('name') or d['address']} → {d['driver']}" for d in devices)
                )
        return "; ".join(parts) or "nothing (no module was changed)"


def _hex(value: str | None) -> str:
    return (value or "?").removeprefix("0x")


def goes_with(modules: ModuleControl, module: str) -> list[str]:
    """The modules `modprobe -r module` removes: the module, then each dependency left with
    no user and no other reference (kmod removes those too), recursively."""
    gone = [canonical(module)]
    for name in gone:
        for dependency in modules.dependencies(name):
            count, users = modules.usage(dependency)
            if (
                dependency not in gone
                and set(users) <= set(gone)
                and count == len(users)
                and not modules.is_builtin(dependency)
            ):
                gone.append(dependency)
    return gone


def _drivers(host: Host) -> dict[str, str | None]:
    """Every PCI function's driver now."""
    return {
        address: host.sysfs.link_name(f"bus/pci/devices/{address}/driver")
        for address in host.sysfs.listdir("bus/pci/devices")
    }


def _bound(host: Host, driver: str) -> list[str]:
    entries = host.sysfs.listdir(f"bus/pci/drivers/{driver}")
    return [e for e in entries if is_pci_address(e)]


def _back_on_drivers(ctx: StepContext, devices: list[dict]) -> list[str]:
    """After the reload: each device on its driver again, within the bind wait; one the
    kernel did not probe (driverless, or left on a stub driver) is bound through
    driver_override. Returns what could not be restored."""
    problems = []
    for entry in devices:
        device = PciDevice(ctx.host, entry["address"], ctx.label(entry["address"]))
        if not device.exists():
            problems.append(f"{device.label} is gone from the bus")
            continue
        wanted = Binding(entry["driver"], entry.get("override"))
        if device.wait_for_driver(wanted.driver):
            ctx.host.record(f"check {device.address} driver", f"→ {wanted.driver}")
            device.set_override(wanted.override)
            continue
        now = device.driver()
        if now not in (None, *STUB_DRIVERS):
            problems.append(f"{device.label} is on {now}, not {wanted.driver}")
            continue
        try:
            device.restore(wanted)
        except HostError as exc:
            problems.append(str(exc))
    return problems


def unload_unused(modules: ModuleControl, candidates: list[str]) -> None:
    """Unload the candidates, first first, each once nothing holds it (unloading one can free
    another). One that something else holds stays loaded."""
    pending = list(candidates)
    for _ in range(len(pending)):
        pending = [m for m in pending if modules.is_loaded(m)]
        free = [m for m in pending if not modules.in_use(m)]
        if not free:
            return
        modules.unload(free[0])
