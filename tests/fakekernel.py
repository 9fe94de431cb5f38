"""A fake Linux kernel on pyfakefs for unit tests.

The host tree from tests/hosts.py is written into the fake filesystem; every kernel
control file (driver_override, resourceN_resize, drivers_probe, drivers/*/bind|unbind)
gets a pyfakefs side effect that runs passthrough.host.kernel_model.KernelModel, so
writes behave like the real kernel's, traps included. Faults can be injected per file
(an errno, a probe that binds nothing, a write that hangs, the process being killed).
Module loading and libvirt's node-device calls are faked at the same level.

The "stuck" fault is the kernel's uninterruptible wait (an unbind while a process holds
the device, ../shared/notes/real-hosts.md): the hook's detached helper
(passthrough/host/detached.py) really forks and blocks on a pipe this kernel holds, so
nothing the hook does can interrupt it. `release_stuck()` is the holder letting go: the
write completes and the helper exits. Until then any other write to that device blocks
too, as on the device lock of a real kernel (and is listed in `writes_on_stuck`).
"""

from __future__ import annotations

import copy
import errno
import fnmatch
import os
import posix  # the hold pipe is a real one, shared with helper processes (pyfakefs fakes os)
import re
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hosts import HostSpec, module_of, proc_modules, write_tree

from passthrough.errors import HostError, StepTimeout
from passthrough.host import Host, detached
from passthrough.host.commands import CommandError, Commands
from passthrough.host.kernel_files import SystemFiles
from passthrough.host.kernel_model import KernelModel
from passthrough.host.libvirt import stuck_call
from passthrough.host.modules import KernelModules, Modules, canonical, configured_ids, driver_names
from passthrough.host.procfs import Procfs
from passthrough.host.sysfs import Sysfs
from passthrough.host.vga import sysfb_policy
from passthrough.pci import is_vfio_driver

CONTROL = re.compile(
    r"(^bus/pci/drivers_probe$|^bus/pci/drivers/[^/]+/(bind|unbind)$|"
    r"/driver_override$|/resource\d_resize$|/remove$|^bus/pci/rescan$|/reset_method$|"
    # the toolbox's files (passthrough/host/kernel_files.py)
    r"/vtcon\d+/bind$|^bus/platform/drivers/[^/]+/(bind|unbind)$|/nr_hugepages$|"
    r"/scaling_governor$|^fs/cgroup/(.+/)?(cpuset\.cpus|cgroup\.subtree_control)$)"
)


class Killed(BaseException):
    """Stands for kill -9 in the middle of a step: nothing in the program catches it."""


class StuckInKernel(Exception):
    """Raised by a control file's side effect: this write waits in the kernel. Only the
    detached-write path turns it into a helper process blocked on the hold pipe; a write
    the hook makes in its own process would hang it (the test then sees exit 3)."""


@dataclass
class Fault:
    pattern: str  # fnmatch pattern on the path relative to /sys, or a libvirt call name
    kind: str  # errno name (EBUSY...), "hang" (until released), "deadline", "stuck", "kill", "libvirt"
    times: int = 1


ADDRESS = re.compile(r"[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]")


def device_of(rel: str, value: str) -> str | None:
    """The PCI function a control write acts on (its directory, or the address written)."""
    match = re.match(r"^bus/pci/devices/([^/]+)/", rel)
    if match:
        return match.group(1)
    value = value.strip()
    return value if ADDRESS.fullmatch(value) else None


