"""libvirtd's own record of the hooks it runs: which script, for which event, its exit status,
its stderr and how long it took, read from libvirtd's debug log for util.hook and util.command:

    virRunScript:279 : Calling hook /etc/libvirt/hooks/qemu id=win10 op=release subop=end extra=-
    virCommandWait:2725 : internal error: Child process (... /etc/libvirt/hooks/qemu win10
        release end -) unexpected exit status 3: <the hook's stderr, possibly many lines>
    virCommandRun:2453 : Result status 0, stdout: '' stderr: '<the hook's stderr>'

(the virCommandWait record only when the exit status is not 0; the last one ends every call).
A hook's own log proves it ran, not what libvirt got back, and a hook with nothing to do logs
nothing at all. Turn the log on with `LIBVIRT_LOG_FILTERS="1:util.hook 1:util.command"` in
libvirtd's environment, or at run time (e2e_libvirt/hook_trace.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

FILTERS = "1:util.hook 1:util.command"

# "2026-11-24 16:56:10.462+0000: 32086: debug : virRunScript:279 : message"
_RECORD = re.compile(
    r"^(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+\+\d{4}): (?P<thread>\d+): \w+ : "
    r"(?P<function>\w+):\d+ : (?P<message>.*)$"
)
_CALLING = re.compile(
    r"Calling hook (?P<script>\S+) id=(?P<domain>.*) op=(?P<op>\S+) "
    r"subop=(?P<subop>\S+) extra=(?P<extra>.*)$"
)
_FAILED = re.compile(r"unexpected (?:exit status (?P<status>\d+)|fatal signal (?P<signal>\d+))")
_RESULT_STDERR = re.compile(r"stderr: '(?P<stderr>.*)'$", re.DOTALL)


@dataclass
class HookCall:
    script: str  # /etc/libvirt/hooks/qemu or /etc/libvirt/hooks/qemu.d/<name>
    domain: str
    event: str  # "prepare/begin"
    extra: str
    status: int | None = None  # exit status (-N: killed by signal N); None: not finished yet
    stderr: str = ""
    started: datetime | None = None
    seconds: float | None = None  # from libvirtd's "Calling hook" to the end of the call

    def __str__(self) -> str:
        return f"{self.script} {self.domain} {self.event} {self.extra} -> {self.status}"


def parse_trace(text: str) -> list[HookCall]:
    calls: list[HookCall] = []
    running: dict[str, HookCall] = {}  # thread id -> its unfinished hook call
    for time, thread, function, message in _records(text):
        calling = _CALLING.search(message) if function == "virRunScript" else None
        if calling:
            call = HookCall(
                calling["script"],
                calling["domain"],
                f"{calling['op']}/{calling['subop']}",
                calling["extra"],
                started=time,
            )
            calls.append(call)
            running[thread] = call
            continue
        call = running.get(thread)
        if call is None:
            continue  # a command that is not a hook (QEMU, its capability probe...)
        failed = _FAILED.search(message) if function == "virCommandWait" else None
        if failed:
            call.status = int(failed["status"]) if failed["status"] else -int(failed["signal"])
        elif function == "virCommandRun" and message.startswith("Result status"):
            stderr = _RESULT_STDERR.search(message)
            call.stderr = stderr["stderr"] if stderr else ""
            if call.status is None:
                call.status = 0
            call.seconds = (time - call.started).total_seconds()
            del running[thread]
    return calls


def _records(text: str) -> Iterator[tuple[datetime, str, str, str]]:
    """(time, thread, function, message) per log record; a message may span lines (hook stderr)."""
    current: list | None = None
    for line in text.splitlines():
        match = _RECORD.match(line)
        if match:
            if current:
                yield current[0], current[1], current[2], "\n".join(current[3:])
            time = datetime.strptime(match["time"], "%Y-%m-%d %H:%M:%S.%f%z")
            current = [time, match["thread"], match["function"], match["message"]]
        elif current:
            current.append(line)
    if current:
        yield current[0], current[1], current[2], "\n".join(current[3:])
