"""What a host's desktop needs before its GPU can go to a VM, for `init` and `check`.

A GPU is a single-GPU host's GPU when it is the boot display (`boot_vga` 1) or the only
GPU a display server or compositor has open. Before it is detached: the display manager
is stopped (with its desktops; `sessions: true` when a compositor runs as a user unit,
KDE Plasma's), system services holding it are stopped (nvidia-persistenced), what still
holds it is ended (kill_holders: audio daemons, compositors started without a display
manager), the text consoles and the firmware framebuffer let go of it, and the vendor's
driver stack is unloaded (NVIDIA's always, amdgpu on a single-GPU host when it drives
nothing else).

`simulate` walks a profile's prepare/begin steps as the dry run will (the same rules of
passthrough.desktop for what each step ends) and says, for each device, what still holds
it when a step first unbinds it: what `check` reports before the dry run fails on it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from ..actions.command import Command
from ..actions.display_manager import DisplayManager
from ..actions.kill_holders import KillHolders
from ..actions.modprobe import Modprobe
from ..desktop import (
    COMPOSITORS,
    DISPLAY_SERVERS,
    display_manager_processes,
    display_manager_unit,
    graphical_session_processes,
    stopped_by,
    unit_processes,
    user_managers,
)
from ..holders import Holder, blocking, find_holders
from ..host import Host
from ..host.procfs import Procfs
from ..host.sysfs import Sysfs
from ..processes import Process, all_processes
from .facts import HostFacts, PciFunction

AUDIO_DAEMONS = ("pipewire", "wireplumber", "pulseaudio", "pipewire-pulse")
NVIDIA_STACK = ("nvidia_drm", "nvidia_modeset", "nvidia_uvm", "nvidia")
_SYSTEM_UNIT = re.compile(r"^/system\.slice/(?:.+/)?([^/]+\.service)$")
# Steps that take a device from its driver (the holder check happens there).
UNBINDING = ("detach", "unbind", "bind", "resize_bar")


def read_only_host(root: str | os.PathLike) -> Host:
    """A Host for reading sysfs and /proc of a root (nothing here writes)."""
    host = Host(root=os.fspath(root))
    host.sysfs = Sysfs(root, host)
    host.procfs = Procfs(root, host)
    return host


def system_unit(process: Process) -> str | None:
    """The system service a process runs in (nvidia-persistenced.service), if any."""
    match = _SYSTEM_UNIT.match(process.cgroup)
    return match.group(1) if match else None


@dataclass(frozen=True)
class Held:
    """A process holding one of the profile's devices, and what would end it."""

    holder: Holder
    address: str
    ended_by: str  # "display_manager", "sessions", "service", "kill", "" (nothing known)
    unit: str = ""  # the system service for "service"

    def __str__(self) -> str:
        return f"{self.holder.command} (pid {self.holder.pid})"


@dataclass
class DesktopNeeds:
    gpus: dict[str, str] = field(default_factory=dict)  # single-GPU GPUs -> why
    held: list[Held] = field(default_factory=list)
    display_manager: str | None = None
    sessions: bool = False
    services: list[str] = field(default_factory=list)
    allow: list[str] = field(default_factory=list)
    vtconsoles: bool = False  # a console is bound to a console driver now
    framebuffer: bool = False  # a firmware framebuffer is bound now
    driver_stack: list[str] = field(default_factory=list)  # modules to unload, users first
    driver_stack_vendor: str = ""

    @property
    def single_gpu(self) -> bool:
        return bool(self.gpus)

    @property
    def unknown(self) -> list[Held]:
        return [h for h in self.held if not h.ended_by]