class TreeStore:
    """KernelModel's store on a directory tree (real, or pyfakefs's through FsStore)."""

    def __init__(self, root: Path):
        self.sys = root / "sys"
        # Functions written to `remove`: address -> (device directory, its IOMMU group).
        self.removed: dict[str, tuple[Path, str | None]] = {}
        self.holding = root / ".removed-pci"  # outside sys/: where removed directories wait

    def read(self, rel: str) -> str | None:
        try:
            return (self.sys / rel).read_text().strip()
        except OSError:
            return None

    def set_text(self, rel: str, text: str) -> None:
        (self.sys / rel).write_text(text + "\n")

    def link_name(self, rel: str) -> str | None:
        try:
            return os.path.basename(os.readlink(self.sys / rel))
        except OSError:
            return None

    def exists(self, rel: str) -> bool:
        return os.path.lexists(self.sys / rel)

    def listdir(self, rel: str) -> list[str]:
        try:
            return sorted(os.listdir(self.sys / rel))
        except OSError:
            return []

    def upstream(self, address: str) -> str | None:
        """The bridge above a device: the parent directory of its /sys/devices path."""
        parent = os.path.basename(
            os.path.dirname(os.path.realpath(self.sys / "bus/pci/devices" / address))
        )
        return (
            parent if re.fullmatch(r"[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]", parent) else None
        )

    def set_driver_link(self, address: str, driver: str | None) -> None:
        device = Path(os.path.realpath(self.sys / "bus/pci/devices" / address))
        old = self.link_name(f"bus/pci/devices/{address}/driver")
        if old:
            os.unlink(device / "driver")
            os.unlink(self.sys / "bus/pci/drivers" / old / address)
        if driver:
            driver_dir = self.sys / "bus/pci/drivers" / driver
            os.symlink(os.path.relpath(driver_dir, device), device / "driver")
            os.symlink(os.path.relpath(device, driver_dir), driver_dir / address)

    def remove_device(self, address: str) -> None:
        """The function leaves the bus: its directory and every link to it go."""
        link = self.sys / "bus/pci/devices" / address
        device = Path(os.path.realpath(link))
        group = self.link_name(f"bus/pci/devices/{address}/iommu_group")
        os.unlink(link)
        if group:
            os.unlink(self.sys / "kernel/iommu_groups" / group / "devices" / address)
        self.holding.mkdir(exist_ok=True)
        os.rename(device, self.holding / address)
        self.removed[address] = (device, group)

    def rescan_devices(self) -> list[str]:
        """Every removed function comes back where it was; returns their addresses."""
        back = sorted(self.removed)
        for address in back:
            device, group = self.removed.pop(address)
            os.rename(self.holding / address, device)
            link = self.sys / "bus/pci/devices" / address
            os.symlink(os.path.relpath(device, link.parent), link)
            if group:
                member = self.sys / "kernel/iommu_groups" / group / "devices" / address
                os.symlink(os.path.relpath(device, member.parent), member)
        return back

    def set_link(self, rel: str, target: str | None) -> None:
        """Make or remove a symlink outside the PCI bus (platform driver links)."""
        path = self.sys / rel
        if target is None:
            if os.path.lexists(path):
                os.unlink(path)
            return
        real_target = os.path.realpath(self.sys / target)
        os.symlink(os.path.relpath(real_target, os.path.realpath(path.parent)), path)


class FsStore(TreeStore):
    """TreeStore on pyfakefs, writing control files without triggering their side effects."""

    def __init__(self, fs, root: Path):
        super().__init__(root)
        self.fs = fs
        self.on_create = lambda rel: None  # a control file the model made (a new vtconsole)

    def set_text(self, rel: str, text: str) -> None:
        # Without the side effect: the model is already handling a write.
        path = os.path.realpath(self.sys / rel)
        if not os.path.lexists(path):
            self.fs.create_file(path, contents=text + "\n")
            self.on_create(rel)
            return
        self.fs.get_object(path).set_initial_contents(text + "\n")


if TYPE_CHECKING:  # pyfakefs only where trees are cloned: bench/ imports TreeStore without it
    from pyfakefs.fake_file import FakeDirectory, FakeFile

# repr(spec) -> (the tree as pyfakefs objects, detached from any filesystem, its control files)
_TREES: dict[str, tuple[FakeDirectory, list[str]]] = {}


def add_tree(fs, spec: HostSpec, root: Path) -> list[str]:
    """The tree of spec at root in the fake filesystem; returns its control files (relative
    to sys/). Each shape is written once per test run; later tests get a copy of its pyfakefs
    objects: writing and walking a tree through pyfakefs costs seconds, a copy milliseconds."""
    key = repr(spec)
    if key not in _TREES:
        write_tree(spec, root)
        _TREES[key] = (_clone(fs.get_object(str(root)), None), control_files(root))
    else:
        if not fs.exists(str(root.parent)):
            fs.create_dir(str(root.parent))
        copy = _clone(_TREES[key][0], fs)
        copy.name = root.name
        fs.get_object(str(root.parent)).add_entry(copy)
    return _TREES[key][1]


