"""Commands on the fake kernel's host: every argv is logged, and the programs the toolbox
runs act on the fake tree as the real ones act on a host:

- `kill -s SIG -- PID...` ends those processes (their /proc/<pid> goes), except the ones
  in `stubborn`, which ignore signals; an absent pid fails like kill(1) does.
- `systemctl stop UNIT` ends the processes of the unit's cgroup (and, for a display
  manager, the X servers it started and its graphical sessions); `systemctl start UNIT`
  brings back what stop ended.
- `systemctl --user --machine=USER@.host stop graphical-session.target` ends that user's
  graphical user units (not the user manager, not pipewire).
What stop and kill end is passthrough.desktop.stopped_by, the rule the dry run predicts with.
- `systemctl set-property --runtime UNIT AllowedCPUs=X` writes the unit's cpuset.cpus.
- anything else runs a handler from `handlers` (by full argv[0], then by its base name),
  or fails as a program that is not installed.

Install with `book = install_fake_commands(kernel)`; `book.calls` is what ran, in order.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field

from system_facts import Process, System, write_system

from passthrough.desktop import KNOWN, stopped_by
from passthrough.errors import HostError
from passthrough.host.commands import CommandError
from passthrough.host.procfs import Procfs
from passthrough.processes import all_processes


@dataclass
class CommandBook:
    kernel: object
    calls: list[list[str]] = field(default_factory=list)
    stdin: list[bytes | None] = field(default_factory=list)
    handlers: dict[str, Callable[[list[str], bytes | None], str]] = field(default_factory=dict)
    stubborn: set[int] = field(default_factory=set)  # pids that ignore signals and stops
    stopped: dict[str, list[Process]] = field(
        default_factory=dict
    )  # unit -> processes its stop ended

    # --- the fake /proc --------------------------------------------------------------------------

    def processes(self) -> list[Process]:
        """The spec's processes that still have a /proc entry."""
        return [p for p in self.kernel.spec.system.processes if self.running(p.pid)]

    def running(self, pid: int) -> bool:
        return os.path.exists(self.kernel.root / "proc" / str(pid) / "comm")

    def end(self, processes: list[Process]) -> list[Process]:
        ended = [p for p in processes if p.pid not in self.stubborn and self.running(p.pid)]
        for process in ended:
            shutil.rmtree(self.kernel.root / "proc" / str(process.pid))
        return ended

    # --- programs ------------------------------------------------------------------------------

    def execute(self, argv: list[str], stdin: bytes | None) -> str:
        self.calls.append(list(argv))
        self.stdin.append(stdin)
        handler = self.handlers.get(argv[0]) or self.handlers.get(os.path.basename(argv[0]))
        if handler:
            return handler(argv, stdin)
        if argv[0] == "kill":
            return self.kill(argv)
        if argv[0] == "systemctl":
            return self.systemctl(argv)
        raise HostError(f"`{argv[0]}` was not found in the fake host's PATH")

    def kill(self, argv: list[str]) -> str:
        pids = [int(a) for a in argv[argv.index("--") + 1 :]]
        absent = [pid for pid in pids if not self.running(pid)]
        for pid in self.ending(argv) - self.stubborn:
            shutil.rmtree(self.kernel.root / "proc" / str(pid))
        if absent:
            raise CommandError(argv, 1, f"kill: ({absent[0]}) - No such process")
        return ""

    def ending(self, argv: list[str]) -> set[int]:
        """The pids the command ends on this host (passthrough.desktop's rule)."""
        reader = _ProcReader(Procfs(self.kernel.root, None))
        return {p.pid for p in stopped_by(self.kernel.root, argv, all_processes(reader))}

    def systemctl(self, argv: list[str]) -> str:
        words = [a for a in argv[1:] if not a.startswith("--")]
        verb, unit = words[0], words[-1]
        if verb == "set-property":
            cpus = words[2].split("=", 1)[1]
            self.kernel.store.set_text(f"fs/cgroup/{words[1]}/cpuset.cpus", cpus)
        elif verb == "stop":
            ending = self.ending(argv)
            ended = self.end([p for p in self.processes() if p.pid in ending])
            self.stopped.setdefault(unit, []).extend(ended)
        elif verb == "start":
            # A display manager started again: the user logs in again, their desktop comes back.
            logins = (
                self.stopped.pop("graphical-session.target", []) if unit in KNOWN.values() else []
            )
            for process in self.stopped.pop(unit, []) + logins:
                write_system(System(processes=(process,)), self.kernel.root)
        else:
            raise CommandError(argv, 1, f"Unknown command verb {verb}.")
        return ""


class _ProcReader:
    """Enough of a Host for passthrough.processes to read the fake /proc."""

    def __init__(self, procfs: Procfs):
        self.procfs = procfs


class FakeCommands:
    """The Host's commands, answered by a CommandBook (same interface as host.commands)."""

    def __init__(self, book: CommandBook, host):
        self.book = book
        self.host = host

    def query(self, argv: list[str], timeout: float = 10.0) -> str:
        return self.book.execute(argv, None)

    def run(
        self,
        argv: list[str],
        timeout: float | None = None,
        stdin: bytes | None = None,
        effect: str = "",
    ) -> str:
        self.host.record(" ".join(argv), effect)
        return self.book.execute(argv, stdin)


def install_fake_commands(kernel) -> CommandBook:
    book = CommandBook(kernel)
    kernel.make_commands = lambda host: FakeCommands(book, host)
    return book