def analyse(facts: HostFacts, addresses: list[str]) -> DesktopNeeds:
    host = read_only_host(facts.root)
    processes = all_processes(host)
    needs = DesktopNeeds()
    profile = set(addresses)
    gpus = [fn for fn in (facts.function(a) for a in addresses) if fn and fn.is_gpu]
    for gpu in gpus:
        why = single_gpu_reason(facts, host, gpu)
        if why:
            needs.gpus[gpu.address] = why
    unit = display_manager_unit(facts.root, processes)
    running = bool(unit and unit_processes(unit, processes))
    by_dm = (
        {p.pid for p in display_manager_processes(unit, processes)} if running and unit else set()
    )
    by_sessions = {
        p.pid
        for uid in user_managers(processes)
        for p in graphical_session_processes(uid, processes)
    }
    by_pid = {p.pid: p for p in processes}
    for address in addresses:
        for holder in find_holders(host, address):
            process = by_pid.get(holder.pid)
            service = system_unit(process) if process else None
            if holder.pid in by_dm:
                needs.held.append(Held(holder, address, "display_manager"))
            elif running and holder.pid in by_sessions:
                needs.held.append(Held(holder, address, "sessions"))
            elif service and service != unit:
                needs.held.append(Held(holder, address, "service", service))
            elif holder.command in AUDIO_DAEMONS + COMPOSITORS + DISPLAY_SERVERS:
                needs.held.append(Held(holder, address, "kill"))
            else:
                needs.held.append(Held(holder, address, ""))
    if running and (
        needs.single_gpu or any(h.ended_by in ("display_manager", "sessions") for h in needs.held)
    ):
        needs.display_manager = unit
        needs.sessions = any(h.ended_by == "sessions" for h in needs.held)
    needs.services = sorted({h.unit for h in needs.held if h.ended_by == "service"})
    needs.allow = list(
        dict.fromkeys(
            [
                *(AUDIO_DAEMONS[:3] if needs.single_gpu else ()),
                *(h.holder.command for h in needs.held if h.ended_by == "kill"),
            ]
        )
    )
    needs.vtconsoles = bool(_bound_consoles(host))
    needs.framebuffer = bool(_bound_framebuffers(host))
    needs.driver_stack, needs.driver_stack_vendor = driver_stack(facts, host, gpus, profile, needs)
    return needs


def single_gpu_reason(facts: HostFacts, host: Host, gpu: PciFunction) -> str:
    """Why the host's desktop is on this GPU ("" when it is not): the boot display, or the
    only GPU a display server or compositor has open."""
    if gpu.boot_vga:
        return "the host's boot display (boot_vga 1)"
    desktop = {
        fn.address: [
            h for h in find_holders(host, fn.address) if h.command in DISPLAY_SERVERS + COMPOSITORS
        ]
        for fn in facts.functions().values()
        if fn.is_gpu
    }
    users = desktop.get(gpu.address) or []
    if users and not any(held for address, held in desktop.items() if address != gpu.address):
        names = ", ".join(dict.fromkeys(h.command for h in users))
        return f"the only GPU the desktop uses ({names})"
    return ""


def driver_stack(
    facts: HostFacts, host: Host, gpus: list[PciFunction], profile: set[str], needs: DesktopNeeds
) -> tuple[list[str], str]:
    """The modules to unload before the detach, users first, and the vendor: NVIDIA's stack
    for a GPU on nvidia (its unbind hangs while nvidia_drm and nvidia_modeset use it), amdgpu
    for a single-GPU host's AMD card. Only when the driver drives nothing outside the
    profile (the unload takes every device of the driver)."""
    for gpu in gpus:
        if gpu.driver == "nvidia":
            modules = [m for m in NVIDIA_STACK if facts.module_loaded(m)]
            if modules and _drives_only(host, "nvidia", profile):
                return modules, "NVIDIA"
        if (
            gpu.driver == "amdgpu"
            and gpu.address in needs.gpus
            and facts.module_loaded("amdgpu")
            and _drives_only(host, "amdgpu", profile)
        ):
            return ["amdgpu"], "AMD"
    return [], ""


def _drives_only(host: Host, driver: str, profile: set[str]) -> bool:
    sysfs = host.sysfs
    bound = [e for e in sysfs.listdir(f"bus/pci/drivers/{driver}") if ":" in e and "." in e]
    return bool(bound) and set(bound) <= profile


def _bound_consoles(host: Host) -> list[tuple[str, str]]:
    from ..actions.vtconsoles import bound_consoles

    return bound_consoles(host)


def _bound_framebuffers(host: Host) -> list[tuple[str, str]]:
    from ..actions.framebuffer import bound_framebuffers

    return bound_framebuffers(host)


# --- what a profile's steps leave holding the devices ------------------------------------------


