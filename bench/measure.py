"""Timing child processes the way libvirt runs the hook, and summarising repeated runs.

A child is started with posix_spawn (no Python between fork and exec) and reaped with
wait4, which gives that one child's own peak memory (ru_maxrss) and CPU time; the wall
time is taken around spawn + wait. stdin is a pipe already holding the domain XML and
closed on our side, as libvirt leaves it; stdout and stderr go to /dev/null unless kept.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field

# What libvirtd gives a hook (../shared/notes/libvirt-hooks.md): a bare environment.
HOOK_ENV = {
    "LC_ALL": "C",
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "USER": "root",
    "LOGNAME": "root",
}
PIPE_CAPACITY = 65536  # the XML must fit in the pipe: nobody writes while the child runs


@dataclass(frozen=True)
class ChildRun:
    seconds: float  # wall time, spawn to reaped
    cpu_seconds: float  # user + system time of the child
    max_rss_kib: int  # the child's peak resident memory
    status: int  # exit status (negative: killed by that signal)
    output: str = ""  # stdout + stderr when kept


@dataclass(frozen=True)
class Command:
    argv: tuple[str, ...]
    env: dict = field(default_factory=lambda: dict(HOOK_ENV))
    stdin: bytes = b""
    keep_output: bool = False

    def shown(self) -> str:
        return " ".join(self.argv)


def run_child(command: Command) -> ChildRun:
    """Run one command to completion and measure it."""
    if len(command.stdin) >= PIPE_CAPACITY:
        raise ValueError(
            f"stdin of {len(command.stdin)} bytes does not fit in a pipe; use a smaller XML"
        )
    read_end, write_end = os.pipe()
    os.write(write_end, command.stdin)
    os.close(write_end)
    output = tempfile.TemporaryFile() if command.keep_output else None  # noqa: SIM115 - read after the child exits
    sink = output.fileno() if output else os.open(os.devnull, os.O_WRONLY)
    actions = [
        (os.POSIX_SPAWN_DUP2, read_end, 0),
        (os.POSIX_SPAWN_DUP2, sink, 1),
        (os.POSIX_SPAWN_DUP2, sink, 2),
    ]
    try:
        started = time.perf_counter()
        pid = os.posix_spawn(command.argv[0], list(command.argv), command.env, file_actions=actions)
        _, status, usage = os.wait4(pid, 0)
        seconds = time.perf_counter() - started
    finally:
        os.close(read_end)
        if output is None:
            os.close(sink)
    text = ""
    if output is not None:
        output.seek(0)
        text = output.read().decode(errors="replace")
        output.close()
    return ChildRun(
        seconds,
        usage.ru_utime + usage.ru_stime,
        usage.ru_maxrss,
        os.waitstatus_to_exitcode(status),
        text,
    )


def check_exit(command: Command, run: ChildRun, expected: int = 0) -> None:
    """A benchmark of a command that failed measures nothing: stop and say why."""
    if run.status != expected:
        raise BenchError(
            f"`{command.shown()}` exited {run.status} (expected {expected}):\n{run.output}"
        )


class BenchError(Exception):
    """The benchmark cannot produce an honest figure (a command failed, a check did not hold)."""


def interleaved(
    commands: dict[str, Command], rounds: int, warmup: int = 3
) -> dict[str, list[ChildRun]]:
    """Run every command once per round, rotating the order each round, so that a slow
    moment of the machine hits all of them alike. Warm-up rounds (page cache, .pyc) are
    dropped. Every run must exit 0."""
    names = list(commands)
    runs: dict[str, list[ChildRun]] = {name: [] for name in names}
    for number in range(warmup + rounds):
        shift = number % len(names)
        for name in names[shift:] + names[:shift]:
            command = commands[name]
            run = run_child(command)
            check_exit(command, run)
            if number >= warmup:
                runs[name].append(run)
    return runs


@dataclass(frozen=True)
class Figure:
    """One row of the table: a quantity measured n times, with its spread."""

    name: str
    unit: str  # "ms", "MiB", "x", "s"
    values: tuple[float, ...]
    target: str = ""  # e.g. "≤ 1.3"
    met: bool | None = None  # None: no target
    note: str = ""

    @property
    def min(self) -> float:
        return min(self.values)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def max(self) -> float:
        return max(self.values)

    def to_json(self) -> dict:
        return {
            "unit": self.unit,
            "n": len(self.values),
            "min": self.min,
            "median": self.median,
            "max": self.max,
            "target": self.target or None,
            "met": self.met,
            "note": self.note or None,
        }


def ms(runs: list[ChildRun]) -> tuple[float, ...]:
    return tuple(r.seconds * 1000 for r in runs)


def mb(runs: list[ChildRun]) -> tuple[float, ...]:
    """Peak memory in MB (10^6 bytes, as the targets are given)."""
    return tuple(r.max_rss_kib * 1024 / 1e6 for r in runs)


def paired_ratios(runs: list[ChildRun], floor: list[ChildRun]) -> tuple[float, ...]:
    """Ratio of each run to the floor run of the same round (interleaved, so both saw the
    same moment of the machine)."""
    return tuple(a.seconds / b.seconds for a, b in zip(runs, floor, strict=True))
