"""sysfs under a root directory: reads, symlinks, and bounded, confined writes."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import HostError, UnsafeOperation

if TYPE_CHECKING:
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

    def __init__(self, root: Path, host: Host | None):
        """host None: a read-only view (the tools' HostFacts, snapshot); writing needs one."""
        self.root = Path(root)
        self.base = self.root / "sys"
        self.host = host

    def path(self, rel: str) -> Path:
        if rel.startswith("/") or ".." in rel.split("/"):
            raise UnsafeOperation(f"refusing a sysfs path outside {self.base}: {rel}")
        return self.base / rel

    def read(self, rel: str) -> str | None:
        """The content of a sysfs file, stripped; None when it does not exist or cannot be read."""
        try:
            with open(self.path(rel), encoding="utf-8", errors="replace") as handle:
                return handle.read().strip()
        except OSError:
            return None

    def link_name(self, rel: str) -> str | None:
        """The last component of a symlink's target (a driver or group name), or None."""
        try:
            return os.path.basename(os.readlink(self.path(rel)))
        except OSError:
            return None

    def kernel_path(self, rel: str) -> str:
        """The path the running kernel shows for rel, with links resolved: /sys/devices/..."""
        return "/" + os.path.relpath(os.path.realpath(self.path(rel)), self.root)

    def walk(self, rel: str, depth: int) -> Iterator[tuple[str, list[str], list[str]]]:
        """(rel_dir, dirnames, filenames) below rel, not following links, at most depth levels."""
        top = os.path.realpath(self.path(rel))
        for dirpath, dirnames, filenames in os.walk(top):
            level = os.path.relpath(dirpath, top).count(os.sep)
            if level >= depth:
                dirnames[:] = []
            yield os.path.relpath(dirpath, self.base), dirnames, filenames

    def exists(self, rel: str) -> bool:
        return os.path.lexists(self.path(rel))

    def listdir(self, rel: str) -> list[str]:
        try:
            return sorted(os.listdir(self.path(rel)))
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
        path = self.path(rel)
        shown = "/sys/" + rel
        self.host.record(f"write {value.strip() or repr(value)} > {shown}", effect)

        host = self.host
        try:
            host.bounded(
                f"writing {value.strip()!r} to {shown}", lambda: self._apply(rel, path, value)
            )
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

    def _apply(self, rel: str, path: Path, value: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)  # as `echo value > file` does
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
