"""sysfs under a root directory: reads, symlinks, and bounded, confined writes."""

from __future__ import annotations

import errno
import os

from ..errors import HostError, StepTimeout, UnsafeOperation
from . import detached, textfile

# Control files whose write can wait in the kernel for as long as a process holds the
# device (unbind, and what unbinds or probes: bind, drivers_probe, remove, rescan, a BAR
# resize). They run in a detached helper (host/detached.py); the others, quick ones such
# as driver_override, in the hook's process.
# Attributes whose read takes the device lock (driver_override_show does): on a device
# stuck in the kernel the read would wait as long as the write does.
# How long a person's tool (snapshot) waits for such a read before naming the device.
READ_TIMEOUT = 5.0
# (String tests, not patterns: every read and write asks, and under QEMU compiling the
# patterns was a cost of every hook process.)
_LOCKED_NAME = "/driver_override"
_BLOCKING_ENDS = ("/unbind", "/bind", "/remove", "/rescan")


def locked_device(rel: str) -> str | None:
    """For an attribute whose read takes the device lock, by any path to the device's
    directory (bus/pci/devices/X or the devices/pci0000:00/... one it links to): the
    device's directory name (its address); None for any other file."""
    if not rel.endswith(_LOCKED_NAME):
        return None
    return rel[: -len(_LOCKED_NAME)].rsplit("/", 1)[-1] or None


def can_block(rel: str) -> bool:
    """Whether a write of rel can wait in the kernel (the control files above)."""
    if rel.endswith(_BLOCKING_ENDS) or rel == "bus/pci/drivers_probe":
        return True
    name = rel.rsplit("/", 1)[-1]
    number = name[len("resource") : -len("_resize")]
    return (
        "/" in rel
        and name.startswith("resource")
        and name.endswith("_resize")
        and number.isdecimal()
    )


TYPE_CHECKING = False  # typing's constant, without importing typing (the hook's imports)
if TYPE_CHECKING:
    from collections.abc import Iterator

    from . import Host

# What the kernel's errno means for the PCI control files, in words a user can act on.
ERRNO_HINTS = {
    errno.EBUSY: "the device is in use; a driver or a process still holds it",
    errno.ENODEV: "no such device, or it is bound to another driver",
    errno.EINVAL: "the kernel rejected the value",
    errno.ENOSPC: "not enough space in the bridge window for that size",
    errno.ENOENT: "no such file: the device or driver is absent",
    errno.EPERM: "not permitted; run as root",
    errno.EACCES: "not permitted; run as root",
    524: "the device or firmware does not allow resizing (ENOTSUPP)",
}


