"""`check`'s findings on the security policy: whether SELinux or AppArmor lets libvirt run
the hook as it needs, and whether QEMU may read each `<rom file=...>` of the domain.
The facts behind them are in security.py."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

from . import security
from .check import Finding
from .libvirt_domain import DomainXml

SETSEBOOL = f"setsebool -P {security.HOOK_BOOLEAN} on"
# What the hook does under the daemon's AppArmor profile: (path, permission, what for).
HOOK_NEEDS = (
    ("/sys/bus/pci/drivers_probe", "w", "sysfs writes"),
    ("/usr/sbin/modprobe", "x", "modprobe"),
)


def policy_findings(root: Path, hook: str | None) -> list[Finding]:
    """SELinux and AppArmor as they concern the hook; `hook` is the installed hook's path on
    the host (/etc/libvirt/hooks/qemu or qemu.d/...), None when it is not installed."""
    return selinux_findings(root, hook) + apparmor_findings(root, hook)


def selinux_findings(root: Path, hook: str | None) -> list[Finding]:
    state = security.SELinux.read(root)
    if state is None:
        return []
    mode = "enforcing" if state.enforcing else "permissive"
    if state.hooks_unconfined is None:
        return [
            Finding(
                "info",
                "security",
                f"SELinux is {mode} and its policy has no {security.HOOK_BOOLEAN} boolean "
                f"(older than the 2024 policy): the hook runs in the libvirt daemon's domain",
                "if the hook fails with 'denied by SELinux', `ausearch -m AVC -ts recent` "
                "shows what was denied",
            )
        ]
    findings = []
    if state.hooks_unconfined:
        findings.append(
            Finding(
                "ok",
                "security",
                f"SELinux: {security.HOOK_BOOLEAN} is on, so libvirt runs the hook unconfined",
            )
        )
    else:
        why = (
            f"SELinux is {mode} and {security.HOOK_BOOLEAN} is off: libvirt runs hooks "
            f"confined (virtqemud_t may read sysfs but not write it, and may not run modprobe)"
        )
        if state.enforcing:
            findings.append(
                Finding(
                    "error",
                    "security",
                    why + ", so the profile's detach and modprobe steps are denied",
                    SETSEBOOL,
                )
            )
        else:
            findings.append(
                Finding(
                    "warning",
                    "security",
                    why
                    + "; permissive mode only logs the denials, enforcing mode will stop the hook",
                    SETSEBOOL,
                )
            )
    if hook:
        label = security.selinux_type(Path(root) / hook.lstrip("/"))
        if label is not None and label != "virt_hook_t":
            findings.append(
                Finding(
                    "warning",
                    "security",
                    f"{hook} is labelled {label}, not virt_hook_t: it was copied into place "
                    f"without relabelling, and {security.HOOK_BOOLEAN} does not apply to it",
                    "restorecon -R /etc/libvirt/hooks",
                )
            )
    return findings


def apparmor_findings(root: Path, hook: str | None) -> list[Finding]:
    if not security.apparmor_enabled(root):
        return []
    profile = security.daemon_profile(root)
    if profile is None:
        return [
            Finding(
                "ok",
                "security",
                "AppArmor is on; libvirt's daemon has no profile in /etc/apparmor.d, so the hook "
                "runs unconfined",
            )
        ]
    name = os.path.basename(profile.files[0])
    needs = [(hook or "/etc/libvirt/hooks/qemu", "x", "the hook")] + list(HOOK_NEEDS)
    missing, rules = [], []
    for path, perm, what in needs:
        allowed, rule = profile.allows(path, perm)
        if allowed and rule is not None:
            rules.append(f"{what}: {rule.path} {rule.perms}")
        else:
            missing.append((path, perm, what, rule))
    if not missing:
        return [
            Finding(
                "ok",
                "security",
                f"AppArmor: /etc/apparmor.d/{name} runs the hook inside its profile and allows "
                f"what it does ({'; '.join(rules)}): no local override is needed",
            )
        ]
    lines = {"x": "rmix", "w": "rw"}
    add = ", ".join(f"`{path} {lines[perm]},`" for path, perm, _, _ in missing)
    denied = "; ".join(
        f"{what} ({path}{': denied by ' + rule.source if rule else ''})"
        for path, perm, what, rule in missing
    )
    return [
        Finding(
            "error",
            "security",
            f"AppArmor: /etc/apparmor.d/{name} does not allow {denied}: libvirt's daemon "
            f"runs the hook under that profile",
            f"add {add} to /etc/apparmor.d/local/{name}, then `apparmor_parser -r "
            f"/etc/apparmor.d/{name}`",
        )
    ]


# --- ROM files ----------------------------------------------------------------------------------


def rom_findings(
    root: Path, is_live: bool, xml: DomainXml, label: Callable[[str], str]
) -> list[Finding]:
    """Each <rom file=...> of the domain: there, readable, and allowed by the policy."""
    findings: list[Finding] = []
    for address, rom in xml.roms:
        findings += one_rom(Path(root), is_live, xml, f"the <rom> of {label(address)}", rom)
    return findings


def copy_fix(rom: str) -> str:
    name = os.path.basename(rom) or "vbios.rom"
    return (
        f"copy it to {security.ROM_DIR} (`sudo install -D -m 644 {rom} {security.ROM_DIR}/{name}`) "
        f"and point the XML there (`virsh edit`: <rom file='{security.ROM_DIR}/{name}'/>)"
    )


def one_rom(root: Path, is_live: bool, xml: DomainXml, what: str, rom: str) -> list[Finding]:
    if not rom.startswith("/"):
        return [
            Finding(
                "error",
                "xml",
                f"{what} is {rom!r}, not an absolute path: QEMU looks for it in its own data "
                f"directory, not where you put it",
                copy_fix(rom),
            )
        ]
    path = root / rom.lstrip("/")
    findings = []
    if not os.path.lexists(path):
        if not is_live:
            findings.append(
                Finding(
                    "info",
                    "xml",
                    f"cannot tell whether {what}, {rom}, exists: the tree {root} has no such file",
                )
            )
        else:
            return [
                Finding(
                    "error",
                    "xml",
                    f"{what}, {rom}, does not exist: QEMU stops the start with 'failed to find "
                    f"romfile'",
                    "dump the card's ROM (or take the one for its exact model) to "
                    f"{security.ROM_DIR}/ and point the XML there, or remove the <rom> element",
                )
            ]
    else:
        problem = _unreadable(path, root)
        if problem:
            findings.append(
                Finding(
                    "warning",
                    "xml",
                    f"{what}, {rom}, {problem}: QEMU, which runs as an unprivileged user, "
                    f"may not be able to read it",
                    f"`chmod 644 {rom}` and let others search its directories, or {copy_fix(rom)}",
                )
            )
    findings += _apparmor_rom(root, xml, what, rom) + _selinux_rom(root, path, what, rom)
    if not findings:
        findings.append(Finding("ok", "xml", f"{what}, {rom}, is there and QEMU may read it"))
    return findings


def _unreadable(path: Path, root: Path) -> str | None:
    """Why QEMU's user (not root, not the file's owner) could not read path, or None."""
    try:
        info = path.stat()
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if not stat.S_ISREG(info.st_mode):
        return "is not a regular file"
    if not info.st_mode & stat.S_IROTH:
        return f"is mode {stat.S_IMODE(info.st_mode):o} (not readable by others)"
    parent = path.parent
    while parent != root and parent != parent.parent:
        try:
            mode = parent.stat().st_mode
        except OSError:
            break
        if not mode & stat.S_IXOTH:
            shown = "/" + os.path.relpath(parent, root)
            return f"lies in {shown}, which others may not enter (mode {stat.S_IMODE(mode):o})"
        parent = parent.parent
    return None


def _apparmor_rom(root: Path, xml: DomainXml, what: str, rom: str) -> list[Finding]:
    if not security.apparmor_enabled(root) or security.security_driver(root) in ("none", "selinux"):
        return []
    profile = security.qemu_profile(root, xml.uuid)
    if not profile.found:
        return []
    allowed, rule = profile.allows(rom, "r")
    if allowed:
        return []
    why = f" ({rule} in {rule.source})" if rule else ""
    return [
        Finding(
            "error",
            "xml",
            f"{what}, {rom}, is outside what AppArmor lets QEMU read{why}: libvirt's "
            f"virt-aa-helper adds no rule for ROM files to the domain's profile, and "
            f"{', '.join(profile.files[:2])} allow{'s' if len(profile.files) == 1 else ''} none "
            f"for this path",
            f'{copy_fix(rom)}; or allow the file: add `"{rom}" r,` to '
            f"/etc/apparmor.d/local/abstractions/libvirt-qemu (read at the next VM start)",
        )
    ]


def _selinux_rom(root: Path, path: Path, what: str, rom: str) -> list[Finding]:
    state = security.SELinux.read(root)
    if state is None or security.security_driver(root) in ("none", "apparmor"):
        return []
    label = security.selinux_type(path)
    predicted = label is None
    label = label or security.default_type(rom)
    if label is None:
        return [
            Finding(
                "info",
                "xml",
                f"cannot tell the SELinux label of {what}, {rom}: QEMU (svirt_t) reads only "
                f"{', '.join(security.SVIRT_READABLE)} files",
                f"`ls -Z {rom}` shows it; {copy_fix(rom)}",
            )
        ]
    if label in security.SVIRT_READABLE:
        return []
    directory = os.path.dirname(rom)
    return [
        Finding(
            "error" if state.enforcing else "warning",
            "xml",
            f"{what}, {rom}, {'gets' if predicted else 'is labelled'} {label}"
            f"{' by default' if predicted else ''}, which SELinux does not let QEMU (svirt_t) "
            f"read",
            f"{copy_fix(rom)}; or label its directory: `semanage fcontext -a -t virt_content_t "
            f"'{directory}(/.*)?' && restorecon -Rv {directory}`",
        )
    ]
