"""Kernel modules: what is loaded (read from <root>/proc/modules) and modprobe.

What the kernel provides without loading anything comes from the host tree too
(lib/modules/<release>/modules.builtin and modules.dep, /boot/config-<release>), so a dry
run on a snapshot of a 6.12 host is right on a 6.1 machine.
"""

from __future__ import annotations

import os

from ..errors import HostError, StepTimeout, UnsafeOperation
from ..patterns import Lazy
from ..units import is_pci_address
from . import commands, detached

TYPE_CHECKING = False  # typing's constant, without importing typing (the hook's imports)
if TYPE_CHECKING:
    from . import Host


def canonical(module: str) -> str:
    """The kernel treats - and _ in module names alike; /proc/modules shows _."""
    return module.replace("-", "_")


def driver_names(module: str) -> tuple[str, ...]:
    """The PCI driver names a module may register, most likely first: vfio_pci registers vfio-pci."""
    return tuple(dict.fromkeys((module.replace("_", "-"), canonical(module))))


# Modules a later kernel folded into another: Linux 6.2 builds vfio_virqfd into vfio.ko, and
# `modprobe vfio_virqfd` there fails with "Module vfio_virqfd not found".
MERGED = {"vfio_virqfd": ((6, 2), "vfio")}
# Modules a kernel option leaves out: with CONFIG_VFIO_CONTAINER=n (6.2+, iommufd only)
# there is no vfio_iommu_type1; iommufd gives /dev/vfio/vfio when CONFIG_IOMMUFD_VFIO_CONTAINER=y.
NEEDS_OPTION = {"vfio_iommu_type1": ("CONFIG_VFIO_CONTAINER", "vfio uses iommufd")}


def kernel_release(root: str | os.PathLike) -> str | None:
    """uname -r of the kernel the tree describes: proc/sys/kernel/osrelease, or this
    machine's for /."""
    release = _text(os.path.join(root, "proc/sys/kernel/osrelease"), strict=True).strip()
    if not release and os.path.realpath(root) == "/":
        release = os.uname().release
    return release or None


def release_tuple(release: str | None) -> tuple[int, int]:
    import re

    match = re.match(r"(\d+)\.(\d+)", release or "")
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def module_file_name(path: str) -> str:
    """kernel/drivers/vfio/pci/vfio-pci.ko.xz -> vfio_pci; '' for a line that is no module."""
    base = os.path.basename(path.strip())
    return canonical(base.split(".ko", 1)[0]) if ".ko" in base else ""


# Each line's module as module_file_name names it, for a whole modules.dep
# ("kernel/drivers/vfio/pci/vfio-pci.ko.xz: kernel/drivers/vfio/vfio.ko.xz") or
# modules.builtin ("kernel/drivers/vfio/vfio.ko") in one scan of the text: the name before
# the first .ko of the file name, in the part before the colon. Line by line, the 6,000
# lines of a distribution's modules.dep cost the hook about 0.3 s under QEMU.
_MODULE_LINE = Lazy(r"(?m)^[ \t]*(?:[^:\n]*/)?([^/:\n]+?)\.ko(?=[^/:\n]*(?::|$))")


def module_names(text: str) -> set[str]:
    """The modules a modules.dep or modules.builtin text lists (names with _)."""
    return set(_MODULE_LINE.findall(canonical(text)))


def lists_module(text: str, name: str) -> bool:
    """Whether `name in module_names(text)`, for a text with - and _ already alike, by
    searching for the file name instead of reading every line."""
    wanted = name + ".ko"
    position = text.find(wanted)
    while position >= 0:
        line_start = text.rfind("\n", 0, position) + 1
        line_end = text.find("\n", position)
        line_end = len(text) if line_end < 0 else line_end
        colon = text.find(":", line_start, line_end)
        head = text[line_start:position]
        tail = text[position + len(wanted) : colon if colon >= 0 else line_end]
        before_colon = colon < 0 or colon > position
        starts_file_name = head.endswith("/") or not head.strip()
        if before_colon and starts_file_name and "/" not in tail:
            return True
        position = text.find(wanted, position + 1)
    return False


def _text(path: str, strict: bool = False) -> str:
    """The file's text ("" when it cannot be read); strict: undecodable bytes are ""."""
    try:
        with open(path, encoding="utf-8", errors="strict" if strict else "replace") as handle:
            return handle.read(8 << 20)
    except (OSError, UnicodeDecodeError):
        return ""


def _lines(path: str) -> list[str]:
    return _text(path).splitlines()


