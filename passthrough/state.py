"""The state directory (/run/passthrough-hook): journals of all domains and one lock.

Hook runs that change the host are serialized by an exclusive flock on `lock`, waited for
with a timeout so a stuck run makes the next one fail clearly instead of hanging libvirt.
A device that another domain's journal holds changed is refused by name.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import PassthroughError
from .journal import Journal, JournalError, held_by

LOCK_TIMEOUT = 60.0


class StateError(PassthroughError):
    pass


class StateDir:
    def __init__(self, path: Path):
        self.path = Path(path)

    def ensure(self) -> None:
        """Create the directory 0700 (journals say which devices were changed; root's business)."""
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.path.stat().st_mode & 0o077:
            os.chmod(self.path, 0o700)

    @contextmanager
    def lock(self, domain: str, event: str, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
        self.ensure()
        fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            end = time.monotonic() + timeout
            delay = 0.005
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                if time.monotonic() >= end:
                    os.lseek(fd, 0, os.SEEK_SET)
                    holder = os.read(fd, 200).decode(errors="replace").strip() or "another run"
                    raise StateError(
                        f"another passthrough-hook run ({holder}) has held {self.path}/lock for "
                        f"over {timeout:.0f} s; if it is stuck, see `passthrough-hook status`"
                    )
                time.sleep(delay)
                delay = min(delay * 2, 0.1)
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, f"pid {os.getpid()}, {domain} {event}".encode())
            yield
        finally:
            os.close(fd)  # closing releases the flock

    def journals(self) -> dict[str, Journal]:
        found = {}
        for path in sorted(self.path.glob("*.json")):
            domain = path.stem
            try:
                found[domain] = Journal.load(self.path, domain)
            except JournalError:
                continue  # a broken journal is reported by status; it cannot prove ownership
        return found

    def holders(self, exclude: str) -> dict[str, tuple[str, str]]:
        """address -> (domain, since) for devices other domains hold changed."""
        held: dict[str, tuple[str, str]] = {}
        for domain, journal in self.journals().items():
            if domain == exclude:
                continue
            for entry in journal.entries:
                for address in held_by(entry):
                    held.setdefault(address, (domain, entry.get("time", "?")))
        return held


def check_ownership(state: StateDir, domain: str, addresses: list[str]) -> None:
    """Refuse devices held by another domain's journal."""
    if not state.path.is_dir():
        return
    held = state.holders(exclude=domain)
    for address in addresses:
        if address in held:
            other, since = held[address]
            clock = since[11:16] if len(since) >= 16 else since
            raise StateError(
                f"{address} is held by domain {other} since {clock}; stop {other} first "
                f"(or, if it is not running, `passthrough-hook recover {other}`)"
            )
