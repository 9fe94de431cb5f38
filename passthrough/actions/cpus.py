from __future__ import annotations

import os

from ..cpulist import format_cpu_list
from ..errors import HostError
from ..schema import Args, ArgValues, CpuList, Field, ListOf, Str
from .base import Action, StepContext
from .governor import online_cpus

TYPE_CHECKING = False  # typing's constant, without importing typing (the hook's imports)
if TYPE_CHECKING:
    from ..host import Host

CGROUP = "fs/cgroup"
SYSTEMD_UNITS = ("system.slice", "user.slice", "init.scope")
GROUP = Str("a cgroup or systemd unit name", pattern=r"[A-Za-z0-9_.@:-]+")


def has_systemd(host: Host) -> bool:
    """What sd_booted() checks: systemd is the init system when /run/systemd/system exists."""
    return os.path.isdir(os.path.join(host.root, "run/systemd/system"))


def top_level_groups(host: Host) -> list[str]:
    """Without systemd: the cgroups right under the root, but not libvirt's (machine, machine.slice),
    where the VM runs."""
    return [
        name
        for name in host.sysfs.listdir(CGROUP)
        if host.sysfs.exists(f"{CGROUP}/{name}/cgroup.controllers")
        and not name.startswith("machine")
    ]


def shown(cpus: str) -> str:
    return cpus or "all (unset)"


class CpusArgs(ArgValues):
    host: list[int]  # CPU numbers, sorted
    groups: list[str] | None


class Cpus(Action):
    """Keep the host on some CPUs while the VM runs (`cpus: 0-3,8-11`, or `{host: "0-3,8-11"}`:
    quoted, as a comma ends a value inside {...}), leaving the
    others to the VM. With systemd it sets AllowedCPUs on system.slice, user.slice and
    init.scope (`systemctl set-property --runtime`, gone at reboot); without systemd it writes
    cpuset.cpus of the top-level cgroups (cgroup v2) other than libvirt's machine ones,
    enabling the cpuset controller first if needed. The CPUs must be online. Undo puts back
    each group's previous value (read from its cpuset.cpus, which is what AllowedCPUs sets),
    which may be a restriction of its own, not "all"."""

    name = "cpus"
    args = Args(
        values=CpusArgs,
        fields=(
            Field("host", CpuList(), required=True, doc="the CPUs the host keeps, e.g. 0-3,8-11"),
            Field(
                "groups",
                ListOf(GROUP),
                doc="the systemd units or cgroups to restrict (default: system.slice, user.slice, "
                "init.scope; without systemd every top-level cgroup but machine*)",
            ),
        ),
        shorthand="host",
    )
    params: CpusArgs
    default_timeout = 30.0

    def describe(self) -> str:
        return f"keep the host on CPUs {format_cpu_list(self.params.host)}"

    def apply(self, ctx: StepContext) -> dict:
        host, cpus = ctx.host, format_cpu_list(self.params.host)
        online = online_cpus(host)
        missing = sorted(set(self.params.host) - set(online))
        if missing:
            raise HostError(
                f"CPU {format_cpu_list(missing)} not online on this host (online: {format_cpu_list(online)})"
            )
        if not host.sysfs.exists(f"{CGROUP}/cgroup.controllers"):
            raise HostError(
                "cgroup v2 is not mounted at /sys/fs/cgroup; cpus needs the unified hierarchy",
                hint="boot with systemd.unified_cgroup_hierarchy=1, or drop this step",
            )
        systemd = has_systemd(host)
        groups = self.params.groups or (list(SYSTEMD_UNITS) if systemd else top_level_groups(host))
        record: dict = {"systemd": systemd, "groups": [], "enabled_cpuset": False}
        if not systemd:
            enable_cpuset(ctx, record)
        for group in groups:
            if not systemd and not host.sysfs.exists(f"{CGROUP}/{group}/cgroup.controllers"):
                raise HostError(f"no cgroup /sys/{CGROUP}/{group} on this host")
            previous = host.sysfs.read(f"{CGROUP}/{group}/cpuset.cpus") or ""
            if previous == cpus:
                continue
            record["groups"].append({"group": group, "previous": previous})
            ctx.note(record)
            set_cpus(host, systemd, group, cpus, previous)
        return record

    @classmethod
    def changed(cls, record: dict) -> bool:
        return bool(record.get("groups") or record.get("enabled_cpuset"))

    @classmethod
    def undo(cls, ctx: StepContext, record: dict) -> None:
        host = ctx.host
        for entry in reversed(record.get("groups", [])):
            now = host.sysfs.read(f"{CGROUP}/{entry['group']}/cpuset.cpus") or ""
            set_cpus(host, record["systemd"], entry["group"], entry["previous"], now)
        if record.get("enabled_cpuset"):
            host.sysfs.write(
                f"{CGROUP}/cgroup.subtree_control", "-cpuset", effect="cpuset controller: on → off"
            )

    @classmethod
    def describe_undo(cls, record: dict) -> str:
        entries = list(reversed(record.get("groups", [])))
        if not entries:
            return "nothing (no CPU restriction was changed)"
        return (
            "give "
            + ", ".join(f"{e['group']} CPUs {shown(e['previous'])}" for e in entries)
            + " back"
        )


def enable_cpuset(ctx: StepContext, record: dict) -> None:
    """Without systemd nobody may have enabled the cpuset controller for the top-level groups."""
    host = ctx.host
    if "cpuset" in (host.sysfs.read(f"{CGROUP}/cgroup.subtree_control") or "").split():
        return
    record["enabled_cpuset"] = True
    ctx.note(record)
    host.sysfs.write(
        f"{CGROUP}/cgroup.subtree_control", "+cpuset", effect="cpuset controller: off → on"
    )


def set_cpus(host: Host, systemd: bool, group: str, cpus: str, before: str) -> None:
    effect = f"{group} CPUs: {shown(before)} → {shown(cpus)}"
    if systemd:
        # Empty AllowedCPUs= resets the property, which is what an empty cpuset.cpus means.
        host.commands.run(
            ["systemctl", "set-property", "--runtime", group, f"AllowedCPUs={cpus}"], effect=effect
        )
    else:
        host.sysfs.write(f"{CGROUP}/{group}/cpuset.cpus", cpus or "\n", effect=effect)