class KernelModules:
    """What one kernel release provides, read from the tree: built-in modules, module
    files, its build options."""

    def __init__(self, root: str | os.PathLike, release: str | None):
        self.root = os.fspath(root)
        self.release = release
        self._builtin: set[str] | None = None
        self._files: set[str] | None = None
        self._dep: str | None = None  # modules.dep, - and _ alike (has_file)
        self._config: dict[str, str] | None = None
        self.has_index = False  # whether modules.dep was read (set by files())

    @property
    def directory(self) -> str | None:
        return os.path.join(self.root, "lib", "modules", self.release) if self.release else None

    def builtin(self) -> set[str]:
        if self._builtin is None:
            d = self.directory
            self._builtin = module_names(_text(os.path.join(d, "modules.builtin"))) if d else set()
        return self._builtin

    def files(self) -> set[str]:
        """Modules with a file for this kernel: modules.dep, or the vfio module files that
        trees written by `snapshot` keep instead."""
        if self._files is None:
            d = self.directory
            text = _text(os.path.join(d, "modules.dep")) if d else ""
            self._files = module_names(text)
            self.has_index = bool(text)
            if d and not self.has_index:
                for _dirpath, _dirs, names in os.walk(os.path.join(d, "kernel", "drivers", "vfio")):
                    self._files.update(n for n in map(module_file_name, names) if n)
        return self._files

    def has_file(self, module: str) -> bool:
        """`canonical(module) in files()`, found by searching modules.dep for the module's
        file name: the hook asks this of every module it loads, and a scan of the whole
        file (600 KB on a distribution kernel) cost it 90 ms under QEMU."""
        name = canonical(module)
        parts = name.split("_")
        if self._files is not None or len(parts) > 5:
            return name in self.files()
        if self._dep is None:
            d = self.directory
            self._dep = canonical(_text(os.path.join(d, "modules.dep"))) if d else ""
        if not self._dep:
            return name in self.files()  # no index: the module files themselves
        return lists_module(self._dep, name)

    def config(self) -> dict[str, str]:
        """/boot/config-<release>: CONFIG_X -> y, m or n ("# CONFIG_X is not set")."""
        if self._config is None:
            import re

            self._config = {}
            for line in _lines(os.path.join(self.root, "boot", f"config-{self.release}")):
                unset = re.fullmatch(r"# (CONFIG_\w+) is not set", line.strip())
                if unset:
                    self._config[unset.group(1)] = "n"
                elif line.startswith("CONFIG_") and "=" in line:
                    key, value = line.strip().split("=", 1)
                    self._config[key] = value.strip('"')
        return self._config

    def without_loading(self, module: str) -> str | None:
        """Why `modprobe module` has nothing to load on this kernel (built in, merged into
        another module, not built), or None when it is a module to load (or unknown)."""
        name = canonical(module)
        if self.has_file(name):
            return None
        if name in self.builtin():
            return f"built into kernel {self.release}"
        return self.obsolete(module)

    def obsolete(self, module: str) -> str | None:
        """Why this kernel has no such module although older ones had: merged into another
        (vfio_virqfd on 6.2+) or left out by a build option (vfio_iommu_type1 with iommufd
        only). A profile should drop it; None when the module exists here."""
        name = canonical(module)
        if name in self.files() or name in self.builtin():
            return None
        if name in MERGED:
            since, into = MERGED[name]
            if release_tuple(self.release) >= since:
                return (
                    f"merged into {into} since Linux {since[0]}.{since[1]} "
                    f"(kernel {self.release}); {into} provides it"
                )
        if name in NEEDS_OPTION:
            option, instead = NEEDS_OPTION[name]
            setting = self.config().get(option)
            if setting == "n" or (
                setting is None and self.has_index and release_tuple(self.release) >= (6, 2)
            ):
                # Without the config file, a 6.2+ modules.dep that lists no such module says the same.
                return f"not built by kernel {self.release} ({option}=n: {instead})"
        return None


