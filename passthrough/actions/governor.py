from __future__ import annotations

from ..cpulist import format_cpu_list, parse_cpu_list
from ..errors import HostError
from ..schema import Args, ArgValues, CpuList, Field, Str
from .base import Action, StepContext

TYPE_CHECKING = False  # typing's constant, without importing typing (the hook's imports)
if TYPE_CHECKING:
    from ..host import Host

CPU_DIR = "devices/system/cpu"


def online_cpus(host: Host) -> list[int]:
    text = host.sysfs.read(f"{CPU_DIR}/online")
    if text is None:
        raise HostError(f"cannot read /sys/{CPU_DIR}/online to know which CPUs this host has")
    return parse_cpu_list(text)


def governor_file(cpu: int) -> str:
    return f"{CPU_DIR}/cpu{cpu}/cpufreq/scaling_governor"


class GovernorArgs(ArgValues):
    governor: str
    cpus: list[int] | None


class Governor(Action):
    """Set the cpufreq governor of CPUs (`governor: performance`, or
    `{governor: performance, cpus: 4-15}`; all online CPUs by default). The governor must be
    one the CPUs offer (scaling_available_governors). Undo gives each CPU back the governor
    it had before."""

    name = "governor"
    args = Args(
        values=GovernorArgs,
        fields=(
            Field(
                "governor",
                Str("a cpufreq governor such as performance", pattern=r"[a-z0-9_-]+"),
                required=True,
                doc="performance, powersave, schedutil, ondemand, ...",
            ),
            Field("cpus", CpuList(), doc="the CPUs to set, e.g. 4-15 (default: every online CPU)"),
        ),
        shorthand="governor",
    )
    params: GovernorArgs
    default_timeout = 20.0

    def describe(self) -> str:
        which = f"CPUs {format_cpu_list(self.params.cpus)}" if self.params.cpus else "every CPU"
        return f"set the cpufreq governor of {which} to {self.params.governor}"

    def apply(self, ctx: StepContext) -> dict:
        host, wanted = ctx.host, self.params.governor
        online = online_cpus(host)
        cpus = self.params.cpus or online
        offline = sorted(set(cpus) - set(online))
        if offline:
            raise HostError(
                f"CPU {format_cpu_list(offline)} not online on this host (online: {format_cpu_list(online)})"
            )
        for cpu in cpus:  # check them all before changing any
            available = host.sysfs.read(f"{CPU_DIR}/cpu{cpu}/cpufreq/scaling_available_governors")
            if available is None:
                raise HostError(
                    f"CPU {cpu} has no cpufreq (no /sys/{CPU_DIR}/cpu{cpu}/cpufreq): no frequency driver "
                    f"is loaded, or this is a VM"
                )
            if wanted not in available.split():
                raise HostError(
                    f"CPU {cpu} does not offer the governor {wanted}; it offers {available}",
                    hint="load its module (e.g. cpufreq_performance) or pick another",
                )
        record: dict = {"previous": []}  # [cpu, governor] pairs, in the order changed
        for cpu in cpus:
            before = host.sysfs.read(governor_file(cpu))
            if before == wanted:
                continue  # already, or CPUs sharing a frequency policy changed with an earlier one
            record["previous"].append([cpu, before])
            ctx.note(record)
            host.sysfs.write(governor_file(cpu), wanted, effect=f"CPU {cpu}: {before} → {wanted}")
        if not record["previous"]:
            host.record(f"every chosen CPU already uses {wanted}", "nothing to do")
        return record

    @classmethod
    def changed(cls, record: dict) -> bool:
        return bool(record.get("previous"))

    @classmethod
    def undo(cls, ctx: StepContext, record: dict) -> None:
        for cpu, before in reversed(record.get("previous", [])):
            now = ctx.host.sysfs.read(governor_file(cpu))
            if before and now != before:
                ctx.host.sysfs.write(
                    governor_file(cpu), before, effect=f"CPU {cpu}: {now} → {before}"
                )

    @classmethod
    def describe_undo(cls, record: dict) -> str:
        pairs = record.get("previous", [])
        if not pairs:
            return "nothing (no governor was changed)"
        before = sorted({governor for _, governor in pairs if governor})
        cpus = format_cpu_list([cpu for cpu, _ in pairs])
        return f"give CPUs {cpus} their governor back ({', '.join(before)})"