@dataclass
class FirstUnbind:
    """The step that first takes a device from its driver, what runs before it, and the
    holders it would find (an unbind of a device in use blocks: the step fails)."""

    address: str
    step: Any  # profile.Step
    earlier: list[Any]  # the prepare/begin steps before it
    held: list[Held]


@dataclass
class Simulation:
    unbinds: dict[str, FirstUnbind] = field(default_factory=dict)
    refused: list[tuple[Any, list[Held]]] = field(default_factory=list)  # kill_holders steps


def simulate(facts: HostFacts, profile: Any, needs: DesktopNeeds) -> Simulation:
    """Walk prepare/begin as the dry run will: which holders each step ends (the rules of
    passthrough.desktop), and which are left when a device is first unbound."""
    host = read_only_host(facts.root)
    processes = all_processes(host)
    ended: set[int] = set()
    result = Simulation()
    pending = list(dict.fromkeys(profile.devices.values()))
    module_of = _module_of_devices(host, pending)
    steps = profile.events.get("prepare/begin", [])
    for number, step in enumerate(steps):
        action = step.action
        alive = [p for p in processes if p.pid not in ended]
        unbinds: list[str] = []
        if action.name in UNBINDING:
            unbinds = [a for a in action.addresses() if a in pending]
        elif isinstance(action, Modprobe) and action.params.remove:
            removed = {m.replace("-", "_") for m in action.params.remove}
            unbinds = [a for a in pending if module_of.get(a) in removed]
        for address in unbinds:
            pending.remove(address)
            left = [h for h in needs.held if h.address == address and h.holder.pid not in ended]
            stuck = [h for h in left if h.holder in blocking([x.holder for x in left])]
            result.unbinds[address] = FirstUnbind(address, step, steps[:number], stuck)
        ended |= _ended_by(facts, step, alive, needs, ended, result)
    return result


def _ended_by(
    facts: HostFacts,
    step: Any,
    alive: list[Process],
    needs: DesktopNeeds,
    ended: set[int],
    result: Simulation,
) -> set[int]:
    """The pids a step ends (kill_holders: none when it would refuse, as it does)."""
    action = step.action
    if isinstance(action, DisplayManager):
        unit = display_manager_unit(facts.root, alive)
        if not unit or not unit_processes(unit, alive):
            return set()
        pids = {p.pid for p in display_manager_processes(unit, alive)}
        if action.params.sessions:
            for uid in user_managers(alive):
                pids |= {p.pid for p in graphical_session_processes(uid, alive)}
        return pids
    if isinstance(action, Command):
        return {p.pid for p in stopped_by(facts.root, list(action.params.argv), alive)}
    if isinstance(action, KillHolders):
        targets = [
            h for h in needs.held if h.address in action.params.device and h.holder.pid not in ended
        ]
        refused = [h for h in targets if h.holder.command not in action.params.allow]
        if refused:
            result.refused.append((step, refused))
            return set()
        return {h.holder.pid for h in targets}
    return set()


def _module_of_devices(host: Host, addresses: list[str]) -> dict[str, str]:
    """address -> the module of its driver (the driver's name when sysfs does not say)."""
    found = {}
    sysfs = host.sysfs
    for address in addresses:
        driver = sysfs.link_name(f"bus/pci/devices/{address}/driver")
        if driver:
            module = sysfs.link_name(f"bus/pci/drivers/{driver}/module")
            found[address] = (module or driver).replace("-", "_")
    return found


# --- the steps, as YAML -------------------------------------------------------------------------


@dataclass(frozen=True)
class NeededStep:
    action: str
    yaml: str  # the step in flow style: `display_manager: stop`
    why: str  # a comment for the profile
    optional: bool = False  # written commented out: for when the host shows it is needed
    block: tuple[str, ...] = ()  # the step in block style, for a profile, when too long for a line