class Modules:
    def __init__(self, root: str | os.PathLike, host: Host):
        self.root = os.fspath(root)
        self.host = host
        self._kernel: KernelModules | None = None

    @property
    def kernel_modules(self) -> KernelModules:
        if self._kernel is None:
            self._kernel = KernelModules(self.root, kernel_release(self.root))
        return self._kernel

    def without_loading(self, module: str) -> str | None:
        """Why nothing needs loading for `module` on the running kernel (see KernelModules)."""
        return self.kernel_modules.without_loading(module)

    def obsolete(self, module: str) -> str | None:
        """Why the running kernel no longer has `module` (merged, not built); see KernelModules."""
        return self.kernel_modules.obsolete(module)

    def loaded(self) -> set[str]:
        """Modules loaded now, plus built-in ones that show up under /sys/module."""
        names: set[str] = set()
        try:
            with open(self._under("proc", "modules"), encoding="utf-8") as handle:
                names.update(line.split(" ", 1)[0] for line in handle if line.strip())
        except OSError:
            pass
        return names

    def is_loaded(self, module: str) -> bool:
        name = canonical(module)
        return name in self.loaded() or os.path.exists(
            self._under("sys", "module", name, "initstate")
        )

    def is_builtin(self, module: str) -> bool:
        name = canonical(module)
        return os.path.isdir(self._under("sys", "module", name)) and not os.path.exists(
            self._under("sys", "module", name, "initstate")
        )

    def _under(self, *parts: str) -> str:
        """A file of the root's /proc or /sys."""
        return os.path.join(self.root, *parts)

    def _guard(self, verb: str, module: str) -> None:
        if os.path.realpath(self.root) != "/":
            raise UnsafeOperation(
                f"cannot {verb} module {module} with --root {self.root}: modprobe acts on the running "
                f"kernel, not on the tree; use --dry-run"
            )

    def load(self, module: str, drivers: tuple[str, ...] = ()) -> None:
        """modprobe the module. `drivers`: the PCI drivers it is known to register (from a
        journal record), for a dry run to predict; the real kernel needs no telling."""
        self._guard("load", module)
        self.host.refuse_if_module_stuck(module, f"load {module}")
        self.host.record(f"modprobe {module}", f"{module}: not loaded → loaded")
        try:
            self.host.bounded(
                f"modprobe {module}",
                lambda: commands.run(["modprobe", module], self.host.time_left()),
            )
        except commands.CommandError as exc:
            self._explain_denial(exc)
            raise

    def _explain_denial(self, exc: commands.CommandError) -> None:
        """modprobe refused by SELinux or AppArmor ("Permission denied", "Operation not
        permitted" as root): raise saying so, with the fix."""
        if "ermission denied" not in exc.stderr and "not permitted" not in exc.stderr:
            return
        from .denials import find_denial, fix_for

        denial = find_denial(self.root, pid=os.getpid(), comm="modprobe")
        if denial:
            raise HostError(f"{exc}, {denial}", hint=fix_for(denial)) from None

    def in_use(self, module: str) -> bool:
        """Whether the module is held (reference count above 0 in /proc/modules) or built in."""
        name = canonical(module)
        try:
            with open(self._under("proc", "modules"), encoding="utf-8") as handle:
                for line in handle:
                    fields = line.split()
                    if fields and fields[0] == name:
                        return len(fields) < 3 or fields[2] != "0"
        except OSError:
            pass
        return self.is_builtin(module)

    def usage(self, module: str) -> tuple[int, list[str]]:
        """(reference count, modules using it) as /proc/modules shows them: `nvidia 56M 2
        nvidia_uvm,nvidia_modeset, Live ...`. The count includes those modules and every
        other reference (a process with the driver's device open, fbcon...)."""
        name = canonical(module)
        try:
            with open(self._under("proc", "modules"), encoding="utf-8") as handle:
                for line in handle:
                    fields = line.split()
                    if fields and fields[0] == name and len(fields) >= 4:
                        users = [u for u in fields[3].split(",") if u and u != "-"]
                        return int(fields[2]) if fields[2].isdigit() else 0, users
        except OSError:
            pass
        return 0, []

    def dependencies(self, module: str) -> list[str]:
        """Loaded modules this one uses (it is in their used-by column): what `modprobe -r`
        also removes once nothing else uses them."""
        name = canonical(module)
        return sorted(m for m in self.loaded() if name in self.usage(m)[1])

    def pci_drivers(self, module: str) -> list[str]:
        """The PCI drivers the module registers: drivers whose `module` link names it
        (bochs registers bochs-drm, xhci_pci registers xhci_hcd), else by its name."""
        sysfs = self.host.sysfs
        name = canonical(module)
        found = [
            driver
            for driver in sysfs.listdir("bus/pci/drivers")
            if sysfs.link_name(f"bus/pci/drivers/{driver}/module") == name
        ]
        if found:
            return found
        return [
            driver
            for driver in driver_names(module)
            if sysfs.exists(f"bus/pci/drivers/{driver}")
            and sysfs.link_name(f"bus/pci/drivers/{driver}/module") in (None, name)
        ][:1]

    def unload(self, module: str) -> None:
        """`modprobe -r`, as a detached helper: unloading a driver unbinds its devices, which
        waits in the kernel for as long as a process holds one (vfio_pci under QEMU). Stuck
        there, the module is noted stuck (host.stuck) and StepTimeout names what holds it."""
        self._guard("unload", module)
        self.refuse_unload(module)
        self.host.record(f"modprobe -r {module}", f"{module}: loaded → not loaded")
        try:
            self._remove_module(module)
        except detached.StuckWrite as exc:
            # What it unbinds, read now: the device the kernel waits on keeps its driver
            # link until the unbind returns, those after it too.
            raise self.stuck(module, self.unload_scope(module), exc) from None
        except commands.CommandError:
            # kmod removes a module's post-softdeps first, with their dependencies once unused,
            # which can be the module itself (vfio → vfio_iommu_type1 → vfio); it then fails
            # with ENOENT on the module already gone. What matters is that it is gone.
            if self.is_loaded(module):
                raise

    def refuse_unload(self, module: str) -> None:
        """Raise HostError when unloading module would wait behind a write or an unload
        stuck in the kernel."""
        self.host.refuse_if_driver_stuck(driver_names(module), f"unload {module}")
        self.host.refuse_if_module_stuck(module, f"unload {module}")

    def _remove_module(self, module: str) -> None:
        commands.run_detached(
            ["modprobe", "-r", module], self.host.time_left(), f"`modprobe -r {module}`"
        )

    def unload_scope(self, module: str) -> tuple[list[str], list[str]]:
        """What `modprobe -r module` removes (the module, and the dependencies it takes
        along), and the devices bound to their PCI drivers: what it unbinds."""
        sysfs = self.host.sysfs
        # Dependencies only these modules use: kmod takes them along once their other
        # references go (a process holding a device is what makes the unload wait).
        taken = [canonical(module)]
        for name in taken:
            for dependency in self.dependencies(name):
                users = self.usage(dependency)[1]
                free = dependency not in taken and set(users) <= set(taken)
                if free and not self.is_builtin(dependency):
                    taken.append(dependency)
        devices = [
            entry
            for name in taken
            for driver in self.pci_drivers(name)
            for entry in sysfs.listdir(f"bus/pci/drivers/{driver}")
            if is_pci_address(entry)
        ]
        return taken, devices

    def stuck(
        self, module: str, scope: tuple[list[str], list[str]], exc: detached.StuckWrite
    ) -> StepTimeout:
        """Note the unload stuck (nothing in this run loads or unloads those modules again,
        or writes to their devices); the error to raise, naming the devices it unbinds."""
        taken, devices = scope
        self.host.note_stuck(
            f"module {canonical(module)}",
            f"modprobe -r {module}",
            exc.pid,
            module=canonical(module),
            modules=taken,
            devices=devices,
        )
        unbinding = f"; it was unbinding {', '.join(devices)}" if devices else ""
        return StepTimeout(str(exc) + unbinding)


