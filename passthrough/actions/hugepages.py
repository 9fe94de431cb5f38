from __future__ import annotations

import math

from ..errors import HostError
from ..schema import Args, ArgValues, Bool, Field, Int, Invalid, Str
from .base import Action, StepContext

TYPE_CHECKING = False  # typing's constant, without importing typing (the hook's imports)
if TYPE_CHECKING:
    import yaml

    from ..host import Host

PAGE_KIB = {"2M": 2048, "2MiB": 2048, "1G": 1048576, "1GiB": 1048576}
SIZE_NAME = {2048: "2M", 1048576: "1G"}
# A fragmented host often finds more pages after compaction; past a few rounds it will not.
ATTEMPTS = 4
# Memory units of libvirt's <memory unit=...> in KiB (docs: formatdomain, "Memory Allocation").
UNIT_KIB = {
    "b": 1 / 1024,
    "bytes": 1 / 1024,
    "KB": 1000 / 1024,
    "k": 1,
    "KiB": 1,
    "MB": 1000**2 / 1024,
    "M": 1024,
    "MiB": 1024,
    "GB": 1000**3 / 1024,
    "G": 1024**2,
    "GiB": 1024**2,
    "TB": 1000**4 / 1024,
    "T": 1024**3,
    "TiB": 1024**3,
}


def _count_or_domain(values: dict, node: yaml.Node) -> None:
    if (values["count"] is None) == (not values["for_domain"]):
        raise Invalid(
            node, "hugepages takes either count: N or for_domain: true, not both and not neither"
        )


def domain_memory_kib(text: str) -> tuple[int, bool]:
    """(the domain's <memory> in KiB, whether it asks for <memoryBacking><hugepages/>).

    Raises HostError saying what is missing, or why domain_xml.read refused the text (a
    document type declaration, which libvirt never writes and entity expansion bombs need).
    """
    from ..domain_xml import Unreadable, read

    if not text.strip():
        raise HostError(
            "for_domain needs the domain XML, which libvirt writes on stdin; none was given",
            hint="in a dry run, pass it with --xml FILE (virsh dumpxml DOMAIN > FILE)",
        )
    try:
        root = read(text)
    except Unreadable as exc:
        raise HostError(str(exc)) from None
    memory = root.find("memory")
    if memory is None or not (memory.text or "").strip().isdigit():
        raise HostError(
            "the domain XML has no <memory> with a number of KiB; cannot size the hugepages"
        )
    unit = memory.get("unit", "KiB")
    if unit not in UNIT_KIB:
        raise HostError(f"the domain XML's <memory unit='{unit}'> is not a unit libvirt knows")
    kib = math.ceil(int((memory.text or "").strip()) * UNIT_KIB[unit])
    return kib, root.find("memoryBacking/hugepages") is not None


class HugepagesArgs(ArgValues):
    size: str  # 2M or 1G
    count: int | None
    for_domain: bool


