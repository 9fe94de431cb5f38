"""Host access: every read and write of the host goes through a `Host`.

A Host is rooted at a directory (`--root`, default `/`), so tests and dry runs never
touch the real /sys. `make_host()` builds the real one; `dryrun.make_dry_run_host()`
builds one that reads the host but predicts and records every change instead.
"""

from __future__ import annotations

import os
import time

from ..errors import HostError, StepTimeout
from ..record import field, record
from .detached import since

TYPE_CHECKING = False  # typing's constant, without importing typing (the hook's imports)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    from .parts import (
        CommandRunner,
        ModuleControl,
        NodeDeviceControl,
        ProcfsAccess,
        SysfsAccess,
        TimeBounds,
    )

    T = TypeVar("T")

# Default bound for one sysfs write or libvirt call when the step sets none. An unbind
# of a GPU still in use blocks in the kernel for ever; this turns that into an error.
OPERATION_TIMEOUT = 20.0


@record
class Operation:
    """One concrete change (or predicted change) to the host, for the plan and the log."""

    text: str
    effect: str = ""  # "amdgpu → vfio-pci", "BAR 2: 256 MiB → 8 MiB"

    def __str__(self) -> str:
        return f"{self.text}   [{self.effect}]" if self.effect else self.text


class Unattached:
    """Stands for a part not given to the Host yet (parts are made after the Host, as they
    hold it): using it is a programming error that names the part."""

    def __init__(self, part: str):
        self.part = part

    def __getattr__(self, name: str) -> object:
        raise AttributeError(f"host.{self.part} was never attached (wanted .{name})")

    def __bool__(self) -> bool:
        return False


def _unattached(part: str) -> Callable[[], Any]:
    return lambda: Unattached(part)


@record
class Host:
    root: str
    sysfs: SysfsAccess = field(default_factory=_unattached("sysfs"))
    modules: ModuleControl = field(default_factory=_unattached("modules"))
    nodedev: NodeDeviceControl = field(default_factory=_unattached("nodedev"))
    commands: CommandRunner = field(default_factory=_unattached("commands"))
    procfs: ProcfsAccess = field(default_factory=_unattached("procfs"))
    clock: TimeBounds = field(default_factory=lambda: Clock())  # PredictedClock in a dry run
    dry_run: bool = False
    operations: list[Operation] = field(default_factory=list)
    deadline: float | None = None  # monotonic time the current step must end by
    force: bool = False  # the current step's `force: true`: safety refusals become plan notes
    operation_timeout: float = OPERATION_TIMEOUT
    step_cache: dict = field(
        default_factory=dict
    )  # facts read once per step; emptied by the runner
    # How long a probe may take to show up as a driver link. Probes are synchronous for
    # most drivers; some probe asynchronously, and firmware loading takes time.
    bind_wait: float = 5.0
    on_operation: Callable[[Operation], None] | None = None
    # Devices a write left stuck in the kernel (address -> what, since, the helper's pid),
    # and module unloads (`module NAME` -> the same, with the devices of its drivers):
    # their device lock is held, so nothing more is written to them. Loaded from the
    # journal at the start of a run, saved to it after each step.
    stuck: dict[str, dict] = field(default_factory=dict)

    def record(self, text: str, effect: str = "") -> None:
        op = Operation(text, effect)
        self.operations.append(op)
        if self.on_operation:
            self.on_operation(op)

    def take_operations(self) -> list[Operation]:
        ops, self.operations = self.operations, []
        return ops

    def step(self, timeout: float, force: bool = False) -> StepScope:
        """The scope of one step or one undo (`with host.step(timeout, force):`): its
        deadline, its `force: true`, a fresh cache of the facts read once per step, and no
        operations left from before (the caller takes the step's with take_operations()).
        The deadline and force in effect before (an `undo` step undoing others) are back
        when the scope ends."""
        return StepScope(self, timeout, force)

    def note_stuck(self, key: str, write: str, pid: int, **fields: object) -> dict:
        """Note what a write or command left stuck in the kernel (key: the device's address,
        or `module NAME` for a module unload): nothing more touches it in this run, the
        journal keeps the helper's pid, and recover waits until that helper is gone."""
        from .detached import start_time

        stat = self.procfs.read(f"{pid}/stat") if self.procfs else None
        record = {
            **fields,
            "write": write,
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "pid": pid,
            "started": start_time(stat),
        }
        self.stuck[key] = record
        return record

    def stuck_addresses(self) -> list[str]:
        """The devices whose lock a stuck write holds, or that a stuck module unload is
        taking its driver from."""
        found = [r["address"] for r in self.stuck.values() if r.get("address")]
        found += [a for r in self.stuck.values() for a in r.get("devices") or ()]
        return list(dict.fromkeys(found))

    def refuse_if_stuck(self, address: str, doing: str) -> None:
        """Raise HostError when a write on address is stuck in the kernel: the device's lock
        is held, so this would block too (or act behind that write's back). So is a device
        of a module whose unload is stuck: the kernel is unbinding it."""
        stuck = self.stuck.get(address)
        if stuck is None:
            stuck = next(
                (r for r in self.stuck.values() if address in (r.get("devices") or ())), None
            )
        if stuck is None:
            return
        held = f"module {stuck['module']}'s unload, " if stuck.get("module") else ""
        raise HostError(
            f"not going to {doing}: the device is stuck in the kernel since "
            f"{since(stuck)} ({held}{stuck.get('write', 'a write')}, "
            f"helper pid {stuck.get('pid', '?')})",
            device=address,
            hint="end the processes holding it; `passthrough-hook recover` then puts it back",
        )

    def refuse_if_module_stuck(self, module: str, doing: str) -> None:
        """Raise HostError when an unload of module is stuck in the kernel: loading or
        unloading it again would wait behind it (or act behind its back)."""
        from .modules import canonical

        name = canonical(module)
        stuck = next(
            (r for r in self.stuck.values() if name in (r.get("modules") or [r.get("module")])),
            None,
        )
        if stuck is None or not stuck.get("module"):
            return
        raise HostError(
            f"not going to {doing}: `{stuck.get('write')}` is stuck in the kernel since "
            f"{since(stuck)} (helper pid {stuck.get('pid', '?')})",
            hint="end the processes holding the module's devices; `passthrough-hook recover` "
            "then puts it back",
        )

    def refuse_if_driver_stuck(self, drivers: tuple[str, ...], doing: str) -> None:
        """Raise HostError when a device stuck in the kernel is on one of drivers: unloading
        its module would wait on that device's lock too."""
        for address, stuck in self.stuck.items():
            if stuck.get("address") and stuck.get("driver") in drivers:
                self.refuse_if_stuck(address, doing)

    def time_left(self, default: float | None = None) -> float:
        default = self.operation_timeout if default is None else default
        if self.deadline is None:
            return default
        return max(0.0, min(default, self.deadline - time.monotonic()))

    def bounded(self, what: str, fn: Callable[[], T], timeout: float | None = None) -> T:
        """Run fn, giving up after the time left for the step; raises StepTimeout."""
        limit = self.time_left() if timeout is None else min(timeout, self.time_left())
        return self.clock.bounded(what, fn, limit)

    def wait_until(self, what: str, predicate: Callable[[], bool], timeout: float) -> bool:
        """Whether predicate became true within timeout (and the time left for the step)."""
        return self.clock.wait_until(what, predicate, min(timeout, self.time_left(timeout)))


