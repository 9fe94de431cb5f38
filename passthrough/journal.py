"""The per-domain journal: what each step changed, so it can be undone.

`<state-dir>/<domain>.json` holds the changes in effect for a domain, oldest first.
It is rewritten after every step and every partial change (write a temporary file,
fsync, rename, fsync the directory), so a hook killed at any point leaves a journal
that recovery can undo. JSON with a format number, never pickle.
"""

from __future__ import annotations

import os
import time

from . import jsontext
from .errors import PassthroughError

TYPE_CHECKING = False  # typing's constant, without importing typing (the hook's imports)
if TYPE_CHECKING:
    from .actions.base import Action
    from .profile import Step

FORMAT = 1


class JournalError(PassthroughError):
    pass


class Journal:
    def __init__(
        self,
        path: str | None,
        domain: str,
        entries: list[dict] | None = None,
        stuck: dict[str, dict] | None = None,
    ):
        self.path = path  # None: kept in memory only (dry run)
        self.domain = domain
        self.entries: list[dict] = entries or []
        # Devices a write left stuck in the kernel: address -> {write, since, pid, ...}
        # (passthrough/host/detached.py). Kept until a later run sees the helper gone.
        self.stuck: dict[str, dict] = stuck or {}

    @classmethod
    def load(cls, state_dir: str | os.PathLike | None, domain: str) -> Journal:
        if state_dir is None:
            return cls(None, domain)
        path = os.path.join(state_dir, f"{domain}.json")
        try:
            with open(path, encoding="utf-8") as handle:
                data = jsontext.loads(handle.read())
        except FileNotFoundError:
            return cls(path, domain)
        except (OSError, ValueError) as exc:
            raise JournalError(
                f"{path}: cannot read the journal ({exc}); move it aside to continue, "
                f"and restore its devices by hand (see `passthrough-hook status`)"
            ) from None
        if (
            not isinstance(data, dict)
            or data.get("format") != FORMAT
            or not isinstance(data.get("entries"), list)
        ):
            raise JournalError(
                f"{path}: not a journal of format {FORMAT}; written by another version?"
            )
        stuck = data.get("stuck")
        return cls(path, domain, data["entries"], stuck if isinstance(stuck, dict) else None)

    @classmethod
    def in_memory(cls, copy_of: Journal) -> Journal:
        copy = jsontext.loads(jsontext.dumps({"entries": copy_of.entries, "stuck": copy_of.stuck}))
        return cls(None, copy_of.domain, copy["entries"], copy["stuck"])

    def set_stuck(self, stuck: dict[str, dict]) -> None:
        if stuck != self.stuck:
            self.stuck = dict(stuck)
            self.save()

    def begin(self, event: str, step: Step, describe: str) -> dict:
        entry: dict = {
            "id": max((e["id"] for e in self.entries), default=0) + 1,
            "event": event,
            "step": step.number,
            "action": step.action.name,
            "where": str(step.where),
            "describe": describe,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "pid": os.getpid(),
            "status": "running",
            "record": {},
        }
        self.entries.append(entry)
        self.save()
        return entry

    def update(self, entry: dict, record: dict, status: str | None = None) -> None:
        entry["record"] = record
        if status:
            entry["status"] = status
        self.save()

    def remove(self, entry: dict) -> None:
        self.entries = [e for e in self.entries if e["id"] != entry["id"]]
        self.save()

    def clear(self) -> None:
        self.entries = []
        self.save()

    def for_event(self, event: str | None) -> list[dict]:
        return [e for e in self.entries if event is None or e["event"] == event]

    def devices(self) -> set[str]:
        """PCI addresses this journal holds changed (each action reads its own records)."""
        return {address for entry in self.entries for address in held_by(entry)}

    def save(self) -> None:
        if self.path is None:
            return
        if not self.entries and not self.stuck:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            return
        directory, name = os.path.split(self.path)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        data: dict = {"format": FORMAT, "domain": self.domain, "entries": self.entries}
        if self.stuck:
            data["stuck"] = self.stuck
        tmp = os.path.join(directory, f".{name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            # Compact: an indented dump takes Python's slow encoder, and this runs after every
            # change.
            os.write(fd, jsontext.dumps(data).encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def action_of(entry: dict) -> type[Action]:
    """The action class that wrote a journal entry (UnknownAction for one this version does
    not know)."""
    from .actions import REGISTRY
    from .actions.base import UnknownAction

    return REGISTRY.get(str(entry.get("action")), UnknownAction)


def held_by(entry: dict) -> list[str]:
    """The PCI functions one journal entry holds changed."""
    return action_of(entry).held_addresses(entry.get("record") or {})
