"""The desktop side of a host as /proc shows it, and what stopping it ends.

A display manager (gdm, sddm, lightdm...) runs as a system unit; the desktops it starts run
in logind session scopes (`/user.slice/user-1000.slice/session-2.scope`): Xorg or Xwayland,
a compositor (gnome-shell, kwin_wayland, sway, Hyprland...), and on systemd-managed desktops
their helpers as user units of `graphical-session.target` (KDE's `plasma-*.service`,
`org.gnome.Shell@wayland.service`), under `user@UID.service`.

Stopping the display manager logs those sessions out: the processes of its unit, the X
servers it started and every process of a graphical session scope end. User units outlive
it: they end when the user's `graphical-session.target` is stopped (`display_manager:
{operation: stop, sessions: true}`). `stopped_by` says which processes a command ends; the
display_manager action waits for exactly those, the dry run predicts with it, and the test
suite's fake systemd follows it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .processes import Process

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
# X servers the display manager starts in session scopes of their own (not in its unit).
DISPLAY_SERVERS = ("Xorg", "X", "Xwayland")
# Compositors and shells that hold the GPU of a desktop session (names as /proc/PID/comm
# shows them: at most 15 characters, so kwin_wayland_wrapper is kwin_wayland_wr).
COMPOSITORS = (
    "gnome-shell",
    "mutter",
    "kwin_wayland",
    "kwin_wayland_wr",
    "kwin_x11",
    "plasmashell",
    "sway",
    "Hyprland",
    "weston",
    "wayfire",
    "river",
    "labwc",
    "niri",
    "cosmic-comp",
    "gamescope",
    "cinnamon",
    "muffin",
    "marco",
    "xfwm4",
    "budgie-wm",
    "enlightenment",
)
# Processes that mark a session scope as a desktop session of the display manager even
# when its compositor runs as a user unit (KDE Plasma, systemd-managed GNOME).
SESSION_LEADERS = (
    "gdm-session-wor",
    "gdm-wayland-ses",
    "gdm-x-session",
    "gnome-session-b",
    "sddm-helper",
    "startplasma-way",
    "startplasma-x11",
    "lightdm",
)
# User units that end with the user's desktop session (GNOME runs gnome-shell and Xwayland
# as org.gnome.Shell@wayland.service, stopped by gnome-session-ctl when the session ends).
SESSION_BOUND_UNIT_PREFIXES = ("org.gnome.",)
# User units that belong to graphical-session.target (stopped with it). KDE Plasma's do
# not end with the session: they are stopped with the target (`sessions: true`).
GRAPHICAL_UNIT_PREFIXES = (
    "plasma-",
    "org.gnome.Shell",
    "org.kde.",
    "sway",
    "hyprland",
    "wayland-wm",
)
_SCOPE = re.compile(r"^/user\.slice/user-(\d+)\.slice/(session-[^/]+\.scope)")
_USER_UNIT = re.compile(r"/user@(\d+)\.service/(?:.+/)?([^/]+\.service)(?:/|$)")


def is_desktop_process(process: Process) -> bool:
    """A display server or compositor: the processes of a desktop that hold the GPU."""
    return process.command in DISPLAY_SERVERS or process.command in COMPOSITORS


def session_scope(process: Process) -> str | None:
    """The logind session scope a process runs in (session-2.scope), if any."""
    match = _SCOPE.match(process.cgroup)
    return match.group(2) if match else None


def user_unit(process: Process) -> tuple[int, str] | None:
    """(uid, unit) of a process run by a user's systemd (plasma-kwin_wayland.service)."""
    match = _USER_UNIT.search(process.cgroup)
    return (int(match.group(1)), match.group(2)) if match else None


def graphical_scopes(processes: list[Process]) -> set[str]:
    """Session scopes that hold a desktop: a display server, a compositor or a display
    manager's session leader runs in them."""
    return {
        scope
        for p in processes
        if (is_desktop_process(p) or p.command in SESSION_LEADERS) and (scope := session_scope(p))
    }


def display_manager_unit(root: str | os.PathLike, processes: list[Process]) -> str | None:
    """The display manager's unit: what display-manager.service is an alias of (as
    `systemctl show -p Id display-manager.service` resolves it), else a known one running."""
    try:
        return os.path.basename(os.readlink(Path(root) / ALIAS))
    except OSError:
        pass
    for process in processes:
        if process.command in KNOWN:
            return KNOWN[process.command]
    return None