class StepScope:
    """Host.step's scope (a class, not contextlib's decorator: the hook's path imports no
    contextlib)."""

    def __init__(self, host: Host, timeout: float, force: bool):
        self.host, self.timeout, self.force = host, timeout, force
        self.saved: tuple[float | None, bool] = (None, False)

    def __enter__(self) -> None:
        host = self.host
        self.saved = host.deadline, host.force
        host.operations = []
        host.step_cache.clear()
        host.deadline = time.monotonic() + self.timeout
        host.force = self.force

    def __exit__(self, *exc_info: object) -> None:
        self.host.deadline, self.host.force = self.saved


class Clock:
    """Time on the real host: calls bounded by a timeout, and waits that poll."""

    def bounded(self, what: str, fn: Callable[[], T], limit: float) -> T:
        """A call that may block in the kernel cannot be interrupted, so it runs in a thread
        of its own and the hook reports the timeout and goes on instead of hanging libvirt.
        `_thread`, not `threading`: the interpreter's own module, with nothing to import
        (threading costs an event a sixth of a second under QEMU), and its threads are not
        waited for at exit, as daemon threads are not."""
        import _thread

        outcome: dict[str, object] = {}
        finished = _thread.allocate_lock()
        finished.acquire()

        def target() -> None:
            try:
                outcome["value"] = fn()
            except BaseException as exc:  # re-raised in the calling thread
                outcome["error"] = exc
            finally:
                finished.release()

        _thread.start_new_thread(target, ())
        if not finished.acquire(timeout=max(0.0, limit)):
            raise StepTimeout(f"{what} did not finish within {limit:.0f} s")
        if "error" in outcome:
            raise outcome["error"]  # type: ignore[misc]
        return outcome.get("value")  # type: ignore[return-value]

    def wait_until(self, what: str, predicate: Callable[[], bool], seconds: float) -> bool:
        """Poll predicate (1 ms growing to 50 ms) until true or `seconds` passed; never a
        fixed sleep."""
        end = time.monotonic() + seconds
        delay = 0.001
        while True:
            if predicate():
                return True
            if time.monotonic() >= end:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


def make_host(root: str | os.PathLike = "/") -> Host:
    """The real host. Module loading and libvirt act on the running kernel whatever the
    root is, so with a root other than / they refuse (see their classes)."""
    from .commands import Commands
    from .libvirt import NodeDevices
    from .modules import Modules
    from .procfs import Procfs
    from .sysfs import Sysfs

    root_path = os.fspath(root)
    host = Host(root=root_path)
    host.sysfs = Sysfs(root_path, host)
    host.modules = Modules(root_path, host)
    host.nodedev = NodeDevices(root_path, host)
    host.commands = Commands(root_path, host)
    host.procfs = Procfs(root_path, host)
    return host
