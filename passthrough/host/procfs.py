"""/proc under the root: reads anywhere, writes only under /proc/sys (bounded, recorded)."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import HostError, UnsafeOperation
from . import textfile

TYPE_CHECKING = False  # typing's constant, without importing typing (the hook's imports)
if TYPE_CHECKING:
    from . import Host


class Procfs:
    def __init__(self, root: Path, host: Host):
        self.base = Path(root) / "proc"
        self._base = str(self.base)
        self.host = host

    def _where(self, rel: str) -> str:
        # Strings, not Paths: a holder scan reads three files of every process, and under
        # QEMU building a Path for each was a good part of the scan.
        if rel.startswith("/") or ".." in rel.split("/"):
            raise UnsafeOperation(f"refusing a /proc path outside {self.base}: {rel}")
        return f"{self._base}/{rel}" if rel else self._base

    def path(self, rel: str) -> Path:
        return Path(self._where(rel))

    def read(self, rel: str) -> str | None:
        return textfile.read(self._where(rel))

    def link(self, rel: str) -> str | None:
        try:
            return os.readlink(self._where(rel))
        except OSError:
            return None

    def listdir(self, rel: str = "") -> list[str]:
        try:
            return os.listdir(self._where(rel))
        except OSError:
            return []

    def _record(self, rel: str, value: str, effect: str) -> Path:
        if not rel.startswith("sys/"):
            raise UnsafeOperation(f"refusing to write /proc/{rel}: writes stay under /proc/sys")
        path = self.path(rel)
        self.host.record(f"write {value.strip()} > /proc/{rel}", effect)
        return path

    def write(self, rel: str, value: str, effect: str = "") -> None:
        path = self._record(rel, value, effect)
        try:
            self.host.bounded(f"writing /proc/{rel}", lambda: path.write_text(value))
        except OSError as exc:
            raise HostError(
                f"writing {value.strip()!r} to /proc/{rel} failed: {exc.strerror}"
            ) from None


class RecordedProcfs(Procfs):
    """The dry run's /proc: reads the host, records writes (confined as real ones) and
    makes none."""

    def write(self, rel: str, value: str, effect: str = "") -> None:
        self._record(rel, value, effect)