def unit_processes(unit: str, processes: list[Process]) -> list[Process]:
    """The processes of a system unit: its cgroup, or its program's name where there is no
    cgroup v2."""
    program = unit.removesuffix(".service")
    return [
        p
        for p in processes
        if p.cgroup.endswith(f"/{unit}") or (not p.cgroup and p.command == program)
    ]


def display_manager_processes(unit: str, processes: list[Process]) -> list[Process]:
    """What stopping the display manager ends: its unit, the X servers it started, and the
    graphical sessions it runs (every process of their session scopes, and the user units
    bound to those sessions, such as GNOME's org.gnome.Shell@wayland.service)."""
    scopes = graphical_scopes(processes)
    users = {
        int(m.group(1)) for p in processes if (m := _SCOPE.match(p.cgroup)) and m.group(2) in scopes
    }
    ours = {p.pid for p in unit_processes(unit, processes)}

    def session_bound(p: Process) -> bool:
        owner = user_unit(p)
        return (
            owner is not None
            and owner[0] in users
            and owner[1].startswith(SESSION_BOUND_UNIT_PREFIXES)
        )

    return [
        p
        for p in processes
        if p.pid in ours
        or (p.command in DISPLAY_SERVERS and not user_unit(p))
        or session_scope(p) in scopes
        or session_bound(p)
    ]


def graphical_session_processes(uid: int, processes: list[Process]) -> list[Process]:
    """What stopping a user's graphical-session.target ends: the user units that are part of
    it (plasma-*, org.gnome.Shell@..., a compositor run as a unit)."""
    found = []
    for p in processes:
        unit = user_unit(p)
        if (
            unit
            and unit[0] == uid
            and (unit[1].startswith(GRAPHICAL_UNIT_PREFIXES) or is_desktop_process(p))
        ):
            found.append(p)
    return found


def user_managers(processes: list[Process]) -> list[int]:
    """uids with a systemd user manager (`systemd --user`, in user@UID.service)."""
    return sorted(
        {
            p.uid
            for p in processes
            if p.command == "systemd" and p.uid not in (None, 0) and "/user@" in p.cgroup
        }
    )


def _passwd(root: str | os.PathLike) -> list[list[str]]:
    try:
        with open(Path(root) / "etc/passwd", encoding="utf-8") as handle:
            return [line.split(":") for line in handle if line.count(":") >= 2]
    except OSError:
        return []


def user_name(root: str | os.PathLike, uid: int) -> str:
    """The login name of a uid from <root>/etc/passwd (systemctl --machine wants a name)."""
    return next((f[0] for f in _passwd(root) if f[2] == str(uid)), str(uid))


def user_id(root: str | os.PathLike, name: str) -> int | None:
    """The uid of a login name (or of a number given as the name)."""
    found = next((f[2] for f in _passwd(root) if f[0] == name), name)
    return int(found) if found.isdigit() else None


def stopped_by(root: str | os.PathLike, argv: list[str], processes: list[Process]) -> list[Process]:
    """The processes a command ends, as systemd and kill(1) do it:

    - `kill -s SIG -- PID...`: those processes (a process that ignores the signal cannot be
      predicted; the step that sent it waits and reports it);
    - `systemctl stop UNIT`: the unit's processes; for the display manager, also its X servers
      and graphical sessions (systemctl returns once they are stopped);
    - `systemctl --user --machine=USER@.host stop graphical-session.target`: that user's
      graphical user units.
    Anything else ends nothing.
    """
    program = os.path.basename(argv[0]) if argv else ""
    if program == "kill" and "--" in argv:
        pids = {int(a) for a in argv[argv.index("--") + 1 :] if a.isdigit()}
        return [p for p in processes if p.pid in pids]
    if program != "systemctl":
        return []
    words = [a for a in argv[1:] if not a.startswith("-")]
    if len(words) < 2 or words[0] != "stop":
        return []
    machine = next((a.split("=", 1)[1] for a in argv if a.startswith("--machine=")), None)
    if "--user" in argv:
        uid = user_id(root, machine.split("@")[0]) if machine else None
        if uid is None or "graphical-session.target" not in words[1:]:
            return []
        return graphical_session_processes(uid, processes)
    ended: dict[int, Process] = {}
    manager = display_manager_unit(root, processes)
    for unit in words[1:]:
        unit = unit if "." in unit else f"{unit}.service"
        found = (
            display_manager_processes(unit, processes)
            if unit == manager or unit in KNOWN.values()
            else unit_processes(unit, processes)
        )
        ended.update((p.pid, p) for p in found)
    return sorted(ended.values(), key=lambda p: p.pid)
