"""Kernel modules: what is loaded (read from <root>/proc/modules) and modprobe."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UnsafeOperation
from . import commands

if TYPE_CHECKING:
    from . import Host


def canonical(module: str) -> str:
    """The kernel treats - and _ in module names alike; /proc/modules shows _."""
    return module.replace("-", "_")


def driver_names(module: str) -> tuple[str, ...]:
    """The PCI driver names a module may register, most likely first: vfio_pci registers vfio-pci."""
    return tuple(dict.fromkeys((module.replace("_", "-"), canonical(module))))


class Modules:
    def __init__(self, root: Path, host: Host):
        self.root = Path(root)
        self.host = host

    def loaded(self) -> set[str]:
        """Modules loaded now, plus built-in ones that show up under /sys/module."""
        names: set[str] = set()
        try:
            with open(self.root / "proc" / "modules", encoding="utf-8") as handle:
                names.update(line.split(" ", 1)[0] for line in handle if line.strip())
        except OSError:
            pass
        return names

    def is_loaded(self, module: str) -> bool:
        name = canonical(module)
        return name in self.loaded() or (self.root / "sys" / "module" / name / "initstate").exists()

    def is_builtin(self, module: str) -> bool:
        name = canonical(module)
        return (self.root / "sys" / "module" / name).is_dir() and not (
            self.root / "sys" / "module" / name / "initstate"
        ).exists()

    def _guard(self, verb: str, module: str) -> None:
        if self.root.resolve() != Path("/"):
            raise UnsafeOperation(
                f"cannot {verb} module {module} with --root {self.root}: modprobe acts on the running "
                f"kernel, not on the tree; use --dry-run"
            )

    def load(self, module: str) -> None:
        self._guard("load", module)
        self.host.record(f"modprobe {module}", f"{module}: not loaded → loaded")
        self.host.bounded(
            f"modprobe {module}", lambda: commands.run(["modprobe", module], self.host.time_left())
        )

    def in_use(self, module: str) -> bool:
        """Whether the module is held (reference count above 0 in /proc/modules) or built in."""
        name = canonical(module)
        try:
            with open(self.root / "proc" / "modules", encoding="utf-8") as handle:
                for line in handle:
                    fields = line.split()
                    if fields and fields[0] == name:
                        return len(fields) < 3 or fields[2] != "0"
        except OSError:
            pass
        return self.is_builtin(module)

    def unload(self, module: str) -> None:
        self._guard("unload", module)
        self.host.record(f"modprobe -r {module}", f"{module}: loaded → not loaded")
        try:
            self.host.bounded(
                f"modprobe -r {module}",
                lambda: commands.run(["modprobe", "-r", module], self.host.time_left()),
            )
        except commands.CommandError:
            # kmod removes a module's post-softdeps first, with their dependencies once unused,
            # which can be the module itself (vfio → vfio_iommu_type1 → vfio); it then fails
            # with ENOENT on the module already gone. What matters is that it is gone.
            if self.is_loaded(module):
                raise
