from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ..constants import PCI_ADDRESS
from ..errors import HostError
from ..host.modules import canonical, driver_names
from ..schema import Args, Field, Invalid, ListOf, Str
from .base import Action, StepContext

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
        devices = [e for e in entries if re.fullmatch(PCI_ADDRESS, e)]
        if devices:
            return devices
    return []


class Modprobe(Action):
    """Load kernel modules in order (`modprobe: [vfio, vfio_iommu_type1, vfio_pci]`), or unload
    them (`modprobe: {remove: [nouveau]}`). Undo reverses only what this step changed: modules
    that were already loaded stay loaded. A module the running kernel has built in, merged into
    another (vfio_virqfd on 6.2+) or does not build (vfio_iommu_type1 with iommufd only) needs
    no loading: the step notes it and goes on. A module whose driver still holds devices is not
    unloaded (modprobe -r would leave those devices without a driver)."""

    undo_after_devices = True

    name = "modprobe"
    args = Args(
        fields=(
            Field("load", ListOf(MODULE), doc="modules to load, in order"),
            Field("remove", ListOf(MODULE), doc="modules to unload, in order"),
        ),
        shorthand="load",
        check_all=_one_of_load_or_remove,
    )

    def describe(self) -> str:
        if self.values["remove"]:
            return "unload modules " + " ".join(self.values["remove"])
        return "load modules " + " ".join(self.values["load"])

    def apply(self, ctx: StepContext) -> dict:
        modules = ctx.host.modules
        if self.values["remove"]:
            record: dict = {"unloaded": []}
            for module in self.values["remove"]:
                if not modules.is_loaded(module):
                    continue
                holders = bound_devices(ctx.host, module)
                if holders and not ctx.force:
                    raise HostError(
                        f"module {module} still drives {', '.join(holders)}; unloading it would "
                        f"leave them without a driver",
                        hint="detach or rebind them first, or set force: true",
                    )
                record["unloaded"].append(module)
                ctx.note(record)
                modules.unload(module)
            return record
        record = {"loaded": []}
        for module in self.values["load"]:
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

    @classmethod
    def changed(cls, record: dict) -> bool:
        return bool(record.get("loaded") or record.get("unloaded"))

    @classmethod
    def held_changes(cls, record: dict) -> dict[str, list]:
        return {"modules": list(record["loaded"])} if record.get("loaded") else {}

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
        for module in reversed(record.get("unloaded", [])):
            if not modules.is_loaded(module):
                modules.load(module)
        if kept:
            # Not done: the journal keeps the step, and the next release or recover retries it
            # once those devices are back on their own drivers.
            raise HostError(
                "left loaded: " + "; ".join(kept),
                hint="modprobe -r would leave those devices without a driver",
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
        return "; ".join(parts) or "nothing (no module was changed)"


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