class Sysfs:
    """Access to `<root>/sys`. Paths are given relative to /sys: `bus/pci/drivers_probe`."""

    def __init__(self, root: str | os.PathLike, host: Host | None):
        """host None: a read-only view (the tools' HostFacts, snapshot); writing needs one."""
        self.root = os.fspath(root)
        self.base = os.path.join(self.root, "sys")
        self.host = host

    def where(self, rel: str) -> str:
        """The path of rel under the root (a string: the hook's path imports no pathlib)."""
        if rel.startswith("/") or ".." in rel.split("/"):
            raise UnsafeOperation(f"refusing a sysfs path outside {self.base}: {rel}")
        return f"{self.base}/{rel}" if rel else self.base

    def read(self, rel: str) -> str | None:
        """The content of a sysfs file, stripped; None when it does not exist or cannot be read."""
        locked = locked_device(rel)
        if locked and self.host is not None:  # it waits for the lock a stuck write holds
            self.host.refuse_if_stuck(locked, f"read /sys/{rel}")
        text = textfile.read(self.where(rel))
        return None if text is None else text.strip()

    def read_bounded(self, rel: str, timeout: float = READ_TIMEOUT) -> bytes | None:
        """The raw content of a file, for reads that can wait in the kernel (locked_device on
        a device another write is stuck on, which nothing here may know of): in a detached
        helper when it can block, so the reader never hangs. None when the file does not
        exist or cannot be read; raises detached.StuckWrite when it does not answer."""
        path = self.where(rel)
        try:
            if locked_device(rel):
                return detached.read(path, timeout, f"reading /sys/{rel}")
            with open(path, "rb") as handle:
                return handle.read(64 * 1024)
        except OSError:
            return None

    def link_name(self, rel: str) -> str | None:
        """The last component of a symlink's target (a driver or group name), or None."""
        try:
            return os.path.basename(os.readlink(self.where(rel)))
        except OSError:
            return None

    def kernel_path(self, rel: str) -> str:
        """The path the running kernel shows for rel, with links resolved: /sys/devices/..."""
        return "/" + os.path.relpath(os.path.realpath(self.where(rel)), self.root)

    def walk(self, rel: str, depth: int) -> Iterator[tuple[str, list[str], list[str]]]:
        """(rel_dir, dirnames, filenames) below rel, not following links, at most depth levels."""
        top = os.path.realpath(self.where(rel))
        for dirpath, dirnames, filenames in os.walk(top):
            level = os.path.relpath(dirpath, top).count(os.sep)
            if level >= depth:
                dirnames[:] = []
            yield os.path.relpath(dirpath, self.base), dirnames, filenames

    def exists(self, rel: str) -> bool:
        return os.path.lexists(self.where(rel))

    def listdir(self, rel: str) -> list[str]:
        try:
            return sorted(os.listdir(self.where(rel)))
        except OSError:
            return []

    def write(
        self,
        rel: str,
        value: str,
        *,
        effect: str = "",
        device: str | None = None,
        hints: dict[int, str] | None = None,
    ) -> None:
        """Write value to a sysfs control file (never creating one), bounded in time.

        Raises HostError naming the file, the value and the kernel's error, with a hint for
        that errno (hints: what an errno means for this file, over ERRNO_HINTS).
        """
        if self.host is None:
            raise UnsafeOperation(f"a read-only view of {self.base} cannot write {rel}")
        path = self.where(rel)
        shown = "/sys/" + rel
        if device:
            self.host.refuse_if_stuck(device, f"write {value.strip()!r} to {shown}")
        self.host.record(f"write {value.strip() or repr(value)} > {shown}", effect)
        what = f"writing {value.strip()!r} to {shown}"
        try:
            if can_block(rel):
                self._write_detached(rel, path, value, what)
            else:
                self.host.bounded(what, lambda: self._apply(rel, path, value))
        except detached.StuckWrite as exc:
            self._stuck(device, rel, value, exc)
            raise StepTimeout(str(exc), device=device) from None
        except OSError as exc:
            code = exc.errno or 0
            hint = (hints or {}).get(code) or ERRNO_HINTS.get(code, "")
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            if exc.errno in (errno.EACCES, errno.EPERM):
                # Root is refused by a security module, not by file modes: say which and why.
                from .denials import find_denial, fix_for

                denial = find_denial(self.root, pid=os.getpid())
                if denial:
                    reason, hint = f"{reason}, {denial}", fix_for(denial)
            raise HostError(
                f"writing {value.strip()!r} to {shown} failed: {reason}",
                device=device,
                hint=hint or None,
            ) from None

    def _write_detached(self, rel: str, path: str, value: str, what: str) -> None:
        """The write in a helper process; raises OSError with the kernel's errno, or StuckWrite."""
        assert self.host is not None  # write() refused a read-only view
        code = detached.write(path, value.encode(), self.host.time_left(), what)
        if code == detached.NO_ANSWER:
            raise HostError(f"{what}: the helper process died without an answer")
        if code:
            raise OSError(code, os.strerror(code))

    def _stuck(self, device: str | None, rel: str, value: str, exc: detached.StuckWrite) -> None:
        """Note the device stuck: nothing more is written to it in this run, the journal
        keeps the helper's pid, and recover waits until that helper is gone."""
        assert self.host is not None  # write() refused a read-only view
        name, slash, _ = rel.removeprefix("bus/pci/devices/").partition("/")
        in_device = rel.startswith("bus/pci/devices/") and bool(slash) and bool(name)
        address = device or (name if in_device else None)
        if address is None:
            return
        self.host.note_stuck(
            address,
            f"write {value.strip()} > /sys/{rel}",
            exc.pid,
            address=address,
            driver=self.link_name(f"bus/pci/devices/{address}/driver"),
        )

    def _apply(self, rel: str, path: str, value: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)  # as `echo value > file` does
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
