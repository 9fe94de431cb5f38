"""`passthrough-hook iommu`: the IOMMU groups, what is in them, and whether a GPU's group
holds devices the host needs. Replaces the `iommu.sh` loop over /sys/kernel/iommu_groups
that every tutorial copies.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TextIO

from ..errors import EXIT_FAILED, EXIT_OK
from ..output import emit
from .common import add_json, add_root, parser_for, wrap
from .facts import HostFacts, PciFunction, card_conflicts
from .pcidb import PciIds, find_pci_ids


def build_parser() -> argparse.ArgumentParser:
    parser = parser_for(
        "iommu",
        "List the IOMMU groups with each device's class, IDs, name, driver and reset "
        "support, and mark GPU groups that hold devices the host needs. Exits 1 when "
        "the kernel has no IOMMU groups.",
    )
    add_root(parser)
    add_json(parser)
    return parser


def main(argv: list[str], out: TextIO, err: TextIO) -> int:
    args = build_parser().parse_args(argv)
    facts = HostFacts(args.root)
    groups = facts.groups()
    names = PciIds(find_pci_ids(facts.root))
    names.load({f.vendor for f in facts.functions().values()})
    report = [group_report(group, members, names) for group, members in groups.items()]
    if args.json:
        loader = facts.boot_loader()
        ungrouped = [
            {**f.to_json(), "name": names.describe(f.vendor, f.device)}
            for f in facts.functions().values()
            if f.group is None
        ]
        emit(
            out,
            "iommu",
            {
                "root": str(facts.root),
                "iommu": bool(groups),
                "cpu_vendor": facts.cpu_vendor(),
                "kernel_parameters": facts.iommu_parameters(),
                "advice": None if groups else facts.no_iommu_advice(),
                "boot_loader": {"name": loader.name, "how": loader.how},
                "pci_ids": str(names.path) if names.path else None,
                "groups": report,
                "devices_in_no_group": ungrouped,
            },
        )
    else:
        print(
            groups_text(facts, report, names) if groups else no_iommu_text(facts, names),
            end="",
            file=out,
        )
    return EXIT_OK if groups else EXIT_FAILED


def no_iommu_text(facts: HostFacts, names: PciIds) -> str:
    lines = wrap(
        f"The kernel has no IOMMU groups (nothing in {facts.root / 'sys/kernel/iommu_groups'}): the IOMMU "
        f"is off, so no device can be passed through.",
        width=100,
    )
    lines += wrap(f"To fix: {facts.no_iommu_advice()}.", width=100)
    lines += ["", f"PCI devices ({len(facts.functions())}, in no IOMMU group):", HEADER]
    lines += [
        device_line(fn, names.describe(fn.vendor, fn.device)) for fn in facts.functions().values()
    ]
    return "\n".join(lines) + "\n"


HEADER = (
    f"  {'ADDRESS':<12}  {'CLASS':<5}  {'VENDOR:DEV':<10}  {'DRIVER':<14} {'RESET':<9} DESCRIPTION"
)


def device_line(fn: PciFunction, name: str | None) -> str:
    description = fn.class_name + (f": {name}" if name else "")
    return (
        f"  {fn.address:<12}  {fn.class_code:<5}  {fn.ids:<10}  {fn.driver or '-':<14} {reset_text(fn):<9} "
        f"{description}"
    )


def reset_text(fn: PciFunction) -> str:
    if fn.reset_methods is None:
        return "?"  # kernels before 5.15 have no reset_method file: they do not say
    return ",".join(fn.reset_methods) or "none"


def group_report(group: str, members: list[PciFunction], names: PciIds) -> dict:
    conflicts = card_conflicts(members)
    gpus = [f for f in members if f.is_gpu]
    tag, advice = group_note(gpus, conflicts)
    return {
        "group": group,
        "gpu": bool(gpus),
        "conflicts": [f.address for f in conflicts],
        "note": tag,
        "advice": advice,
        "devices": [{**f.to_json(), "name": names.describe(f.vendor, f.device)} for f in members],
    }


def group_note(
    gpus: list[PciFunction], conflicts: list[PciFunction]
) -> tuple[str | None, str | None]:
    """(a few words for the group's header, advice printed below its devices)."""
    if not gpus:
        return None, None
    gpu = gpus[0].address
    if conflicts:
        return (
            f"WARNING: GPU {gpu} shares this group with devices the host needs: "
            f"{', '.join(f.short() for f in conflicts)}",
            "A group goes to the VM whole: passing the GPU through takes those devices from the host. "
            "Put the card in another slot (one wired to the CPU, not the chipset), or look for an ACS "
            "option in the firmware setup.",
        )
    if any(f.boot_vga for f in gpus):
        return (
            f"GPU {gpu} is the boot display (boot_vga)",
            "The host's console is on this GPU: passing it through leaves the host without a display.",
        )
    return f"GPU {gpu}: its functions go to the VM together (bridges stay with the host)", None


def no_names_note(root: Path) -> str:
    if Path(root).resolve() == Path("/"):
        return "(No device names: install pciutils or hwdata for /usr/share/misc/pci.ids.)"
    return (
        f"(No device names: {root} has no usr/share/misc/pci.ids; a `snapshot` of a host "
        "carries the names of its devices.)"
    )


def groups_text(facts: HostFacts, report: list[dict], names: PciIds) -> str:
    devices = sum(len(g["devices"]) for g in report)
    lines = [f"IOMMU groups of {facts.root}: {len(report)} groups, {devices} devices", "", HEADER]
    for group in report:
        lines.append(f"Group {group['group']}" + (f": {group['note']}" if group["note"] else ""))
        for dev in group["devices"]:
            lines.append(device_line(facts.functions()[dev["address"]], dev["name"]))
        if group["advice"]:
            lines.extend(wrap(group["advice"], "    ", "    ", width=100))
    mixed = [g["group"] for g in report if g["conflicts"]]
    lines.append("")
    if mixed:
        lines.append(f"Groups that mix a GPU with host devices: {', '.join(mixed)}.")
    if names.path is None:
        lines.append(no_names_note(facts.root))
    lines.append(
        "RESET is the kernel's reset_method: flr and pm reset one function, bus resets the slot; "
        "none means the device cannot be reset between VM runs."
    )
    return "\n".join(lines) + "\n"