MODPROBE_DIRS = (
    "etc/modprobe.d",
    "run/modprobe.d",
    "usr/local/lib/modprobe.d",
    "usr/lib/modprobe.d",
    "lib/modprobe.d",
)


def module_options(root: str | os.PathLike, module: str) -> list[tuple[str, str, str]]:
    """(option, value, where) of what modprobe passes `module`: `options` lines of the
    modprobe.d files (a file in /etc hides one of the same name further down the list, as
    kmod does) and `module.option=value` on the kernel command line."""
    from pathlib import Path  # not on the hook's path: the dry run and check read these

    root = Path(root)
    name = canonical(module)
    seen: set[str] = set()
    found: list[tuple[str, str, str]] = []
    for directory in MODPROBE_DIRS:
        try:
            files = sorted((root / directory).glob("*.conf"))
        except OSError:
            continue
        for path in files:
            if path.name in seen:
                continue
            seen.add(path.name)
            try:
                text = path.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            for number, line in enumerate(text.replace("\\\n", " ").splitlines(), 1):
                words = line.split("#", 1)[0].split()
                if len(words) > 2 and words[0] == "options" and canonical(words[1]) == name:
                    for word in words[2:]:
                        option, _, value = word.partition("=")
                        found.append((option, value, f"/{directory}/{path.name}:{number}"))
    try:
        cmdline = (root / "proc" / "cmdline").read_text(encoding="utf-8", errors="replace")
    except OSError:
        cmdline = ""
    for word in cmdline.replace("\0", " ").split():
        head, _, value = word.partition("=")
        owner, dot, option = head.rpartition(".")
        if dot and canonical(owner) == name:
            found.append((option, value, "the kernel command line"))
    return found


def configured_ids(root: str | os.PathLike, module: str = "vfio_pci") -> list[tuple[str, str]]:
    """("vendor:device", where) of each id in the module's ids= option (vfio-pci and
    pci-stub take "vvvv:dddd[:svvv:sddd[:cccccc:mmmmmm]]", comma-separated)."""
    ids = []
    for option, value, where in module_options(root, module):
        if option != "ids":
            continue
        for item in value.split(","):
            parts = item.strip().lower().split(":")
            if len(parts) >= 2 and all(
                len(p) == 4 and all(c in "0123456789abcdef" for c in p) for p in parts[:2]
            ):
                ids.append((f"{parts[0]}:{parts[1]}", where))
    return ids
