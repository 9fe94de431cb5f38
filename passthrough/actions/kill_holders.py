from __future__ import annotations

import os

from ..errors import HostError
from ..holders import find_holders
from ..processes import SIGNALS, Process, send_signal, wait_for_exit
from ..schema import Args, ArgValues, Device, Field, ListOf, Seconds, Str
from .base import NotUndoable, StepContext

PROCESS_NAME = Str(
    "a process name as /proc/<pid>/comm shows it (at most 15 characters)", pattern=r"[^/\s]{1,15}"
)


class KillHoldersArgs(ArgValues):
    device: list[str]  # PCI addresses
    allow: list[str]
    signal: str
    timeout: float


class KillHolders(NotUndoable):
    """End the processes that hold a device open
    (`kill_holders: {device: gpu, allow: [Xorg, gnome-shell, pipewire]}`), so that unbinding
    it does not block. Holders are found in /proc: open files on the device's /dev nodes
    (/dev/dri/card*, renderD*, /dev/nvidia*, its /dev/snd/* sound nodes, /dev/vfio/<group>)
    and mmaps of its resource files. Only processes whose name is in `allow` are ended; if
    any other process holds the device, nothing is ended and the step fails naming it.
    They get `signal` (TERM by default) and `timeout` seconds (10) to exit. Not undone:
    ended processes are not started again (stopping their service with display_manager
    or command is undoable)."""

    name = "kill_holders"
    args = Args(
        values=KillHoldersArgs,
        fields=(
            Field(
                "device", ListOf(Device()), required=True, doc="a device name, or a list of them"
            ),
            Field(
                "allow",
                ListOf(PROCESS_NAME),
                required=True,
                doc="the process names that may be ended (as `ps -o comm` shows them)",
            ),
            Field(
                "signal",
                Str("a signal: TERM, INT, HUP, QUIT or KILL", choices=SIGNALS),
                default="TERM",
                doc="the signal to send (default TERM)",
            ),
            Field(
                "timeout",
                Seconds(),
                default=10.0,
                doc="seconds to wait for them to exit (default 10)",
            ),
        ),
    )
    params: KillHoldersArgs
    default_timeout = 30.0
    undo_note = "nothing (ended processes are not started again)"

    def addresses(self) -> list[str]:
        return list(self.params.device)

    def describe(self) -> str:
        devices = ", ".join(self.label(a) for a in self.params.device)
        return f"end the processes holding {devices} (allowed: {', '.join(self.params.allow)})"

    def apply(self, ctx: StepContext) -> dict:
        host = ctx.host
        holders = [
            (address, h) for address in self.params.device for h in find_holders(host, address)
        ]
        if not holders:
            host.record("no process holds " + ", ".join(self.params.device), "nothing to do")
            return {"ended": []}
        vital = [h for _, h in holders if h.pid in (1, os.getpid())]
        if vital:
            raise HostError(
                f"{vital[0].command} (pid {vital[0].pid}) holds {vital[0].path}; init and the hook itself "
                f"are never ended"
            )
        refused = [(a, h) for a, h in holders if h.command not in self.params.allow]
        if refused:
            raise HostError(
                "refusing to end processes not in allow: "
                + "; ".join(
                    f"{h.command} (pid {h.pid}) holds {h.path} of {ctx.label(a)}"
                    for a, h in refused
                ),
                hint="add their names to allow: if they may be ended, or stop them in an earlier step",
            )
        processes = list({h.pid: Process(h.pid, h.command) for _, h in holders}.values())
        send_signal(host, processes, self.params.signal)
        left = wait_for_exit(host, processes, self.params.timeout)
        if left:
            raise HostError(
                ", ".join(str(p) for p in left) + f" did not exit within {self.params.timeout:g} s "
                f"of SIG{self.params.signal}",
                hint="use signal: KILL, or a longer timeout",
            )
        return {"ended": [p.to_json() for p in processes]}