class Hugepages(Action):
    """Reserve hugepages for the VM (`hugepages: {size: 1G, count: 16}`, or
    `{size: 2M, for_domain: true}` to size it from the domain XML's <memory>). The pool
    grows until that many pages are free, so pages other VMs use are not counted. The
    kernel reports success even when it finds fewer pages than asked: then memory is
    compacted and the write retried, a few times; if the pages are still not there the
    pool goes back to its previous size and the step fails saying how many it got. Undo
    returns the pool to its previous size (pages still in use are kept by the kernel
    until they are freed)."""

    name = "hugepages"
    args = Args(
        values=HugepagesArgs,
        fields=(
            Field(
                "size",
                Str("a hugepage size: 2M or 1G", choices=tuple(PAGE_KIB)),
                default="2M",
                doc="the page size: 2M or 1G (default 2M)",
            ),
            Field("count", Int("a number of pages", 1, 1 << 24), doc="how many pages the VM needs"),
            Field(
                "for_domain",
                Bool(),
                default=False,
                doc="take the number of pages from the domain XML's <memory>",
            ),
        ),
        shorthand="count",
        check_all=_count_or_domain,
    )
    params: HugepagesArgs
    default_timeout = 120.0  # compacting and finding 1 GiB pages can take seconds each time

    def needs_domain_xml(self) -> bool:
        return bool(self.params.for_domain)

    def describe(self) -> str:
        size = SIZE_NAME[PAGE_KIB[self.params.size]]
        if self.params.for_domain:
            return f"reserve {size} hugepages for the domain's memory"
        return f"reserve {self.params.count} {size} hugepages"

    def apply(self, ctx: StepContext) -> dict:
        host, kib = ctx.host, PAGE_KIB[self.params.size]
        size = SIZE_NAME[kib]
        pool = f"kernel/mm/hugepages/hugepages-{kib}kB"
        if not host.sysfs.exists(pool):
            raise HostError(
                f"this host has no {size} hugepages (no /sys/{pool})",
                hint="1G pages need a CPU with pdpe1gb; check `grep pdpe1gb /proc/cpuinfo`",
            )
        needed = self.params.count or self._pages_for_domain(ctx, kib)
        total, free = (
            read_int(host, f"{pool}/nr_hugepages"),
            read_int(host, f"{pool}/free_hugepages"),
        )
        target = total + max(0, needed - free)
        record = {
            "pool": pool,
            "size": size,
            "previous": total,
            "target": target,
            "changed": needed > free,
        }
        if not record["changed"]:
            host.record(
                f"{free} {size} hugepages are free already ({needed} needed)", "nothing to do"
            )
            return record
        ctx.note(record)
        got, tries = reserve(host, pool, target, size)
        if got < target:
            set_pool(host, pool, total, size)
            record["changed"] = False
            ctx.note(record)
            raise HostError(
                f"the kernel gave {got - total} of the {target - total} {size} hugepages asked "
                f"for ({got} in the pool after {tries} tries with memory compaction); the pool is back "
                f"to {total}",
                hint=f"free memory, or reserve them at boot (hugepagesz={size} hugepages=N "
                f"on the kernel command line)",
            )
        return record

    def _pages_for_domain(self, ctx: StepContext, kib: int) -> int:
        memory_kib, backed = domain_memory_kib(ctx.domain_xml)
        if not backed:
            ctx.warnings.append(
                "the domain XML has no <memoryBacking><hugepages/>: QEMU will not use the "
                "reserved hugepages"
            )
        return math.ceil(memory_kib / kib)

    @classmethod
    def changed(cls, record: dict) -> bool:
        return bool(record.get("changed"))

    @classmethod
    def undo(cls, ctx: StepContext, record: dict) -> None:
        set_pool(ctx.host, record["pool"], record["previous"], record["size"])

    @classmethod
    def describe_undo(cls, record: dict) -> str:
        if not record.get("changed"):
            return "nothing (no hugepages were reserved)"
        return f"return the {record['size']} hugepage pool to {record['previous']} pages"


def read_int(host: Host, rel: str) -> int:
    text = host.sysfs.read(rel)
    if text is None or not text.isdigit():
        raise HostError(f"cannot read a number from /sys/{rel}")
    return int(text)


def set_pool(host: Host, pool: str, count: int, size: str) -> int:
    before = read_int(host, f"{pool}/nr_hugepages")
    host.sysfs.write(f"{pool}/nr_hugepages", str(count), effect=f"{size} pages: {before} → {count}")
    return read_int(host, f"{pool}/nr_hugepages")


def reserve(host: Host, pool: str, target: int, size: str) -> tuple[int, int]:
    """Write the target, compact memory and retry while the kernel gives fewer, within the
    step's time. Returns (pages in the pool, tries)."""
    got, tries = set_pool(host, pool, target, size), 1
    while got < target and tries < ATTEMPTS and host.time_left() > 0:
        host.procfs.write(
            "sys/vm/compact_memory", "1", effect=f"compact memory ({got} of {target} {size} pages)"
        )
        got, tries = set_pool(host, pool, target, size), tries + 1
    return got, tries
