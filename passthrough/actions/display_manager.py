from __future__ import annotations

from ..desktop import (
    KNOWN,
    display_manager_processes,
    display_manager_unit,
    graphical_session_processes,
    unit_processes,
    user_managers,
    user_name,
)
from ..errors import HostError
from ..processes import all_processes, wait_for_exit
from ..schema import Args, ArgValues, Bool, Field, Str
from .base import Action, StepContext


class DisplayManagerArgs(ArgValues):
    operation: str
    sessions: bool


class DisplayManager(Action):
    """Stop the display manager (`display_manager: stop`) on single-GPU hosts, so the
    desktop lets go of the GPU. It is found as the unit display-manager.service is an
    alias of (gdm, sddm, lightdm, ...). After `systemctl stop` returns, the step polls /proc
    until the unit's processes, the X servers it started and the processes of its graphical
    sessions (Xorg, Xwayland, gnome-shell, sway... in their session scopes) have really
    exited. With `sessions: true` it first stops graphical-session.target of every user with
    a systemd user manager: a compositor run as a user service (KDE Plasma's plasma-*
    units, kwin_wayland) keeps the GPU open otherwise (they come back at the next login). Nothing to do when no display manager runs. Undo
    starts the display manager again."""

    name = "display_manager"
    args = Args(
        values=DisplayManagerArgs,
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
    params: DisplayManagerArgs
    default_timeout = 60.0

    def asks_first(self) -> bool:
        return True  # the person's desktop goes away

    def describe(self) -> str:
        return "stop the display manager" + (
            " and the graphical sessions" if self.params.sessions else ""
        )

    def apply(self, ctx: StepContext) -> dict:
        host = ctx.host
        processes = all_processes(host)
        unit = display_manager_unit(host.root, processes)
        if not unit:
            host.record(
                "no display manager: no display-manager.service alias, and none of "
                + ", ".join(sorted(KNOWN))
                + " runs",
                "nothing to do",
            )
            return {"unit": None}
        if not unit_processes(unit, processes):
            host.record(f"{unit} is not running", "nothing to do")
            return {"unit": None}
        # What the stop ends (passthrough.desktop): the unit, its X servers, its graphical
        # sessions; with sessions: true also the users' graphical user units. The step waits
        # for all of them, so the next step finds the GPU free.
        users = user_managers(processes) if self.params.sessions else []
        ours = display_manager_processes(unit, processes)
        for uid in users:
            ours += [p for p in graphical_session_processes(uid, processes) if p not in ours]
        ours.sort(key=lambda p: p.pid)
        sessions: list[str] = []
        record = {"unit": unit, "processes": [p.to_json() for p in ours], "sessions": sessions}
        for uid in users:
            user = user_name(host.root, uid)
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
