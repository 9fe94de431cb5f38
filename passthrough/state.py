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

from .errors import PassthroughError
from .journal import Journal, JournalError, held_by

LOCK_TIMEOUT = 60.0


class StateError(PassthroughError):
    pass


class StateDir:
    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)

    def ensure(self) -> None:
        """Create the directory 0700 (journals say which devices were changed; root's business)."""
        os.makedirs(self.path, mode=0o700, exist_ok=True)
        if os.stat(self.path).st_mode & 0o077:
            os.chmod(self.path, 0o700)

    def lock(self, domain: str, event: str, timeout: float = LOCK_TIMEOUT) -> Lock:
        """`with state.lock(domain, event):` holds the exclusive lock of all hook runs."""
        return Lock(self, domain, event, timeout)

    def journals(self) -> dict[str, Journal]:
        found: dict[str, Journal] = {}
        try:
            names = sorted(os.listdir(self.path))
        except FileNotFoundError:
            return found
        for name in names:
            if not name.endswith(".json") or name.startswith("."):
                continue
            domain = name[: -len(".json")]
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


class Lock:
    """The state directory's `lock` file, flock'ed exclusively while the `with` block runs
    (a class, not contextlib's decorator: the hook's path imports no contextlib)."""

    def __init__(self, state: StateDir, domain: str, event: str, timeout: float):
        self.state, self.domain, self.event, self.timeout = state, domain, event, timeout
        self.fd: int | None = None

    def __enter__(self) -> None:
        self.state.ensure()
        fd = os.open(os.path.join(self.state.path, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            self._take(fd)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd

    def __exit__(self, *exc_info: object) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing releases the flock
            self.fd = None

    def _take(self, fd: int) -> None:
        timeout, path = self.timeout, self.state.path
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
                    f"another passthrough-hook run ({holder}) has held {path}/lock for "
                    f"over {timeout:.0f} s; if it is stuck, see `passthrough-hook status`"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"pid {os.getpid()}, {self.domain} {self.event}".encode())


def check_ownership(state: StateDir, domain: str, addresses: list[str]) -> None:
    """Refuse devices held by another domain's journal."""
    if not os.path.isdir(state.path):
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