def _clone(node: FakeFile, fs) -> FakeFile:
    """A copy of a pyfakefs file or directory and everything under it, owned by fs (None: by
    no filesystem). Contents are immutable bytes and are shared; the rest is copied."""
    from pyfakefs.fake_file import FakeDirectory

    twin = object.__new__(type(node))
    twin.__dict__.update(vars(node))
    twin.stat_result = copy.copy(node.stat_result)
    twin.xattr = dict(node.xattr)
    twin._side_effect = None
    twin._filesystem = weakref.ref(fs) if fs is not None else None
    twin.parent_dir = None
    if isinstance(node, FakeDirectory):
        twin._entries = {}
        for name, child in node._entries.items():
            child_twin = _clone(child, fs)
            child_twin.parent_dir = weakref.ref(twin)
            twin._entries[name] = child_twin
    return twin


def control_files(root: Path) -> list[str]:
    found = []
    for dirpath, _dirs, files in os.walk(root / "sys"):
        for name in files:
            rel = os.path.relpath(os.path.join(dirpath, name), root / "sys")
            if CONTROL.search(rel):
                found.append(rel)
    return sorted(found)


class FakeKernel:
    def __init__(self, fs, spec: HostSpec, root: str = "/host"):
        self.fs = fs
        self.spec = spec
        self.root = Path(root)
        controls = add_tree(fs, spec, self.root)
        self.store = FsStore(fs, self.root)
        self.native = {f.address: f.driver for f in spec.functions}
        self.failing_probes: set[tuple[str, str]] = set()  # (address or *, driver)
        self.faults: list[Fault] = []
        self.points: list[str] = []  # every write, module change and libvirt call, in order
        self.fail_nth: tuple[int, str] | None = None  # (index in points, kind)
        self.in_libvirt = False  # a libvirt call is running: its writes are libvirtd's
        self.libvirt_points: set[int] = set()  # indices in points of writes libvirtd made
        self.operation_timeout = 20.0
        self.release_hang = threading.Event()
        self.stuck_writes: list[tuple[str, str]] = []  # (path, value) waiting in the kernel
        self.writes_on_stuck: list[tuple[str, str]] = []  # later writes to a stuck device
        self.helpers: list[int] = []  # pids of the hook's helpers blocked on the hold pipe
        # Module unloads and libvirt calls stuck in the kernel: (module or None, the devices
        # whose lock it holds, what the kernel does once the holder lets go).
        self.stuck_calls: list[tuple[str | None, list[str], object]] = []
        # How long the hook waits for a stuck write (None: the step's time left). It never
        # returns, so the wait changes nothing but the test's duration.
        self.stuck_wait: float | None = None
        self._hold: tuple[int, int] | None = None  # the pipe they block on (read, write)
        # Hugepages: the most pages of a size (kB) the kernel can hold (absent: no limit), and
        # how many more each write to /proc/sys/vm/compact_memory makes room for.
        self.hugepage_limits: dict[int, int] = {}
        self.compaction_gain: dict[int, int] = {}
        # The largest window each bridge's parent has room for (absent: no limit).
        self.window_room: dict[str, int] = {}
        # The vfio-pci variant driver libvirt's detach picks for a device (address -> driver),
        # as virPCIDeviceFindBestVFIOVariant does from modules.alias.
        self.libvirt_variant: dict[str, str] = {}
        self.model = KernelModel(
            self.store,
            native_driver=self.native.get,
            can_bind=self._can_bind,
            files=SystemFiles(self.store, hugepage_limit=self.hugepage_limits.get),
            sysfb_any_vga=sysfb_policy(self.root),
            window_room=self.window_room.get,
            default_reset_method=lambda a: self.reset_defaults.get(a),
        )
        self.reset_defaults = {f.address: f.reset_method for f in spec.functions}
        self.store.on_create = lambda rel: self._arm(rel) if CONTROL.search(rel) else None
        if "vfio-pci" in spec.drivers:  # loaded at boot, before the host drivers, with its ids=
            ids = {device_id for device_id, _where in configured_ids(self.root)}
            if ids:
                self.model.dynamic_ids["vfio-pci"] = ids
        self.writes: list[tuple[str, str]] = []
        self.modules = set(spec.modules)
        # Module graph (hosts.HostSpec.module_deps) and references other than users.
        self.module_deps = dict(spec.module_deps)
        self.module_refs = dict(spec.module_refs)
        self.driver_modules = {
            d: module_of(d, spec) for d in (*spec.drivers, "vfio-pci", "pci-stub")
        }
        self._content_before: dict[str, str] = {}  # what a control file reads back between writes
        for path in controls:
            self._arm(path)
        self._arm_compaction()

    # --- setting up faults ---------------------------------------------------------------------

    def fail(self, pattern: str, kind: str, times: int = 1) -> None:
        self.faults.append(Fault(pattern, kind, times))

    def fail_probe(self, driver: str, address: str = "*") -> None:
        """The driver's probe fails: drivers_probe still reports success, bind gives EINVAL."""
        self.failing_probes.add((address, driver))

    def _can_bind(self, address: str, driver: str) -> bool:
        return (address, driver) not in self.failing_probes and (
            "*",
            driver,
        ) not in self.failing_probes

    def take_fault(self, name: str) -> Fault | None:
        """Called at every injection point; returns the fault to apply there, if any."""
        self.points.append(name)
        if self.in_libvirt:
            self.libvirt_points.add(len(self.points) - 1)
        if self.fail_nth and self.fail_nth[0] == len(self.points) - 1:
            kind, self.fail_nth = self.fail_nth[1], None  # fires once
            return Fault(name, kind)
        for fault in self.faults:
            if fault.times > 0 and fnmatch.fnmatch(name, fault.pattern):
                fault.times -= 1
                return fault
        return None

    def trigger(self, fault: Fault) -> None:
        if fault.kind == "kill":
            raise Killed(fault.pattern)
        if fault.kind == "deadline":
            # A write that blocks past the step's deadline, without the wall clock: the host's
            # bound gives up at once, as it would when the time ran out (nothing changed).
            raise StepTimeout(f"{fault.pattern} did not finish within the step's time")
        if fault.kind == "hang":
            # Like a blocked unbind: the write does not return until the test lets it go,
            # and then fails, so nothing changes behind the rollback's back.
            self.release_hang.wait(30)
            raise OSError(errno.EINTR, os.strerror(errno.EINTR))
        if fault.kind == "libvirt":
            raise HostError(f"libvirt: internal error: injected failure on {fault.pattern}")
        if fault.kind == "command":
            raise CommandError(
                fault.pattern.split(), 1, f"modprobe: ERROR: injected failure on {fault.pattern}"
            )
        code = getattr(errno, fault.kind)
        raise OSError(code, os.strerror(code))

    # --- writes stuck in the kernel ------------------------------------------------------------

    def stuck_devices(self) -> set[str]:
        """The devices a stuck write, module unload or libvirt call holds the lock of."""
        found = {d for d in (device_of(rel, value) for rel, value in self.stuck_writes) if d}
        return found | {d for _module, devices, _finish in self.stuck_calls for d in devices}

    def stuck_modules(self) -> set[str]:
        return {module for module, _devices, _finish in self.stuck_calls if module}

    def stuck_subjects(self) -> set[str]:
        """What the hook must name as stuck: each device a write or libvirt call is stuck
        on, and `module NAME` for a stuck unload."""
        found = {d for d in (device_of(rel, value) for rel, value in self.stuck_writes) if d}
        for module, devices, _finish in self.stuck_calls:
            found |= {f"module {module}"} if module else set(devices)
        return found

    def block(self, host: Host, what: str) -> None:
        """The call waits in the kernel: a real detached helper blocks on the hold pipe, and
        the hook gets StuckWrite once it stops waiting."""
        wait = host.time_left()
        if self.stuck_wait is not None:
            wait = min(wait, self.stuck_wait)
        try:
            detached.run(self.blocked_job(), wait, what, keep_fds=(self.hold_fd(),))
        except detached.StuckWrite as exc:
            self.helper_started(exc.pid)
            raise

    def hold_fd(self) -> int:
        """The end of the hold pipe a stuck helper blocks on (created on first use)."""
        if self._hold is None:
            self._hold = posix.pipe()
        return self._hold[0]

    def blocked_job(self):
        """A helper's job for a stuck write: wait until the holder lets go (the pipe closes)."""
        fd = self.hold_fd()

        def job() -> int:
            posix.read(fd, 1)
            return 0

        return job

    def helper_started(self, pid: int) -> None:
        """A helper stays blocked: it shows in <root>/proc like any process."""
        self.helpers.append(pid)
        stat = f"{pid} (python3) S 1 {pid} {pid} 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 {7000 + pid}"
        base = self.root / "proc" / str(pid)
        self.fs.create_file(str(base / "stat"), contents=stat + "\n")
        self.fs.create_file(str(base / "comm"), contents="python3\n")

    def hold_open(self, pid: int, command: str, address: str) -> str:
        """A process maps the device's BAR 0 (as QEMU does once it has the device); returns
        the path. Only this function is held, not its whole IOMMU group."""
        device = os.path.realpath(self.root / "sys/bus/pci/devices" / address)
        path = "/" + os.path.relpath(device, self.root) + "/resource0"
        base = self.root / "proc" / str(pid)
        self.fs.create_file(str(base / "comm"), contents=command + "\n")
        self.fs.create_file(
            str(base / "maps"),
            contents=f"7f0000000000-7f0000004000 rw-s 00000000 00:05 77   {path}\n",
        )
        return path

    def release_stuck(self) -> None:
        """The holder lets go: every stuck write completes and its helper exits."""
        for rel, value in self.stuck_writes:
            try:
                self.model.write(rel, value)
            except OSError:
                pass
        self.stuck_writes.clear()
        calls, self.stuck_calls = self.stuck_calls, []
        for _module, _devices, finish in calls:
            finish()  # type: ignore[operator]
        if self._hold is not None:
            for fd in self._hold:
                posix.close(fd)
            self._hold = None
        for pid in self.helpers:
            posix.waitpid(pid, 0)
            self.fs.remove_object(str(self.root / "proc" / str(pid)))
        self.helpers.clear()

    # --- control files -------------------------------------------------------------------------

    def _arm(self, rel: str) -> None:
        path = str(self.root / "sys" / rel)
        fake = self.fs.get_object(path)
        # Writes come in through the bus/pci/devices links; the model wants that form.
        canonical_rel = self._bus_path(rel)
        kernel = self

        def on_write(file_object) -> None:
            value = file_object.contents or ""
            if value == "":
                return  # O_TRUNC at open; the kernel sees only the write that follows
            # Reading a control file gives its state, not the last value written to it.
            file_object.set_initial_contents(kernel._content_before.get(path, ""))
            kernel.writes.append((canonical_rel, value.strip()))
            if device_of(canonical_rel, value) in kernel.stuck_devices():
                kernel.writes_on_stuck.append((canonical_rel, value.strip()))
                raise StuckInKernel(canonical_rel)  # its device lock is held
            fault = kernel.take_fault(canonical_rel)
            if fault and fault.kind == "stuck":
                kernel.stuck_writes.append((canonical_rel, value))
                raise StuckInKernel(canonical_rel)
            if fault and fault.kind == "nobind":
                return  # the write "succeeds" and nothing binds: a probe that failed quietly
            if fault:
                kernel.trigger(fault)
            kernel.model.write(canonical_rel, value)
            kernel._content_before[path] = fake.contents or ""

        self._content_before[path] = fake.contents or ""
        fake._side_effect = on_write

    def _arm_compaction(self) -> None:
        """Each write to /proc/sys/vm/compact_memory makes room for compaction_gain more hugepages."""
        path = self.root / "proc/sys/vm/compact_memory"
        if not path.exists():
            return
        kernel = self

        def on_write(file_object) -> None:
            if not file_object.contents:
                return  # O_TRUNC at open
            kernel.writes.append(("/proc/sys/vm/compact_memory", file_object.contents.strip()))
            for kib, gain in kernel.compaction_gain.items():
                if kib in kernel.hugepage_limits:
                    kernel.hugepage_limits[kib] += gain

        self.fs.get_object(str(path))._side_effect = on_write

    def _bus_path(self, rel: str) -> str:
        match = re.match(r"^devices/.*/([0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7])/([^/]+)$", rel)
        return f"bus/pci/devices/{match.group(1)}/{match.group(2)}" if match else rel

    def add_driver(self, driver: str) -> None:
        base = self.root / "sys/bus/pci/drivers" / driver
        if base.exists():
            return
        for name in ("bind", "unbind", "new_id", "remove_id"):
            self.fs.create_file(str(base / name))
            self._arm(f"bus/pci/drivers/{driver}/{name}")
        module = self.driver_modules.get(driver)
        if module in self.modules:
            os.symlink(os.path.relpath(self.root / "sys/module" / module, base), base / "module")

    def module_drivers(self, module: str) -> list[str]:
        return [d for d, m in self.driver_modules.items() if m == canonical(module)]

    def module_users(self, module: str) -> list[str]:
        return sorted(m for m in self.modules if canonical(module) in self.module_deps.get(m, ()))

    def write_proc_modules(self) -> None:
        """/proc/modules and /sys/module/<name> as the loaded modules are now."""
        text = proc_modules(self.modules, self.module_deps, self.module_refs, sorted(self.modules))
        (self.root / "proc/modules").write_text(text + "\n")
        for module in self.modules:
            state = self.root / "sys/module" / module / "initstate"
            if not state.exists():
                self.fs.create_file(str(state), contents="live\n")

    def addresses(self) -> list[str]:
        """The functions on the bus now (removed ones are not)."""
        return [f.address for f in self.spec.functions if f.address not in self.store.removed]

    # --- what tests compare --------------------------------------------------------------------

    def snapshot(self) -> dict:
        """Everything a run may change: driver links, overrides, BAR sizes, modules."""
        state = {}
        for fn in self.spec.functions:
            rel = f"bus/pci/devices/{fn.address}"
            state[fn.address] = (
                self.store.link_name(f"{rel}/driver"),
                self.store.read(f"{rel}/driver_override"),
                self.store.read(f"{rel}/resource"),
            )
        state["modules"] = tuple(sorted(self.modules))
        state["drivers"] = tuple(sorted(os.listdir(self.root / "sys/bus/pci/drivers")))
        return state

    def driver(self, address: str) -> str | None:
        return self.store.link_name(f"bus/pci/devices/{address}/driver")

    def override(self, address: str) -> str | None:
        return self.model.override(address)

    # --- host objects ----------------------------------------------------------------------------

    def host(self, root=None) -> Host:
        # The fake kernel probes synchronously: a driver link that is not there at once never comes.
        host = Host(
            root=self.root,
            sysfs=None,
            modules=None,
            nodedev=None,
            bind_wait=0.02,
            operation_timeout=self.operation_timeout,
        )
        host.sysfs = FakeSysfs(self, host)
        host.modules = FakeModules(self, host)
        host.nodedev = FakeNodeDevices(self, host)
        host.procfs = Procfs(self.root, host)
        host.commands = self.make_commands(host)
        return host

    def make_commands(self, host: Host):
        """Commands refuse here (the root is a tree); tests that need them replace this method."""
        return Commands(self.root, host)


