"""What the real-kernel tier (tests/guest/test_kernel_scenarios.py) found, pinned here
where it runs in milliseconds:

- `modprobe vfio_pci` also loads vfio_pci_core, irqbypass, vfio_virqfd; `modprobe vfio`
  pulls vfio_iommu_type1 in as a soft dependency. Undo must unload those too, or
  release leaves the module list changed.
- `modprobe -r vfio` removes the soft dependency vfio_iommu_type1 first, with vfio as
  its now-unused dependency, then fails with ENOENT on vfio: the module is gone, the
  exit status says failure.
- A dry run of release/end predicted that vfio_pci still drove the card it would have
  given back a step earlier.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from runs import CONFIG, hook

from passthrough.actions.base import StepContext
from passthrough.actions.modprobe import Modprobe, ModprobeArgs
from passthrough.errors import HostError
from passthrough.host import Host, commands
from passthrough.host.modules import Modules

# The 6.1 dependency graph the guest showed (module -> modules it needs), and soft
# dependencies modprobe loads after a module.
DEPENDS = {
    "vfio_pci": ("vfio_pci_core", "vfio"),
    "vfio_pci_core": ("irqbypass", "vfio_virqfd", "vfio"),
    "vfio_iommu_type1": ("vfio",),
    "kvm": ("irqbypass",),
}
SOFT_POST = {"vfio": ("vfio_iommu_type1",)}


class DependentModules:
    """Modules with dependencies, as modprobe handles them: load brings dependencies and
    soft dependencies; unload refuses a module in use and takes the dependencies it named
    directly once unused (not theirs: irqbypass stays after `modprobe -r vfio_pci`)."""

    def __init__(self, loaded=()):
        self.modules = set(loaded)

    def loaded(self) -> set[str]:
        return set(self.modules)

    def is_loaded(self, module: str) -> bool:
        return module in self.modules

    def in_use(self, module: str) -> bool:
        return any(module in DEPENDS.get(other, ()) for other in self.modules)

    def without_loading(self, module: str) -> None:
        return None  # a 6.1 kernel: every one of these is a module to load

    def load(self, module: str, drivers: tuple[str, ...] = ()) -> None:
        if module in self.modules:
            return
        for dependency in DEPENDS.get(module, ()):
            self.load(dependency)
        self.modules.add(module)
        for soft in SOFT_POST.get(module, ()):
            self.load(soft)

    def unload(self, module: str) -> None:
        if self.in_use(module):
            raise HostError(
                f"`modprobe -r {module}` exited with status 1: Module {module} is in use"
            )
        self.modules.discard(module)
        for dependency in DEPENDS.get(module, ()):
            if dependency in self.modules and not self.in_use(dependency):
                self.modules.discard(dependency)


def context(modules: DependentModules) -> StepContext:
    host = SimpleNamespace(
        modules=modules,
        sysfs=SimpleNamespace(listdir=lambda rel: []),
        record=lambda text, effect="": None,
    )
    return StepContext(host=host, names={})


def modprobe(*names: str) -> Modprobe:
    return Modprobe(ModprobeArgs(load=list(names), remove=[]), {})


def test_undo_unloads_the_dependencies_modprobe_pulled_in():
    modules = DependentModules({"snd"})
    ctx = context(modules)
    record = modprobe("vfio", "vfio_iommu_type1", "vfio_pci").apply(ctx)
    assert record["loaded"] == ["vfio", "vfio_pci"]  # vfio_iommu_type1 came with vfio
    assert record["pulled_in"] == ["vfio_iommu_type1", "irqbypass", "vfio_pci_core", "vfio_virqfd"]
    Modprobe.undo(ctx, record)
    assert modules.loaded() == {"snd"}


def test_a_pulled_in_module_something_else_now_uses_stays_loaded():
    modules = DependentModules()
    ctx = context(modules)
    record = modprobe("vfio_pci").apply(ctx)
    modules.load("kvm")  # the VM's hypervisor starts using irqbypass meanwhile
    Modprobe.undo(ctx, record)
    assert modules.loaded() == {"kvm", "irqbypass"}


@pytest.fixture
def proc_modules(fs):
    path = Path("/proc/modules")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "vfio 45056 0 - Live 0x0000000000000000\nsnd 126976 0 - Live 0x0000000000000000\n"
    )
    return path


def modprobe_r_removing(proc_modules: Path, gone: bool):
    """`modprobe -r vfio` as kmod 30 does it (commands.run_detached, as Modules.unload runs
    it): the module goes (or not), and the status is 1."""

    def run(argv, timeout, what):
        if gone:
            proc_modules.write_text("snd 126976 0 - Live 0x0000000000000000\n")
        raise commands.CommandError(
            argv,
            1,
            "modprobe: ERROR: ../libkmod/libkmod-module.c:856 "
            "kmod_module_remove_module() could not remove 'vfio': "
            "No such file or directory\n",
        )

    return run


def real_modules() -> Modules:
    host = Host(root=Path("/"), sysfs=None, modules=None, nodedev=None)
    host.modules = Modules(Path("/"), host)
    return host.modules


def test_modprobe_r_failing_on_a_module_it_already_removed_counts_as_unloaded(
    proc_modules, monkeypatch
):
    monkeypatch.setattr(commands, "run_detached", modprobe_r_removing(proc_modules, gone=True))
    modules = real_modules()
    modules.unload("vfio")
    assert not modules.is_loaded("vfio")


def test_modprobe_r_failing_with_the_module_still_loaded_is_an_error(proc_modules, monkeypatch):
    monkeypatch.setattr(commands, "run_detached", modprobe_r_removing(proc_modules, gone=False))
    with pytest.raises(HostError, match="could not remove 'vfio'"):
        real_modules().unload("vfio")


def test_dry_run_of_release_sees_vfio_pci_freed_by_the_earlier_undo(kernel):
    assert hook(kernel, "prepare", "begin", config=CONFIG)[0] == 0
    # The fake kernel keeps its module list in memory; a dry run reads /proc/modules.
    Path("/host/proc/modules").write_text(
        "".join(f"{m} 16384 0 - Live 0x0\n" for m in sorted(kernel.modules))
    )
    result = hook(kernel, "release", "end", dry_run=True, config=CONFIG)
    code, plan = result.code, result.text
    assert code == 0, plan
    assert "modprobe -r vfio_pci" in plan
    assert "still drives" not in plan
