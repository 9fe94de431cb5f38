"""`passthrough-hook check DOMAIN`: a preflight of a profile against the host and the
domain's XML, before anything runs. Each finding has a severity and a fix; the command
exits 1 when there is an error.

Severities: `error` (the VM start will fail or the host will lose a device), `warning`
(likely trouble: Code 43, a device the VM will not see), `info` (could not tell), and
`ok` for checks that passed, so the person sees what was checked.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO, TypeVar

from ..actions.drivers import Bind, Detach
from ..actions.modprobe import Modprobe
from ..actions.resize_bar import ResizeBar
from ..errors import EXIT_FAILED, EXIT_OK
from ..host.modules import configured_ids
from ..host.vga import resize_removals, sysfb_policy
from ..output import emit
from ..pci import is_stub_driver, is_vfio_driver
from ..units import format_bytes, format_mib
from .common import (
    PROG,
    add_config_dir,
    add_domain_xml,
    add_json,
    add_root,
    config_dir,
    existing_profile,
    parser_for,
    wrap,
)
from .desktop_needs import FirstUnbind, NeededStep
from .facts import VFIO_MODULES, HostFacts, PciFunction, card_conflicts
from .libvirt_domain import DomainXml, DomainXmlError, hostdev_snippet
from .naming import suggest_names

if TYPE_CHECKING:
    from ..actions.base import Action
    from ..profile import Profile, Step

A = TypeVar("A", bound="Action")

SEVERITIES = ("error", "warning", "info", "ok")
# Text that marks a hook file as ours: install.sh's marker, or the source file itself.
HOOK_MARKERS = (
    b"installed by passthrough-hook install.sh",
    b"from passthrough.hook import hook_main",
    b"from passthrough.cli import hook_main",  # hooks installed before passthrough.hook existed
)


def vfio_viable(driver: str | None) -> bool:
    """A group is viable for vfio when each device is a bridge, has no driver, or is on
    vfio-pci, one of its variant drivers, or pci-stub (which leaves DMA to its owner);
    linux drivers/vfio/group.c."""
    return driver is None or is_stub_driver(driver)


DAEMONS = (
    "virtqemud",
    "libvirtd",
)  # the modular daemon first: it is the one that runs hooks when present


@dataclass(frozen=True)
class Finding:
    severity: str
    check: str  # profile, iommu, devices, groups, modules, bars, hook, xml
    message: str
    fix: str = ""
    example: str = ""  # XML or YAML to paste, printed on a line of its own


def build_parser() -> argparse.ArgumentParser:
    parser = parser_for(
        "check",
        "Preflight: check a domain's profile against this host and the domain's XML "
        "(IOMMU, devices, IOMMU groups, vfio modules, BAR sizes, the hook, Code 43 "
        "traps). Exits 1 when a check finds an error.",
    )
    add_root(parser)
    add_config_dir(parser)
    add_domain_xml(parser)
    add_json(parser)
    parser.add_argument("domain")
    return parser


def main(argv: list[str], out: TextIO, err: TextIO) -> int:
    from ..profile import load_profile
    from . import libvirt_domain

    args = build_parser().parse_args(argv)
    profile = load_profile(existing_profile(config_dir(args), args.domain))
    try:
        xml, xml_problem = libvirt_domain.load(args.domain, args.xml, args.connect), None
    except DomainXmlError as exc:
        xml, xml_problem = None, exc
    findings = Preflight(args.domain, profile, HostFacts(args.root), xml, xml_problem).run()
    print_findings(args.domain, profile.path, args.root, xml, findings, args.json, out)
    return EXIT_FAILED if any(f.severity == "error" for f in findings) else EXIT_OK


def print_findings(
    domain: str,
    profile_path: str,
    root: str,
    xml: DomainXml | None,
    findings: list[Finding],
    as_json: bool,
    out: TextIO,
) -> None:
    counts = {s: sum(f.severity == s for f in findings) for s in SEVERITIES}
    if as_json:
        emit(out, "check", findings_json(domain, profile_path, root, xml, findings))
        return
    print(
        f"Preflight of {domain} (profile {profile_path}, host {root}, "
        f"XML {xml.source if xml else 'not available'}):",
        file=out,
    )
    print(findings_text(findings), end="", file=out)
    print(summary(domain, counts), file=out)


def findings_json(
    domain: str, profile_path: str, root: str, xml: DomainXml | None, findings: list[Finding]
) -> dict:
    return {
        "domain": domain,
        "profile": profile_path,
        "root": str(root),
        "xml": xml.source if xml else None,
        "ok": not any(f.severity == "error" for f in findings),
        "counts": {s: sum(f.severity == s for f in findings) for s in SEVERITIES},
        "findings": [asdict(f) for f in findings],
    }


def findings_text(findings: list[Finding]) -> str:
    lines = []
    indent = " " * 11
    for f in findings:
        lines += wrap(f.message, f"  {f.severity:<8} ", indent)
        if f.fix:
            lines += wrap(f"fix: {f.fix}", indent, indent + "     ")
        if f.example:
            lines.append(f"{indent}     {f.example}")
    return "\n".join(lines) + "\n"


def summary(domain: str, counts: dict[str, int]) -> str:
    problems = [
        f"{counts[s]} {s}{'s' if counts[s] != 1 else ''}" for s in ("error", "warning") if counts[s]
    ]
    if counts["error"]:
        return f"{', '.join(problems)}: fix the errors before starting {domain}."
    if counts["warning"]:
        return f"{', '.join(problems)}; no errors."
    return f"No problems found ({counts['ok']} checks passed)."


class Preflight:
    def __init__(
        self,
        domain: str,
        profile: Profile,
        facts: HostFacts,
        xml: DomainXml | None,
        xml_problem: DomainXmlError | None = None,
    ):
        self.domain = domain
        self.profile = profile
        self.facts = facts
        self.xml = xml
        self.xml_problem = xml_problem

    def run(self) -> list[Finding]:
        findings = self.trusted() + self.iommu() + self.devices()
        if self.facts.groups():
            findings += self.groups()
        findings += self.desktop() + self.reset_bug()
        return (
            findings
            + self.modules()
            + self.vfio_ids()
            + self.bars()
            + self.consoles()
            + self.hook()
            + self.policy()
            + self.domain_xml()
        )

    # --- helpers -----------------------------------------------------------------------------

    @property
    def given_xml(self) -> DomainXml:
        """The domain XML, for the checks that run only when there is one."""
        if self.xml is None:
            raise RuntimeError("a domain XML check ran without a domain XML")
        return self.xml

    def label(self, address: str) -> str:
        name = self.profile.name_of(address)
        return f"{name} ({address})" if name else address

    def steps(self, action: str) -> list[Step]:
        return [
            s for steps in self.profile.events.values() for s in steps if s.action.name == action
        ]

    def steps_of(self, kind: type[A]) -> list[tuple[Step, A]]:
        """The steps of one action, each with its action (typed: its arguments are read)."""
        return [(s, s.action) for s in self.steps(kind.name) if isinstance(s.action, kind)]

    def vfio_devices(self) -> bool:
        """Whether any step moves a device to vfio-pci."""
        moves = [a.params.driver for _, a in self.steps_of(Detach) + self.steps_of(Bind)]
        return any(is_vfio_driver(driver) for driver in moves)

    # --- checks --------------------------------------------------------------------------------

    def trusted(self) -> list[Finding]:
        """The hook runs as root and refuses a profile others could write; so does check,
        when it runs as root too (profile.check_trusted)."""
        from ..trust import profile_problems

        severity = "error" if os.geteuid() == 0 else "warning"
        return [
            Finding(severity, "profile", f"the hook will refuse this profile: {problem} ({fix})")
            for problem, fix in profile_problems(Path(self.profile.path), runs_as=0)
        ]

    def iommu(self) -> list[Finding]:
        groups = self.facts.groups()
        if not groups:
            return [
                Finding(
                    "error",
                    "iommu",
                    "the kernel has no IOMMU groups: the IOMMU is off, so vfio-pci "
                    "cannot take any device",
                    self.facts.no_iommu_advice(),
                )
            ]
        return [Finding("ok", "iommu", f"IOMMU on ({len(groups)} groups)")]

    def devices(self) -> list[Finding]:
        findings, present = [], []
        for name, address in self.profile.devices.items():
            fn = self.facts.function(address)
            if fn is None:
                findings.append(
                    Finding(
                        "error",
                        "devices",
                        f"{name} ({address}) is not a PCI device of this host",
                        f"correct its address under devices: in {self.profile.path} "
                        f"(`{PROG} iommu` lists this host's devices)",
                    )
                )
            else:
                present.append(f"{name} {address} ({fn.class_name}, {fn.driver or 'no driver'})")
        if present and not findings:
            findings.append(Finding("ok", "devices", f"devices present: {'; '.join(present)}"))
        return findings

    def managed_hostdevs(self) -> set[str]:
        """Devices libvirt detaches itself before QEMU starts (managed='yes' hostdevs)."""
        return {h.address for h in self.given_xml.hostdevs if h.managed} if self.xml else set()

    def groups(self) -> list[Finding]:
        profile_addresses = set(self.profile.devices.values())
        detached = profile_addresses | self.managed_hostdevs()
        findings, seen = [], set()
        for name, address in self.profile.devices.items():
            fn = self.facts.function(address)
            if fn is None:
                continue
            if fn.group is None:
                findings.append(
                    Finding(
                        "error",
                        "groups",
                        f"{name} ({address}) is in no IOMMU group, so vfio-pci cannot take it",
                        self.facts.no_iommu_advice(),
                    )
                )
                continue
            if fn.group in seen:
                continue
            seen.add(fn.group)
            members = self.facts.group_members(fn.group)
            missing = [
                m
                for m in members
                if m.address not in detached and not m.is_bridge and not vfio_viable(m.driver)
            ]
            owners = ", ".join(
                self.label(m.address) for m in members if m.address in profile_addresses
            )
            if missing:
                findings.append(self.incomplete_group(fn.group, owners, members, missing))
            else:
                findings.append(
                    Finding(
                        "ok",
                        "groups",
                        f"IOMMU group {fn.group} of {owners} holds nothing "
                        f"else that a host driver keeps",
                    )
                )
        return findings

    def incomplete_group(
        self, group: str, owners: str, members: list[PciFunction], missing: list[PciFunction]
    ) -> Finding:
        message = (
            f"IOMMU group {group} of {owners} also holds {', '.join(m.short() for m in missing)}, which "
            f"neither the profile nor libvirt (a managed <hostdev>) detaches: QEMU refuses the group "
            f'("group {group} is not viable") while any of its devices has a host driver'
        )
        allowed = {a for a in self.profile.devices.values()}
        host_devices = [m for m in card_conflicts(members, allowed) if m in missing]
        if host_devices:
            they = "it belongs" if len(host_devices) == 1 else "they belong"
            fix = (
                f"{', '.join(m.address for m in host_devices)}: {they} to the host, not to the card; put the "
                f"card in a slot with its own IOMMU group (one wired to the CPU) or look for an ACS option in "
                f"the firmware setup; pass {'it' if len(host_devices) == 1 else 'them'} too only if the host "
                f"can do without {'it' if len(host_devices) == 1 else 'them'}"
            )
        else:
            names = suggest_names(members, known={a: n for n, a in self.profile.devices.items()})
            lines = ", ".join(f'{names[m.address]}: "{m.address}"' for m in missing)
            them, hostdevs = (
                ("it", "a managed <hostdev>")
                if len(missing) == 1
                else ("them", "managed <hostdev>s")
            )
            fix = (
                f"add {them} under devices: ({lines}) and to the detach step in {self.profile.path}, or give "
                f"{them} to the VM as {hostdevs}"
            )
        return Finding("error", "groups", message, fix)

    def reset_bug(self) -> list[Finding]:
        """AMD GPUs that a bus reset does not reset (Polaris, Vega 10/20, Navi 10/14): after
        the first VM run the card stays hung until the host reboots, unless vendor-reset
        resets it or the release removes it and rescans the bus."""
        findings = []
        vendor_reset = self.facts.module_source("vendor_reset")
        for address in self.profile.devices.values():
            fn = self.facts.function(address)
            family = amd_reset_bug_family(fn) if fn else None
            if not fn or not family or fn.reset_methods != ("bus",):
                continue
            rel = f"/sys/bus/pci/devices/{address}/reset_method"
            message = (
                f"{self.label(address)} is an AMD {family} GPU ({fn.ids}), which has the AMD reset "
                f"bug: its only reset method is bus, which does not reset it, so after the VM "
                f"stops the card stays hung (a black screen at the next start, a guest that "
                f"cannot load its driver) until the host reboots"
            )
            how = (
                f"set its reset method before the VM starts: a prepare/begin step "
                f"`sysfs: {{path: {rel}, value: device_specific}}` (undone on release)"
            )
            if vendor_reset is None:
                how = (
                    "install vendor-reset (https://github.com/gnif/vendor-reset, DKMS), load it at "
                    "boot (`vendor-reset` in /etc/modules-load.d/), and " + how
                )
            else:
                how = f"vendor-reset is available ({_source_text(self.facts, vendor_reset)}): {how}"
            fix = (
                f"either {how}; or, without vendor-reset, reset the card on release/end by "
                f"removing it and rescanning the bus (echo 1 > /sys/bus/pci/devices/{address}/remove, "
                f"then echo 1 > /sys/bus/pci/rescan) with a remove/rescan step"
            )
            findings.append(Finding("warning", "reset", message, fix))
        return findings

    def desktop(self) -> list[Finding]:
        """What holds the devices when a prepare/begin step first takes them from their
        drivers (the dry run fails there), and what a single-GPU host's GPU still needs."""
        from .desktop_needs import analyse, needed_steps, simulate

        present = [a for a in self.profile.devices.values() if self.facts.function(a)]
        if not present:
            return []
        needs = analyse(self.facts, present)
        simulation = simulate(self.facts, self.profile, needs)
        names = {a: n for n, a in self.profile.devices.items()}
        findings = []
        for step, refused in simulation.refused:
            shown = "; ".join(
                f"{h} holds {h.holder.path} of {self.label(h.address)}" for h in refused
            )
            findings.append(
                Finding(
                    "error",
                    "desktop",
                    f"{step.event} step {step.number} ({step.where}) will refuse to end what "
                    f"holds the devices: {shown}; kill_holders ends only the names in allow:",
                    f"add {', '.join(dict.fromkeys(h.holder.command for h in refused))} to allow: "
                    f"at {step.where} if they may be ended, or stop them in an earlier step",
                )
            )
        for address, first in simulation.unbinds.items():
            gpu = needs.gpus.get(address)
            missing = needed_steps(needs, names, first)
            if not first.held and not (gpu and missing):
                continue
            findings.append(self.desktop_problem(address, gpu, first, missing))
        for address, why in needs.gpus.items():
            unbind = simulation.unbinds.get(address)
            if unbind and not unbind.held and not needed_steps(needs, names, unbind):
                findings.append(
                    Finding(
                        "ok",
                        "desktop",
                        f"{self.label(address)} is {why}: the profile frees it from the "
                        f"desktop, the consoles and the framebuffer before step {unbind.step.number}",
                    )
                )
        return findings

    def desktop_problem(
        self, address: str, gpu: str | None, first: FirstUnbind, missing: list[NeededStep]
    ) -> Finding:
        step = first.step
        action = "unload" if step.action.name == "modprobe" else step.action.name
        what = f"{self.label(address)} is {gpu}" if gpu else self.label(address)
        held = ", ".join(dict.fromkeys(str(h) for h in first.held))
        if first.held:
            paths = ", ".join(dict.fromkeys(h.holder.path for h in first.held))
            message = (
                f"{what} and {held} {'holds' if len(first.held) == 1 else 'hold'} it ({paths}) "
                f"when {step.event} step {step.number} ({step.where}) would {action} it: an "
                f"unbind of a device in use blocks, so the step fails"
            )
        else:
            message = (
                f"{what}, and nothing before {step.event} step {step.number} ({step.where}) "
                f"lets the host's desktop, consoles or driver go of it: "
                + ", ".join(s.action for s in missing)
                + " missing"
            )
        unknown = [h for h in first.held if not h.ended_by]
        fix = []
        if missing:
            fix.append(
                f"add before step {step.number}, in this order: "
                + "; ".join(f"`{s.yaml}`" for s in missing)
                + f" (or write the profile again: `{PROG} init --force {self.domain}`)"
            )
        if unknown:
            fix.append(
                "close "
                + ", ".join(str(h) for h in unknown)
                + " before starting the VM, or add "
                + ("its name" if len(unknown) == 1 else "their names")
                + " to a kill_holders step's allow:"
            )
        return Finding("error", "desktop", message, "; ".join(fix))

    def modules(self) -> list[Finding]:
        wanted = []
        named: dict[str, str] = {}  # module a step loads -> where
        for step, modprobe in self.steps_of(Modprobe):
            for m in modprobe.params.load or []:
                if m.replace("-", "_").startswith("vfio"):
                    wanted.append(m)
                    named.setdefault(m.replace("-", "_"), str(step.where))
        if self.vfio_devices():
            wanted += VFIO_MODULES
        wanted = list(dict.fromkeys(m.replace("-", "_") for m in wanted))
        if not wanted:
            return []
        release = self.facts.kernel_release()
        if release is None:
            return [
                Finding(
                    "info",
                    "modules",
                    f"cannot tell whether {', '.join(wanted)} exist: the tree does "
                    f"not say which kernel runs (no proc/sys/kernel/osrelease)",
                    f"make the tree with `{PROG} snapshot`, which records it",
                )
            ]
        findings = []
        for m in list(wanted):
            provided = self.facts.obsolete_module(m)
            if provided:
                wanted.remove(m)
                findings.append(
                    Finding(
                        "warning",
                        "modules",
                        f"{named.get(m, 'the profile')}: modprobe {m} has nothing to load: "
                        f"{provided}; the step skips it",
                        f"drop {m} from the modprobe step at {named[m]}: `modprobe: [vfio_pci]` "
                        f"loads what vfio needs on every kernel since 5.15"
                        if m in named
                        else "",
                    )
                )
        if not wanted:
            return findings
        sources = {m: self.facts.module_source(m) for m in wanted}
        absent = [m for m, source in sources.items() if source is None]
        directory = self.facts.module_dir()
        if absent and (directory is None or not directory.is_dir()):
            return findings + [
                Finding(
                    "error",
                    "modules",
                    f"kernel {release} runs but has no modules directory "
                    f"({directory}): {', '.join(absent)} cannot "
                    f"be loaded",
                    "the kernel was probably upgraded without a reboot: reboot into the installed "
                    "kernel (or reinstall the package of the running one); a kernel built without "
                    "modules needs CONFIG_VFIO_PCI=y",
                )
            ]
        if absent:
            return findings + [
                Finding(
                    "error",
                    "modules",
                    f"{', '.join(absent)}: not available for kernel {release} (not "
                    f"loaded, not built in, no module file in "
                    f"{directory})",
                    f"install the kernel's extra modules (Ubuntu: linux-modules-extra-{release}) or use a "
                    f"kernel built with CONFIG_VFIO_PCI",
                )
            ]
        shown = ", ".join(f"{m} ({_source_text(self.facts, s or '')})" for m, s in sources.items())
        return findings + [
            Finding("ok", "modules", f"vfio modules available for kernel {release}: {shown}")
        ]

    def bars(self) -> list[Finding]:
        findings = []
        for step, resize in self.steps_of(ResizeBar):
            address, bar = resize.params.device, resize.params.bar
            wanted = 1 << resize.params.size
            if self.facts.function(address) is None:
                continue  # reported by devices()
            current, supported = self.facts.bar_resize(address, bar)
            where = f"{step.event} step {step.number} ({step.where})"
            if supported is None:
                findings.append(
                    Finding(
                        "error",
                        "bars",
                        f"{where}: BAR {bar} of {self.label(address)} has no "
                        f"Resizable BAR capability (no resource{bar}_resize)",
                        "enable Resizable BAR / Above 4G decoding in the firmware setup (kernel "
                        "6.1 or newer is needed), or check the BAR number: the Code 43 fix for "
                        "AMD cards is BAR 2",
                    )
                )
            elif wanted not in supported:
                sizes = ", ".join(format_mib(m) for m in supported)
                findings.append(
                    Finding(
                        "error",
                        "bars",
                        f"{where}: BAR {bar} of {self.label(address)} does not "
                        f"support {format_mib(wanted)}; it supports {sizes}",
                        f"set size: to one of the supported sizes at {step.where}",
                    )
                )
            else:
                now = f"now {format_bytes(current)}" if current else "size now unknown"
                findings.append(
                    Finding(
                        "ok",
                        "bars",
                        f"BAR {bar} of {self.label(address)} can be set to "
                        f"{format_mib(wanted)} ({now})",
                    )
                )
        return findings

    def consoles(self) -> list[Finding]:
        """A resize of a VGA-class device removes firmware framebuffers: warn when that is
        the host's console on another GPU (kernels without commit 5ae3716cfdcd)."""
        findings = []
        policy = sysfb_policy(self.facts.root)
        release = self.facts.kernel_release() or "?"
        for step, resize in self.steps_of(ResizeBar):
            address = resize.params.device
            fn = self.facts.function(address)
            if fn is None or fn.boot_vga:
                continue  # the console is this GPU's own: it goes to the VM anyway
            framebuffers = [
                name
                for kind, name in resize_removals(self.facts.sysfs, address, policy)
                if kind == "framebuffer"
            ]
            if not framebuffers:
                continue
            console = next(
                (f.short() for f in self.facts.functions().values() if f.boot_vga), "another GPU"
            )
            certainty = (
                f"kernel {release} does so on a resize of any VGA-class device"
                if policy
                else f"kernel {release} may: its upstream version does not show whether it "
                f"has the fix"
            )
            findings.append(
                Finding(
                    "warning",
                    "bars",
                    f"{step.event} step {step.number} ({step.where}): resizing BAR "
                    f"{resize.params.bar} of {self.label(address)} makes the kernel "
                    f"remove {', '.join(framebuffers)}, the host's console on {console}, "
                    f"until reboot: {certainty} (commit 5ae3716cfdcd, in 6.1.47 and 6.5, "
                    f"limits it to the default VGA device)",
                    "update the kernel to 6.1.47 / 6.5 or newer, or let the host's GPU driver "
                    "take over the console at boot (then there is no firmware framebuffer left "
                    "to remove)",
                )
            )
        return findings

    def vfio_ids(self) -> list[Finding]:
        """vfio-pci's ids= (modprobe.d, kernel command line) takes every unbound device with
        those ids, and wins a later drivers_probe when vfio-pci loaded first: a device the
        host keeps must not match."""
        passed = set(self.profile.devices.values())
        findings = []
        for device_id, where in configured_ids(self.facts.root):
            for fn in self.facts.functions().values():
                if fn.ids != device_id or fn.address in passed:
                    continue
                findings.append(
                    Finding(
                        "warning",
                        "modules",
                        f"vfio-pci ids={device_id} ({where}) also matches {fn.short()}, which "
                        f"the profile leaves to the host: vfio-pci takes it whenever it is "
                        f"unbound (at boot when vfio-pci loads first, or on a reattach's "
                        f"drivers_probe)",
                        f"remove {device_id} from ids= in {where.rsplit(':', 1)[0]}: the "
                        f"profile's detach binds the VM's devices by address "
                        f"(driver_override), which never touches an identical card",
                    )
                )
        return findings

    def hook(self) -> list[Finding]:
        hooks = self.facts.root / "etc" / "libvirt" / "hooks"
        if not self.facts.is_live and not (self.facts.root / "etc" / "libvirt").is_dir():
            return [
                Finding(
                    "info",
                    "hook",
                    f"cannot tell whether the hook is installed: the tree "
                    f"{self.facts.root} has no etc/libvirt",
                    f"run `{PROG} check {self.domain}` on the host itself",
                )
            ]
        ours = [
            p for p in [hooks / "qemu", *sorted((hooks / "qemu.d").glob("*"))] if _is_our_hook(p)
        ]
        if not ours:
            return [
                Finding(
                    "error",
                    "hook",
                    f"the hook is not installed (no passthrough-hook in "
                    f"{hooks}/qemu or qemu.d/): libvirt will never run "
                    f"this profile",
                    "install it: `sudo ./install.sh` from the passthrough-hook sources",
                )
            ]
        hook = ours[0]
        shown = str(hook)
        if not os.stat(hook).st_mode & 0o111:
            return [
                Finding(
                    "error",
                    "hook",
                    f"{shown} is not executable, so libvirt skips it",
                    f"chmod 755 {shown}",
                )
            ]
        return [Finding("ok", "hook", f"hook installed: {shown}"), self.hook_noticed(hook, shown)]

    def hook_noticed(self, hook: Path, shown: str) -> Finding:
        """libvirt reads the hook directory when it starts or reloads: a hook written after
        that is not run. A reload leaves no trace, so a daemon older than the hook may or
        may not have noticed it."""
        reload_fix = (
            "reload libvirt (`systemctl reload libvirtd`, or virtqemud on modular installs); "
            "running VMs are not affected"
        )
        daemon = find_daemon(self.facts.root)
        if daemon is None:
            if self.facts.is_live:
                return Finding(
                    "info",
                    "hook",
                    "libvirt is not running (no libvirtd or virtqemud process); it "
                    "will find the hook when it starts",
                )
            return Finding(
                "info",
                "hook",
                "cannot tell whether libvirt noticed the hook: the tree shows no libvirt daemon",
                reload_fix,
            )
        name, pid = daemon
        started = process_start(self.facts.root, pid)
        written = os.stat(hook).st_mtime
        if started is None:
            return Finding(
                "info",
                "hook",
                f"cannot tell whether {name} (pid {pid}) noticed the hook: its start "
                f"time is not readable",
                f"if `virsh start` does not run the profile, {reload_fix}",
            )
        if written > started + 1:
            return Finding(
                "warning",
                "hook",
                f"{name} (pid {pid}) started at {_clock(started)}, before {shown} was "
                f"written ({_clock(written)}): it runs the hook only if it was "
                f"reloaded since (install.sh reloads it)",
                reload_fix,
            )
        return Finding(
            "ok",
            "hook",
            f"{name} (pid {pid}) started at {_clock(started)}, after the hook was "
            f"written: it runs the hook",
        )

    def domain_xml(self) -> list[Finding]:
        if self.xml is None:
            problem = self.xml_problem
            return [
                Finding(
                    "warning",
                    "xml",
                    f"domain XML checks skipped: {problem.reason if problem else 'no XML'}",
                    problem.fix if problem else "",
                )
            ]
        return self.hostdevs() + self.roms() + self.code43()

    def roms(self) -> list[Finding]:
        """Each <rom file=...>: there, readable, and where SELinux or AppArmor let QEMU read it."""
        from .policy_checks import rom_findings

        assert self.xml is not None
        return rom_findings(self.facts.root, self.facts.is_live, self.xml, self.label)

    def policy(self) -> list[Finding]:
        """SELinux and AppArmor as they concern the hook (policy_checks.py)."""
        from .policy_checks import policy_findings

        hooks = self.facts.root / "etc" / "libvirt" / "hooks"
        ours = [
            p for p in [hooks / "qemu", *sorted((hooks / "qemu.d").glob("*"))] if _is_our_hook(p)
        ]
        shown = "/" + os.path.relpath(ours[0], self.facts.root) if ours else None
        return policy_findings(self.facts.root, shown)

    def hostdevs(self) -> list[Finding]:
        findings = [
            Finding(
                "warning",
                "xml",
                f"{self.given_xml.source}: {problem}",
                f"correct it with `virsh edit {self.domain}`",
            )
            for problem in self.given_xml.problems
        ]
        profile_addresses = set(self.profile.devices.values())
        for hostdev in self.given_xml.hostdevs:
            if hostdev.address in profile_addresses:
                continue
            fn = self.facts.function(hostdev.address)
            what = fn.short() if fn else f"{hostdev.address} (not on this host)"
            if fn is not None and is_vfio_driver(fn.driver):
                findings.append(
                    Finding(
                        "info",
                        "xml",
                        f"the domain passes {what}, which the profile does not "
                        f"name; it is on {fn.driver} already",
                    )
                )
            elif hostdev.managed:
                findings.append(
                    Finding(
                        "info",
                        "xml",
                        f"the domain passes {what}, which the profile does not "
                        f"name: libvirt detaches it itself (managed='yes'), after "
                        f"the profile's prepare/begin steps",
                        f"name it in {self.profile.path} only if a step must act on it",
                    )
                )
            else:
                findings.append(
                    Finding(
                        "error",
                        "xml",
                        f"the domain passes {what} with managed='no' and the "
                        f"profile does not detach it: QEMU cannot open it while "
                        f"it is on {fn.driver if fn and fn.driver else 'no driver'}",
                        f"add it to devices: and the detach step in {self.profile.path}, or set "
                        f"managed='yes' on its <hostdev> (`virsh edit {self.domain}`)",
                    )
                )
        passed_groups = {
            fn.group
            for fn in (self.facts.function(h.address) for h in self.given_xml.hostdevs)
            if fn and fn.group is not None
        }
        for name, address in self.profile.devices.items():
            fn = self.facts.function(address)
            # The card's video and audio are for the guest; its other functions (USB-C, UCSI)
            # are often detached only because vfio needs the whole group.
            if (
                self.given_xml.hostdev(address) is None
                and fn
                and fn.group in passed_groups
                and not fn.is_gpu
                and fn.pci_class >> 8 != 0x0403
            ):
                # On vfio-pci only so that the group is viable: QEMU needs it off its host
                # driver, not in the VM.
                findings.append(
                    Finding(
                        "info",
                        "xml",
                        f"{name} ({address}, {fn.class_name}) has no <hostdev>: it is detached so "
                        f"that IOMMU group {fn.group} is viable, which needs no <hostdev>; the VM "
                        f"does not see it",
                    )
                )
            elif self.given_xml.hostdev(address) is None:
                findings.append(
                    Finding(
                        "warning",
                        "xml",
                        f"the profile detaches {name} ({address}) but the domain "
                        f"has no <hostdev> for it: the VM will not see it",
                        f"`virsh edit {self.domain}` and add inside <devices>:",
                        hostdev_snippet(address),
                    )
                )
        if not findings:
            count = len(self.given_xml.hostdevs)
            findings.append(
                Finding(
                    "ok",
                    "xml",
                    f"the domain's PCI hostdev{'s' if count != 1 else ''} "
                    f"({count}) {'are' if count != 1 else 'is'} the profile's "
                    f"device{'s' if count != 1 else ''}",
                )
            )
        return findings

    def code43(self) -> list[Finding]:
        addresses = dict.fromkeys(
            [*self.profile.devices.values(), *(h.address for h in self.given_xml.hostdevs)]
        )
        gpus = [
            fn
            for fn in (self.facts.function(a) for a in addresses)
            if fn is not None and fn.is_gpu and fn.vendor in ("1002", "10de")
        ]
        if gpus and self.given_xml.guest_os not in (None, "windows"):
            guest = {"macos": "macOS", "linux": "not Windows"}.get(self.given_xml.guest_os, "")
            shown = f" ({self.given_xml.os_id})" if self.given_xml.os_id else ""
            return [
                Finding(
                    "ok",
                    "xml",
                    f"Code 43 checks skipped: the guest is {guest}{shown}; Code 43 is a "
                    f"Windows driver's error",
                )
            ]
        findings = []
        for gpu in gpus:
            vendor = "NVIDIA" if gpu.vendor == "10de" else "AMD"
            if self.given_xml.vendor_id is None:
                findings.append(
                    Finding(
                        "warning",
                        "xml",
                        f"{self.label(gpu.address)} is an {vendor} GPU and the "
                        f"domain has no <hyperv><vendor_id state='on'/>: Windows "
                        f"drivers may stop it with Code 43",
                        f"`virsh edit {self.domain}` and put inside <features> (merged into "
                        f"an existing <hyperv>, any value of up to 12 characters):",
                        "<hyperv mode='custom'><vendor_id state='on' value='0123456789ab'/></hyperv>",
                    )
                )
            if vendor == "NVIDIA" and not self.given_xml.kvm_hidden:
                findings.append(
                    Finding(
                        "warning",
                        "xml",
                        f"{self.label(gpu.address)} is an NVIDIA GPU and the domain "
                        f"does not hide KVM: NVIDIA drivers before 465 stop with "
                        f"Code 43 when they see a hypervisor",
                        f"`virsh edit {self.domain}` and put inside <features>:",
                        "<kvm><hidden state='on'/></kvm>",
                    )
                )
        if gpus and not findings:
            findings.append(
                Finding(
                    "ok",
                    "xml",
                    "Code 43 traps avoided: the hypervisor vendor id is set"
                    + (" and KVM is hidden" if self.given_xml.kvm_hidden else ""),
                )
            )
        return findings