class FakeSysfs(Sysfs):
    """Writes that may block run here, where the fake kernel's side effects are; one the
    kernel holds goes, as on a real host, to a detached helper, which blocks on the hold pipe."""

    def __init__(self, kernel: FakeKernel, host: Host):
        super().__init__(kernel.root, host)
        self.kernel = kernel

    def _write_detached(self, rel: str, path: Path, value: str, what: str) -> None:
        try:
            self._apply(rel, path, value)
        except StuckInKernel:
            self.kernel.block(self.host, what)


def call_point(kernel: FakeKernel, host: Host, point: str) -> None:
    """An injection point in a module or libvirt call, bounded in time like the real calls."""
    fault = kernel.take_fault(point)
    if fault:
        host.bounded(point, lambda: kernel.trigger(fault))


class FakeModules(Modules):
    """modprobe against the fake kernel, as kmod and the kernel do it. Unloading a module
    unregisters its PCI drivers: their devices are left without a driver, driver_override
    kept. `modprobe -r` then removes the module's dependencies that nothing else uses. A
    module in use (another module uses it, something holds a reference, a process has one
    of its devices open) is refused: "Module X is in use". Loading loads the dependencies
    first and registers the module's drivers, which probe the driverless devices they match."""

    def __init__(self, kernel: FakeKernel, host: Host):
        super().__init__(kernel.root, host)
        self.kernel = kernel

    def loaded(self) -> set[str]:
        return set(self.kernel.modules)

    def is_loaded(self, module: str) -> bool:
        return canonical(module) in self.kernel.modules

    def usage(self, module: str) -> tuple[int, list[str]]:
        users = self.kernel.module_users(module)
        count = len(users) + self.kernel.module_refs.get(canonical(module), 0)
        return count + len(self._process_refs(module)), users

    def _process_refs(self, module: str) -> list[str]:
        """Processes with a device of the module's drivers open: each holds a reference."""
        from passthrough.holders import find_holders

        drivers = self.kernel.module_drivers(module)
        return [
            f"{h.command} ({h.pid})"
            for a in self.kernel.addresses()
            if self.kernel.driver(a) in drivers
            for h in find_holders(self.host, a)
            if h.kind != "sound"
        ]

    def load(self, module: str, drivers: tuple[str, ...] = ()) -> None:
        self.host.refuse_if_module_stuck(module, f"load {module}")
        self.host.record(f"modprobe {module}")
        call_point(self.kernel, self.host, f"modprobe {module}")
        spec = self.kernel.spec
        tree = KernelModules(self.kernel.root, spec.kernel)
        name = canonical(module)
        if spec.modules_dep and name not in tree.files() and name not in tree.builtin():
            raise CommandError(
                ["modprobe", module],
                1,
                f"modprobe: FATAL: Module {module} not found in directory /lib/modules/{spec.kernel}",
            )
        self._insert(name)
        self.kernel.write_proc_modules()

    def _insert(self, name: str) -> None:
        if name in self.kernel.modules:
            return
        for dependency in self.kernel.module_deps.get(name, ()):
            self._insert(dependency)
        self.kernel.modules.add(name)
        self.kernel.write_proc_modules()
        for driver in self.kernel.module_drivers(name):
            self.kernel.add_driver(driver)
            self.kernel.model.register_driver(driver, self.kernel.addresses())
        if name in ("vfio_pci", "pci_stub"):
            # Registered now, after the host drivers; its ids= option takes unbound devices.
            ids = {device_id for device_id, _where in configured_ids(self.kernel.root, name)}
            self.kernel.model.driver_registered(driver_names(name)[0], ids)

    def unload(self, module: str) -> None:
        self.refuse_unload(module)
        self.host.record(f"modprobe -r {module}")
        name = canonical(module)
        fault = self.kernel.take_fault(f"modprobe -r {module}")
        if fault and fault.kind == "stuck":
            # Unloading unbinds the module's devices; one a process holds waits in the kernel.
            scope = self.unload_scope(module)
            try:
                self.kernel.block(self.host, f"`modprobe -r {module}`")
            except detached.StuckWrite as exc:
                finish = lambda: self._finish_unload(name)  # noqa: E731
                self.kernel.stuck_calls.append((name, scope[1], finish))
                raise self.stuck(module, scope, exc) from None
        if fault:
            self.host.bounded(f"modprobe -r {module}", lambda: self.kernel.trigger(fault))
        argv = ["modprobe", "-r", module]
        if name not in self.kernel.modules:
            raise CommandError(argv, 1, f"modprobe: FATAL: Module {name} is not currently loaded.")
        if self.usage(name)[0]:
            raise CommandError(argv, 1, f"modprobe: FATAL: Module {name} is in use.")
        self._remove(name)
        self.kernel.write_proc_modules()

    def _finish_unload(self, name: str) -> None:
        """A stuck unload once the holder let go: the module is gone, as its dependencies
        nothing else uses."""
        if name in self.kernel.modules:
            self._remove(name)
            self.kernel.write_proc_modules()

    def _remove(self, name: str) -> None:
        for driver in self.kernel.module_drivers(name):
            self.kernel.model.unregister_driver(driver, self.kernel.addresses())
            driver_dir = self.kernel.root / "sys/bus/pci/drivers" / driver
            if driver_dir.exists():
                self.kernel.fs.remove_object(str(driver_dir))
        self.kernel.modules.discard(name)
        module_dir = self.kernel.root / "sys/module" / name
        if module_dir.exists():
            self.kernel.fs.remove_object(str(module_dir))
        # kmod: "If the modules it depends on are also unused, modprobe will try to remove them too."
        for dependency in self.kernel.module_deps.get(name, ()):
            if dependency in self.kernel.modules and not self.usage(dependency)[0]:
                self._remove(dependency)


