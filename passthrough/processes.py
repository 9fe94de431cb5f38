"""Processes as <root>/proc shows them, ending them, and waiting until they are gone.

Everything goes through the Host: /proc is read with host.procfs, signals are sent with
`kill` through host.commands (recorded, and not sent, in a dry run).
"""

from __future__ import annotations

import math

from .errors import HostError
from .record import record

TYPE_CHECKING = False  # typing's constant, without importing typing (the hook's imports)
if TYPE_CHECKING:
    from .host import Host

SIGNALS = ("TERM", "INT", "HUP", "QUIT", "KILL")


@record(frozen=True)
class Process:
    pid: int
    command: str  # the kernel's name for it (/proc/<pid>/comm)
    uid: int | None = None
    cgroup: str = ""  # cgroup v2 path, e.g. /system.slice/gdm.service

    def __str__(self) -> str:
        return f"{self.command} (pid {self.pid})"

    def to_json(self) -> dict:
        return {"pid": self.pid, "command": self.command}


def read_process(host: Host, pid: int) -> Process | None:
    """The process with this pid, or None when it is gone or a zombie (a zombie holds nothing)."""
    comm = host.procfs.read(f"{pid}/comm")
    if comm is None:
        return None
    status = host.procfs.read(f"{pid}/status") or ""
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    if fields.get("State", "").strip().startswith(("Z", "X")):
        return None
    uid_field = fields.get("Uid", "").split()
    cgroup = ""
    for line in (host.procfs.read(f"{pid}/cgroup") or "").splitlines():
        if line.startswith("0::"):  # the cgroup v2 line
            cgroup = line[3:].strip()
    return Process(pid, comm.strip(), int(uid_field[0]) if uid_field else None, cgroup)


def all_processes(host: Host) -> list[Process]:
    found = (read_process(host, int(name)) for name in host.procfs.listdir() if name.isdigit())
    return sorted((p for p in found if p is not None), key=lambda p: p.pid)


def still_running(host: Host, processes: list[Process]) -> list[Process]:
    """Those of the processes that still run. A pid now used by another command counts as gone."""
    alive = []
    for process in processes:
        now = read_process(host, process.pid)
        if now is not None and now.command == process.command:
            alive.append(process)
    return alive


def send_signal(host: Host, processes: list[Process], signal: str) -> None:
    """`kill -s SIGNAL -- PID...`: one command for all of them, recorded with their names."""
    if not processes:
        return
    if signal not in SIGNALS:
        raise HostError(f"unknown signal {signal}; expected one of {', '.join(SIGNALS)}")
    names = ", ".join(str(p) for p in processes)
    host.commands.run(
        ["kill", "-s", signal, "--", *(str(p.pid) for p in processes)],
        effect=f"SIG{signal} to {names}",
    )


def wait_for_exit(host: Host, processes: list[Process], timeout: float) -> list[Process]:
    """Poll /proc until the processes have exited; return those still running after timeout.

    The wait is recorded in the plan. In a dry run /proc is the predicted one
    (host.dryrun.PredictedProcfs): processes the recorded commands would end are gone.
    """
    if not processes:
        return []
    host.record(
        "wait until "
        + ", ".join(str(p) for p in processes)
        + (" has exited" if len(processes) == 1 else " have exited"),
        # Whole seconds up from 1 s: the rest of a step's time is 59.97 s, not 60, by the
        # time the plan gets here, and the plan must read the same on a busy machine.
        f"up to {math.ceil(timeout) if timeout >= 1 else round(timeout, 1):g} s",
    )
    host.wait_until("processes to exit", lambda: not still_running(host, processes), timeout)
    return still_running(host, processes)
