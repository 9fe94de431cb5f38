"""The parts a Host is made of, as Protocols: what actions and tools may call on them.

The real host (`make_host`), the dry run (`dryrun.make_dry_run_host`), the tests' fake kernel
and the benchmark's simulated kernel each supply their own implementations; mypy checks them
all against these, and every action against what it uses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol, TypeVar

T = TypeVar("T")


class TimeBounds(Protocol):
    """Calls bounded by a timeout, and waits for a condition (the dry run's are immediate:
    it predicts at once what the kernel would show)."""

    def bounded(self, what: str, fn: Callable[[], T], limit: float) -> T: ...
    def wait_until(self, what: str, predicate: Callable[[], bool], seconds: float) -> bool: ...


class SysfsAccess(Protocol):
    """`<root>/sys`, paths relative to /sys (`bus/pci/drivers_probe`)."""

    root: Path
    base: Path

    def path(self, rel: str) -> Path: ...
    def read(self, rel: str) -> str | None: ...
    def link_name(self, rel: str) -> str | None: ...
    def kernel_path(self, rel: str) -> str: ...
    def walk(self, rel: str, depth: int) -> Iterator[tuple[str, list[str], list[str]]]: ...
    def exists(self, rel: str) -> bool: ...
    def listdir(self, rel: str) -> list[str]: ...
    def write(
        self,
        rel: str,
        value: str,
        *,
        effect: str = "",
        device: str | None = None,
        hints: dict[int, str] | None = None,
    ) -> None: ...


class ModuleControl(Protocol):
    """Kernel modules of the running kernel (read from the root, changed with modprobe)."""

    def loaded(self) -> set[str]: ...
    def is_loaded(self, module: str) -> bool: ...
    def is_builtin(self, module: str) -> bool: ...
    def in_use(self, module: str) -> bool: ...
    def without_loading(self, module: str) -> str | None: ...
    def obsolete(self, module: str) -> str | None: ...
    def usage(self, module: str) -> tuple[int, list[str]]: ...
    def dependencies(self, module: str) -> list[str]: ...
    def pci_drivers(self, module: str) -> list[str]: ...
    def load(self, module: str, drivers: tuple[str, ...] = ()) -> None: ...
    def unload(self, module: str) -> None: ...


class NodeDeviceControl(Protocol):
    """libvirt's node-device API for PCI functions (detach to a stub driver, reattach)."""

    def detach(self, address: str, driver: str, effect: str) -> None: ...
    def reattach(self, address: str, effect: str, previous_driver: str | None = None) -> None: ...


class CommandRunner(Protocol):
    """Commands as argv lists: `query` reads (runs in dry runs), `run` changes (recorded)."""

    def query(self, argv: list[str], timeout: float = 10.0) -> str: ...
    def run(
        self,
        argv: list[str],
        timeout: float | None = None,
        stdin: bytes | None = None,
        effect: str = "",
    ) -> str: ...


class ProcfsAccess(Protocol):
    """`<root>/proc`: reads anywhere, writes only under /proc/sys."""

    base: Path

    def path(self, rel: str) -> Path: ...
    def read(self, rel: str) -> str | None: ...
    def link(self, rel: str) -> str | None: ...
    def listdir(self, rel: str = "") -> list[str]: ...
    def write(self, rel: str, value: str, effect: str = "") -> None: ...


class Unattached:
    """Stands for a part not given to the Host yet (parts are made after the Host, as they
    hold it): using it is a programming error that names the part."""

    def __init__(self, part: str):
        self.part = part

    def __getattr__(self, name: str) -> object:
        raise AttributeError(f"host.{self.part} was never attached (wanted .{name})")

    def __bool__(self) -> bool:
        return False