class FakeNodeDevices:
    """libvirt's node-device detach/reattach as libvirt does them (virpci.c): the same sysfs
    writes through the fake kernel, a libvirt error when a write fails or the device did not
    bind, and the whole call bounded in time like the real one."""

    def __init__(self, kernel: FakeKernel, host: Host):
        self.kernel = kernel
        self.host = host
        self.calls: list[tuple[str, str]] = []

    def _write(self, address: str, rel: str, value: str) -> None:
        try:
            with open(self.kernel.root / "sys" / rel, "w") as handle:
                handle.write(value)
        except StuckInKernel:
            # libvirtd's worker waits in the kernel; the hook only waits for its answer.
            self.kernel.release_hang.wait(30)
            raise HostError(
                f"libvirt: the write to /sys/{rel} was interrupted", device=address
            ) from None
        except OSError as exc:
            raise HostError(
                f"libvirt: Failed to write to '/sys/{rel}': {os.strerror(exc.errno)}",
                device=address,
            ) from None

    def _call(self, verb: str, address: str, override: str) -> None:
        fault = self.kernel.take_fault(f"libvirt {verb} {address}")
        if fault and fault.kind == "stuck":
            # libvirtd's worker waits in the kernel's unbind of the device; the hook's helper
            # waits for its answer. Once the holder lets go, libvirtd does the whole call.
            self.calls.append((verb, address))
            try:
                self.kernel.block(self.host, f"libvirt {verb} of {address}")
            except detached.StuckWrite as exc:
                self.kernel.stuck_calls.append(
                    (None, [address], lambda: self._finish(address, override))
                )
                raise stuck_call(self.host, address, verb, exc) from None

        def libvirt_call() -> None:
            if fault:
                self.kernel.trigger(fault)
            self.kernel.in_libvirt = True
            try:
                self._write(address, f"bus/pci/devices/{address}/driver_override", override)
                if self.kernel.driver(address):
                    self._write(address, f"bus/pci/devices/{address}/driver/unbind", address)
                self._write(address, "bus/pci/drivers_probe", address)
            finally:
                self.kernel.in_libvirt = False

        self.calls.append((verb, address))
        self.host.bounded(f"libvirt {verb} of {address}", libvirt_call)

    def _finish(self, address: str, override: str) -> None:
        """libvirtd's stuck call, once the holder let go: the rest of what it does."""
        model = self.kernel.model
        model.write(f"bus/pci/devices/{address}/driver_override", override)
        if self.kernel.driver(address):
            model.write(f"bus/pci/devices/{address}/driver/unbind", address)
        model.write("bus/pci/drivers_probe", address)

    def detach(self, address: str, driver: str, effect: str) -> None:
        self.host.refuse_if_stuck(address, "detach it through libvirt")
        self.host.record(f"libvirt nodedev-detach {address}", effect)
        self._call("detach", address, self.kernel.libvirt_variant.get(address, "vfio-pci"))
        if not is_vfio_driver(self.kernel.driver(address)):
            raise HostError(
                "libvirt detach failed: internal error: Failed to bind PCI device to vfio-pci",
                device=address,
            )

    def reattach(self, address: str, effect: str, previous_driver: str | None = None) -> None:
        self.host.refuse_if_stuck(address, "reattach it through libvirt")
        self.host.record(f"libvirt nodedev-reattach {address}", effect)
        self._call("reattach", address, "\n")
