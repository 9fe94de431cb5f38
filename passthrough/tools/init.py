"""`passthrough-hook init DOMAIN`: write a first profile from the domain's PCI <hostdev>s.

Devices are named from what they are (`gpu`, `gpu-audio`, `gpu-usb`...); functions of
the same slot that share the IOMMU group are added even when the XML leaves them out
(vfio needs the whole group); the steps load the vfio modules and detach every device.
An existing profile is never replaced without --force. Then `check` runs on the result.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from pathlib import Path
from typing import TextIO

from ..errors import EXIT_FAILED, EXIT_OK, UsageError
from ..output import emit
from . import libvirt_domain
from .check import Preflight, findings_json, print_findings
from .common import (
    PROG,
    add_config_dir,
    add_domain_xml,
    add_json,
    add_root,
    config_dir,
    parser_for,
    wrap,
)
from .facts import VFIO_MODULES, HostFacts, PciFunction
from .libvirt_domain import DomainXml, hostdev_snippet
from .naming import suggest_names

SCHEMA = Path(__file__).resolve().parent.parent / "profile.schema.json"
# Profiles name the schema next to them (install.sh puts it in the config dir, init keeps it
# current there): a relative path editors resolve from the profile's own directory, the same
# on every host, never the path of the checkout or the installed package.
SCHEMA_NAME = "profile.schema.json"


def build_parser() -> argparse.ArgumentParser:
    parser = parser_for(
        "init", "Write a first profile for a domain from its PCI <hostdev> entries, then check it."
    )
    add_root(parser)
    add_config_dir(parser)
    add_domain_xml(parser)
    add_json(parser)
    parser.add_argument("--force", action="store_true", help="replace an existing profile")
    parser.add_argument("domain")
    return parser


def main(argv: list[str], out: TextIO, err: TextIO) -> int:
    from ..profile import find_profile, load_profile, parse_profile

    args = build_parser().parse_args(argv)
    directory = config_dir(args)
    found = find_profile(directory, args.domain)
    existing = Path(found) if found is not None else None
    if existing is not None and not args.force:
        raise UsageError(
            f"{existing} exists; change it with `{PROG} edit {args.domain}`, or replace it with "
            f"`{PROG} init --force {args.domain}`"
        )
    xml = libvirt_domain.load(args.domain, args.xml, args.connect)
    if not xml.hostdevs:
        raise UsageError(
            f"{xml.source}: the domain has no PCI <hostdev>, so there is nothing to prepare; add the "
            f"GPU to the VM first (virt-manager: Add Hardware > PCI Host Device; or `virsh edit "
            f"{args.domain}` and add e.g. {hostdev_snippet('0000:03:00.0')})"
        )
    facts = HostFacts(args.root)
    target = existing or directory / f"{args.domain}.yaml"
    devices, notes = choose_devices(xml, facts)
    text = profile_text(args.domain, devices, facts)
    parse_profile(text.encode(), str(target))  # what init writes must be a valid profile
    write_new(target, text)
    write_schema(target.parent)
    findings = Preflight(args.domain, load_profile(target), facts, xml).run()
    failed = any(f.severity == "error" for f in findings)
    if args.json:
        emit(
            out,
            "init",
            {
                "ok": not failed,
                "profile": str(target),
                "text": text,
                "notes": [{"note": note, "example": example} for note, example in notes],
                "check": findings_json(args.domain, str(target), args.root, xml, findings),
            },
        )
        return EXIT_FAILED if failed else EXIT_OK
    print(f"Wrote {target}:\n", file=out)
    print(text, end="", file=out)
    for note, example in notes:
        print("\n".join(wrap(f"Note: {note}", "", "  ")), file=out)
        if example:
            print(f"  {example}", file=out)
    print("", file=out)
    print_findings(args.domain, str(target), args.root, xml, findings, False, out)
    return EXIT_FAILED if failed else EXIT_OK


def choose_devices(
    xml: DomainXml, facts: HostFacts
) -> tuple[dict[str, tuple[PciFunction, str]], list[tuple[str, str]]]:
    """name -> (function, why it is there), in address order; and (note, XML to paste) for the person."""
    notes = []
    chosen: dict[str, PciFunction] = {}
    why: dict[str, str] = {}
    for hostdev in xml.hostdevs:
        fn = facts.function(hostdev.address)
        if fn is None:
            notes.append(
                (
                    f"{hostdev.address} from the XML is not a PCI device of this host; check the address "
                    f"(`{PROG} iommu` lists this host's devices)",
                    "",
                )
            )
            fn = PciFunction(hostdev.address, "0000", "0000", 0, None, None, None, False)
        chosen[fn.address] = fn
        why[fn.address] = "in the XML"
    for fn in list(chosen.values()):
        for sibling in facts.functions().values():
            if (
                sibling.slot == fn.slot
                and fn.group is not None
                and sibling.group == fn.group
                and sibling.address not in chosen
            ):
                chosen[sibling.address] = sibling
                why[sibling.address] = "same slot and IOMMU group; not in the XML"
                notes.append(
                    (
                        f"added {sibling.short()}: it shares the slot and IOMMU group of {fn.address}, so "
                        f"it must be on vfio-pci too. If the guest should use it, `virsh edit` and add:",
                        hostdev_snippet(sibling.address),
                    )
                )
    names = suggest_names(list(chosen.values()))
    ordered = sorted(chosen.values(), key=lambda f: f.address)
    return {names[f.address]: (f, why[f.address]) for f in ordered}, notes


def profile_text(domain: str, devices: dict[str, tuple[PciFunction, str]], facts: HostFacts) -> str:
    width = max(len(f'  {name}: "{fn.address}"') for name, (fn, _) in devices.items()) + 2
    lines = [
        f"# yaml-language-server: $schema={SCHEMA_NAME}",
        f'# Profile for the libvirt domain "{domain}", written by `{PROG} init {domain}` from its',
        f"# <hostdev> entries. Check it with `{PROG} check {domain}`; change it with",
        f"# `{PROG} edit {domain}`.",
        "",
        "devices:",
    ]
    for name, (fn, why) in devices.items():
        entry = f'  {name}: "{fn.address}"'
        what = (
            f"{fn.class_name} {fn.ids}, {fn.driver or 'no driver'}"
            if fn.pci_class or fn.driver
            else "not found"
        )
        lines.append(f"{entry:<{width}}# {what}; {why}")
    lines += ["", "prepare/begin:                 # before libvirt starts QEMU"]
    desktop = desktop_lines(devices, facts)
    lines += desktop + reset_bug_lines(devices)
    lines += [
        f"  - modprobe: [{', '.join(VFIO_MODULES)}]",
        f"  - detach: [{', '.join(devices)}]",
    ]
    for name, (fn, _) in devices.items():
        if rebar_hint(fn, facts):
            lines.append(
                f"  # - resize_bar: {{device: {name}, bar: 2, size: 8MiB}}  # if Windows shows Code 43 "
                f"(AMD card, Resizable BAR on)"
            )
    lines += [
        "",
        *wrap_comment(
            "release/end omitted: after the VM stops, everything prepare/begin changed is undone "
            "in reverse order: " + ", ".join(undone(desktop)) + ".",
            indent="# ",
        ),
        "",
    ]
    return "\n".join(lines)


def desktop_lines(devices: dict[str, tuple[PciFunction, str]], facts: HostFacts) -> list[str]:
    """The steps the host's desktop needs before the detach (tools.desktop_needs), each with a
    comment saying why; none when nothing of the desktop holds the devices."""
    from .desktop_needs import analyse, needed_steps

    addresses = [fn.address for fn, _ in devices.values() if fn.pci_class or fn.driver]
    needs = analyse(facts, addresses)
    steps = needed_steps(needs, {fn.address: name for name, (fn, _) in devices.items()})
    if not steps:
        return []
    lines = []
    for address, why in needs.gpus.items():
        name = next(n for n, (fn, _) in devices.items() if fn.address == address)
        lines += wrap_comment(
            f"{name} is {why}: a single-GPU host. The desktop, the text consoles, the "
            f"firmware framebuffer and the host driver let go of the card first, and get it "
            f"back when the VM stops."
        )
    for step in steps:
        lines += wrap_comment(step.why + ".")
        first, *rest = step.block or (step.yaml,)
        lines.append(f"  {'# ' if step.optional else ''}- {first}")
        lines += [f"  {'# ' if step.optional else ''}{line}" for line in rest]
    return lines


def reset_bug_lines(devices: dict[str, tuple[PciFunction, str]]) -> list[str]:
    """For an AMD GPU with the reset bug and only a bus reset: the vendor-reset step, to
    uncomment once the module is installed (check explains the choices)."""
    from .check import amd_reset_bug_family

    lines = []
    for name, (fn, _) in devices.items():
        family = amd_reset_bug_family(fn)
        if family and fn.reset_methods == ("bus",):
            lines += wrap_comment(
                f"{name} is an AMD {family} GPU: its only reset (bus) does not reset it (the AMD "
                f"reset bug). With vendor-reset installed and loaded, uncomment this (undone on "
                f"release); `{PROG} check` says the other choice."
            )
            lines.append(
                f"  # - sysfs: {{path: /sys/bus/pci/devices/{fn.address}/reset_method, "
                f"value: device_specific}}"
            )
    return lines


def undone(desktop: list[str]) -> list[str]:
    """What the default release/end puts back, for the profile's closing comment."""
    text = "\n".join(line for line in desktop if line.lstrip().startswith("- "))
    parts = ["devices back to their drivers", "the vfio modules prepare loaded unloaded"]
    if "modprobe: {remove:" in text:
        parts.append("the host driver modules loaded again")
    if "framebuffer: unbind" in text or "vtconsoles: unbind" in text:
        parts.append("consoles and framebuffer bound again")
    if "- command:" in text:
        parts.append("the services it stopped started")
    if "display_manager:" in text:
        parts.append("the display manager started (the desktop comes back at the next login)")
    if "kill_holders:" in text:
        parts.append("ended processes are not restarted (audio daemons start again on their own)")
    return parts


def wrap_comment(text: str, width: int = 92, indent: str = "  # ") -> list[str]:
    import textwrap

    return textwrap.wrap(text, width, initial_indent=indent, subsequent_indent=indent)


def rebar_hint(fn: PciFunction, facts: HostFacts) -> bool:
    """An AMD GPU whose BAR 2 is resizable and larger than 8 MiB: the Code 43 case."""
    if not (fn.is_gpu and fn.vendor == "1002"):
        return False
    current, supported = facts.bar_resize(fn.address, 2)
    return supported is not None and 8 in supported and (current or 0) > 8 << 20


def write_schema(directory: Path) -> None:
    """The profile schema next to the profiles, for editors; kept equal to the package's."""
    data = SCHEMA.read_bytes()
    target = directory / SCHEMA_NAME
    try:
        if target.read_bytes() == data:
            return
    except OSError:
        pass
    write_new(target, data.decode())


def write_new(target: Path, text: str) -> None:
    """Write the profile through a temporary file and a rename: never half a profile."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, text.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        hint = (
            "; run as root (the hook's profiles are root's)"
            if isinstance(exc, PermissionError)
            else ""
        )
        raise UsageError(f"cannot write {target}: {exc.strerror}{hint}") from None