# PCI device ids of AMD GPUs with the reset bug, by family (those vendor-reset handles).
AMD_RESET_BUG = (
    ("Polaris", ((0x67C0, 0x67FF), (0x6980, 0x699F), (0x6FDF, 0x6FDF))),
    ("Vega 10", ((0x6860, 0x687F),)),
    ("Vega 20", ((0x66A0, 0x66AF),)),
    ("Navi 10", ((0x7310, 0x731F),)),
    ("Navi 14", ((0x7340, 0x734F),)),
)


def amd_reset_bug_family(fn: PciFunction) -> str | None:
    """The family of an AMD GPU with the reset bug, or None."""
    if fn.vendor != "1002" or not fn.is_gpu:
        return None
    device = int(fn.device, 16)
    for family, ranges in AMD_RESET_BUG:
        if any(low <= device <= high for low, high in ranges):
            return family
    return None


# --- the hook file and the libvirt daemon ------------------------------------------------------


def _is_our_hook(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            head = handle.read(64 * 1024)
    except OSError:
        return False
    return path.is_file() and any(marker in head for marker in HOOK_MARKERS)


def find_daemon(root: Path) -> tuple[str, int] | None:
    """(name, pid) of the running libvirt daemon that runs qemu hooks, from its pid file
    or, failing that, from <root>/proc."""
    for name in DAEMONS:
        try:
            pid = int((root / "run" / f"{name}.pid").read_text().strip())
        except (OSError, ValueError):
            continue
        if _comm(root, pid) == name:
            return name, pid
    try:
        pids = sorted(int(p) for p in os.listdir(root / "proc") if p.isdigit())
    except OSError:
        return None
    for name in DAEMONS:
        for pid in pids:
            if _comm(root, pid) == name:
                return name, pid
    return None


def _comm(root: Path, pid: int) -> str | None:
    try:
        return (root / "proc" / str(pid) / "comm").read_text().strip()
    except OSError:
        return None


def process_start(root: Path, pid: int) -> float | None:
    """When a process started (seconds since the epoch): field 22 of /proc/PID/stat, in
    clock ticks after boot, plus the boot time from /proc/stat."""
    try:
        stat = (root / "proc" / str(pid) / "stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])
        boot = next(
            int(line.split()[1])
            for line in (root / "proc" / "stat").read_text().splitlines()
            if line.startswith("btime ")
        )
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def _clock(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def _source_text(facts: HostFacts, source: str) -> str:
    if source in ("loaded", "built in"):
        return source
    return os.path.basename(source)
