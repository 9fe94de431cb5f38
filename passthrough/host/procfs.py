"""/proc under the root: reads anywhere, writes only under /proc/sys (bounded, recorded)."""

from __future__ import annotations

import os

from ..errors import HostError, UnsafeOperation
from . import textfile

TYPE_CHECKING = False  # typing's constant, without importing typing (the hook's imports)
if TYPE_CHECKING:
    from . import Host


class Procfs:
    def __init__(self, root: str | os.PathLike, host: Host):
        self.base = os.path.join(root, "proc")
        self.host = host

    def where(self, rel: str) -> str:
        """The path of rel under the root's /proc (a string, as Sysfs.where gives)."""
        if rel.startswith("/") or ".." in rel.split("/"):
            raise UnsafeOperation(f"refusing a /proc path outside {self.base}: {rel}")
        return f"{self.base}/{rel}" if rel else self.base

    def read(self, rel: str) -> str | None:
        return textfile.read(self.where(rel))

    def link(self, rel: str) -> str | None:
        try:
            return os.readlink(self.where(rel))
        except OSError:
            return None

    def listdir(self, rel: str = "") -> list[str]:
        try:
            return os.listdir(self.where(rel))
        except OSError:
            return []

    def _record(self, rel: str, value: str, effect: str) -> str:
        if not rel.startswith("sys/"):
            raise UnsafeOperation(f"refusing to write /proc/{rel}: writes stay under /proc/sys")
        path = self.where(rel)
        self.host.record(f"write {value.strip()} > /proc/{rel}", effect)
        return path

    def write(self, rel: str, value: str, effect: str = "") -> None:
        path = self._record(rel, value, effect)
        try:
            self.host.bounded(f"writing /proc/{rel}", lambda: _write_text(path, value))
        except OSError as exc:
            raise HostError(
                f"writing {value.strip()!r} to /proc/{rel} failed: {exc.strerror}"
            ) from None


def _write_text(path: str, value: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:  # as Path.write_text does
        handle.write(value)


class RecordedProcfs(Procfs):
    """The dry run's /proc: reads the host, records writes (confined as real ones) and
    makes none."""

    def write(self, rel: str, value: str, effect: str = "") -> None:
        self._record(rel, value, effect)
