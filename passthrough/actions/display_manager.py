from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..errors import HostError
from ..processes import Process, all_processes, wait_for_exit
from ..schema import Args, Bool, Field, Str
from .base import Action, StepContext

if TYPE_CHECKING:
    from ..host import Host

ALIAS = "etc/systemd/system/display-manager.service"
# Display managers and the process names they run as, for hosts where the alias is missing.
KNOWN = {
    "gdm": "gdm.service",
    "gdm3": "gdm3.service",
    "sddm": "sddm.service",
    "lightdm": "lightdm.service",
    "lxdm": "lxdm.service",
    "xdm": "xdm.service",
    "slim": "slim.service",
    "ly": "ly.service",
    "greetd": "greetd.service",
    "nodm": "nodm.service",
    "entrance": "entrance.service",
}
# X servers the display manager starts in session scopes of their own (not in its unit):
# they hold the GPU and must be gone too.
DISPLAY_SERVERS = ("Xorg", "X", "Xwayland")


def display_manager_unit(host: Host, processes: list[Process]) -> str | None:
    """The display manager's unit: what display-manager.service is an alias of (as
    `systemctl show -p Id display-manager.service` resolves it), else a known one running."""
    try:
        return os.path.basename(os.readlink(os.path.join(host.root, ALIAS)))
    except OSError:
        pass
    for process in processes:
        if process.command in KNOWN:
            return KNOWN[process.command]
    return None


def unit_processes(unit: str, processes: list[Process]) -> list[Process]:
    """The unit's processes (its cgroup, or its program's name where there is no cgroup v2),
    and the X servers it started."""
    program = unit.removesuffix(".service")
    return [
        p
        for p in processes
        if p.cgroup.endswith(f"/{unit}")
        or (not p.cgroup and p.command == program)
        or p.command in DISPLAY_SERVERS
    ]


def user_managers(processes: list[Process]) -> list[int]:
    """uids with a systemd user manager (`systemd --user`, in user@UID.service)."""
    return sorted(
        {
            p.uid
            for p in processes
            if p.command == "systemd" and p.uid not in (None, 0) and "/user@" in p.cgroup
        }
    )


def user_name(host: Host, uid: int) -> str:
    """The login name of a uid from <root>/etc/passwd (systemctl --machine wants a name)."""
    try:
        with open(os.path.join(host.root, "etc/passwd"), encoding="utf-8") as handle:
            for line in handle:
                fields = line.split(":")
                if len(fields) > 2 and fields[2] == str(uid):
                    return fields[0]
    except OSError:
        pass
    return str(uid)


class DisplayManager(Action):
    """Stop the display manager (`display_manager: stop`) on single-GPU hosts, so the
    desktop lets go of the GPU. It is found as the unit display-manager.service is an
    alias of (gdm, sddm, lightdm, ...). After `systemctl stop` returns, the step polls /proc
    until the unit's processes and the X servers it started have really exited. With
    `sessions: true` it first stops graphical-session.target of every user with a systemd
    user manager: a Wayland compositor run as a user service keeps the GPU open otherwise
    (they come back at the next login). Nothing to do when no display manager runs. Undo
    starts the display manager again."""

    name = "display_manager"
    args = Args(
        fields=(
            Field(
                "operation",
                Str("stop", choices=("stop",)),
                required=True,
                doc="stop (the only operation; undo starts it again)",
            ),
            Field(
                "sessions",
                Bool(),
                default=False,
                doc="first stop every user's graphical-session.target (Wayland compositors "
                "run as user services)",
            ),
        ),
        shorthand="operation",
    )
    default_timeout = 60.0

    def asks_first(self) -> bool:
        return True  # the person's desktop goes away

    def describe(self) -> str:
        return "stop the display manager" + (
            " and the graphical sessions" if self.values["sessions"] else ""
        )

    def apply(self, ctx: StepContext) -> dict:
        host = ctx.host
        processes = all_processes(host)
        unit = display_manager_unit(host, processes)
        ours = unit_processes(unit, processes) if unit else []
        if not unit:
            host.record(
                "no display manager: no display-manager.service alias, and none of "
                + ", ".join(sorted(KNOWN))
                + " runs",
                "nothing to do",
            )
            return {"unit": None}
        if not any(p.command not in DISPLAY_SERVERS for p in ours):
            host.record(f"{unit} is not running", "nothing to do")
            return {"unit": None}
        sessions: list[str] = []
        record = {"unit": unit, "processes": [p.to_json() for p in ours], "sessions": sessions}
        if self.values["sessions"]:
            for uid in user_managers(processes):
                user = user_name(host, uid)
                sessions.append(user)
                ctx.note(record)
                # Synchronous: systemctl returns when the target's units have stopped.
                host.commands.run(
                    [
                        "systemctl",
                        "--user",
                        f"--machine={user}@.host",
                        "stop",
                        "graphical-session.target",
                    ],
                    effect=f"{user}'s graphical session: stopped",
                )
        ctx.note(record)
        host.commands.run(["systemctl", "stop", unit], effect=f"{unit}: active → inactive")
        left = wait_for_exit(host, ours, host.time_left(3600.0))  # the rest of the step's time
        if left:
            raise HostError(
                f"{unit} stopped but " + ", ".join(str(p) for p in left) + " still run",
                hint="end them with a kill_holders step, or raise the step's timeout",
            )
        return record

    @classmethod
    def changed(cls, record: dict) -> bool:
        return bool(record.get("unit"))

    @classmethod
    def undo(cls, ctx: StepContext, record: dict) -> None:
        ctx.host.commands.run(
            ["systemctl", "start", record["unit"]], effect=f"{record['unit']}: inactive → active"
        )

    @classmethod
    def describe_undo(cls, record: dict) -> str:
        if not record.get("unit"):
            return "nothing (no display manager was stopped)"
        return f"start {record['unit']} again"
