"""The registry of profile actions: name -> class. Every action is listed here by hand.

Each name is listed with the module that defines it, and the module is imported the first
time its action is looked up: a libvirt event needs only the actions its profile names
(validation looks each step's one up) and those in the journal it undoes, and every event
pays for each import. Iterating names (`in`, `", ".join(REGISTRY)`, did-you-mean
suggestions) imports nothing; `items()` and `values()` import every module (the schema,
check, the docs).
"""

from __future__ import annotations

# The module os has already loaded: `collections.abc` re-exports these, but importing it
# imports `collections` too (with keyword, operator, reprlib and itertools), on every event.
from _collections_abc import MutableMapping

TYPE_CHECKING = False  # typing's constant, without importing typing (the hook's imports)
if TYPE_CHECKING:
    from collections.abc import Iterator

    from .base import Action

# name -> (module in this package, class), in the order the schema and the docs list them.
ACTIONS: dict[str, tuple[str, str]] = {
    "modprobe": ("modprobe", "Modprobe"),
    "detach": ("drivers", "Detach"),
    "reattach": ("drivers", "Reattach"),
    "unbind": ("drivers", "Unbind"),
    "bind": ("drivers", "Bind"),
    "resize_bar": ("resize_bar", "ResizeBar"),
    "remove_rescan": ("remove_rescan", "RemoveRescan"),
    "reset_method": ("reset_method", "ResetMethod"),
    "undo": ("undo", "Undo"),
    # the toolbox: single-GPU hosts, tuning, escape hatches, legacy scripts
    "display_manager": ("display_manager", "DisplayManager"),
    "kill_holders": ("kill_holders", "KillHolders"),
    "vtconsoles": ("vtconsoles", "VtConsoles"),
    "framebuffer": ("framebuffer", "Framebuffer"),
    "cpus": ("cpus", "Cpus"),
    "governor": ("governor", "Governor"),
    "hugepages": ("hugepages", "Hugepages"),
    "sysfs": ("sysfs_write", "SysfsWrite"),
    "command": ("command", "Command"),
    "scripts": ("scripts", "Scripts"),
}


class Registry(MutableMapping[str, "type[Action]"]):
    """Action names -> classes, each module imported on first look-up. Mutable only so a
    test can put a stand-in in place (monkeypatch.setitem)."""

    def __init__(self, table: dict[str, tuple[str, str]]):
        self._where: dict[str, tuple[str, str] | None] = dict(table)
        self._loaded: dict[str, type[Action]] = {}

    def __getitem__(self, name: str) -> type[Action]:
        action = self._loaded.get(name)
        if action is None:
            where = self._where[name]  # KeyError for a name no action has
            if where is None:
                raise KeyError(name)
            module, cls = where
            # __import__ rather than importlib.import_module: importlib costs the hook an import
            action = getattr(__import__(f"{__name__}.{module}", fromlist=(cls,)), cls)
            self._loaded[name] = action
        return action

    def __contains__(self, name: object) -> bool:
        return name in self._where  # without importing anything

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def __setitem__(self, name: str, action: type[Action]) -> None:
        self._where.setdefault(name, None)
        self._loaded[name] = action

    def __delitem__(self, name: str) -> None:
        del self._where[name]
        self._loaded.pop(name, None)


REGISTRY = Registry(ACTIONS)