def needed_steps(
    needs: DesktopNeeds, names: dict[str, str], first: FirstUnbind | None = None
) -> list[NeededStep]:
    """The steps the devices need before the detach, in profile order. With `first`, only
    those missing from the steps before that unbind. `names`: address -> device name."""
    earlier = list(first.earlier) + [first.step] if first else []
    have = {s.action.name for s in earlier}
    single = (
        first is None and needs.single_gpu or (first is not None and first.address in needs.gpus)
    )
    steps: list[NeededStep] = []
    dm_steps = [s.action for s in earlier if isinstance(s.action, DisplayManager)]
    if needs.display_manager and (
        not dm_steps or (needs.sessions and not any(a.params.sessions for a in dm_steps))
    ):
        dm_held = sorted(
            {h.holder.command for h in needs.held if h.ended_by in ("display_manager", "sessions")}
        )
        if needs.sessions:
            yaml = "display_manager: {operation: stop, sessions: true}"
            why = (
                f"Stop {needs.display_manager} and the desktop; sessions: the compositor "
                "runs as a user unit"
            )
        else:
            yaml = "display_manager: stop"
            why = f"Stop {needs.display_manager} and the desktop it runs"
        held = f" ({', '.join(dm_held)} hold the card)" if dm_held else ""
        steps.append(NeededStep("display_manager", yaml, why + held))
    stopped = {
        unit
        for s in earlier
        if isinstance(s.action, Command)
        for unit in _units_stopped(list(s.action.params.argv))
    }
    for unit in needs.services:
        if unit in stopped:
            continue
        holders = sorted({h.holder.command for h in needs.held if h.unit == unit})
        steps.append(
            NeededStep(
                "command",
                f"command: {{argv: [systemctl, stop, {unit}], undo_argv: [systemctl, start, {unit}]}}",
                f"Stop {unit} ({', '.join(holders)} holds the card) rather than kill it: "
                "undo starts it again",
                block=(
                    "command:",
                    f"    argv: [systemctl, stop, {unit}]",
                    f"    undo_argv: [systemctl, start, {unit}]",
                ),
            )
        )
    kill_left = [h for h in (first.held if first else needs.held) if h.ended_by == "kill"]
    if first is None and (needs.allow or kill_left) or (first is not None and kill_left):
        allow = list(dict.fromkeys([*needs.allow, *(h.holder.command for h in kill_left)]))
        devices = list(names.values())
        found = sorted({h.holder.command for h in needs.held if h.ended_by == "kill"})
        steps.append(
            NeededStep(
                "kill_holders",
                f"kill_holders: {{device: [{', '.join(devices)}], allow: [{', '.join(allow)}]}}",
                "End what still has the card open once the desktop is gone: audio daemons"
                + (f" ({', '.join(found)} now)" if found else ""),
            )
        )
    if single and needs.vtconsoles and "vtconsoles" not in have:
        steps.append(
            NeededStep(
                "vtconsoles",
                "vtconsoles: unbind",
                "The text consoles (fbcon) let go of the card; undo binds them again",
            )
        )
    if single and (first is None or needs.framebuffer) and "framebuffer" not in have:
        steps.append(
            NeededStep(
                "framebuffer",
                "framebuffer: unbind",
                "The firmware framebuffer (efifb, simpledrm) lets go of the card's memory"
                + ("" if needs.framebuffer else " (none is bound now: nothing to do then)"),
            )
        )
    unloaded = {
        m.replace("-", "_")
        for s in earlier
        if isinstance(s.action, Modprobe)
        for m in s.action.params.remove or []
    }
    stack = needs.driver_stack
    if (
        stack
        and not set(stack) <= unloaded
        and (first is None or needs.driver_stack_vendor == "NVIDIA")
    ):
        why = (
            "Unload NVIDIA's driver stack, users first: nvidia cannot let go of the card while "
            "nvidia_drm and nvidia_modeset use it; undo loads it again"
            if needs.driver_stack_vendor == "NVIDIA"
            else "Only if the detach hangs or the host freezes on it: unload amdgpu (it drives "
            "only this card) so that the card leaves the host driver completely; undo loads it "
            "again"
        )
        optional = needs.driver_stack_vendor != "NVIDIA"
        steps.append(
            NeededStep("modprobe", f"modprobe: {{remove: [{', '.join(stack)}]}}", why, optional)
        )
    return steps


def _units_stopped(argv: list[str]) -> list[str]:
    if (
        not argv
        or os.path.basename(argv[0]) != "systemctl"
        or "stop" not in argv
        or "--user" in argv
    ):
        return []
    words = [a for a in argv[argv.index("stop") + 1 :] if not a.startswith("-")]
    return [w if "." in w else f"{w}.service" for w in words]
