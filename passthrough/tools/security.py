"""What the host's security policy lets libvirt's hook and QEMU do, read from a root tree:
SELinux state and booleans (sys/fs/selinux), AppArmor profiles (etc/apparmor.d).

Facts behind the checks (libvirt 9.0 on Debian 12, libvirt's src/security/apparmor files,
Fedora's selinux-policy of October 2024):
- AppArmor: libvirtd's profile runs hooks inside itself (`/etc/libvirt/hooks/** rmix`),
  and that profile allows any file access (`/** rwmkl`) and runs /usr/sbin/* PUx: the hook
  needs no local override. QEMU's per-domain profile is TEMPLATE.qemu (the libvirt-qemu
  abstraction) plus what virt-aa-helper adds from the XML, and virt-aa-helper adds nothing
  for a `<rom file=...>` (measured with `virt-aa-helper --dryrun`): a ROM must lie where the
  abstraction allows reading, /usr/share/vgabios/** being the one meant for it.
- SELinux: /etc/libvirt/hooks is labelled virt_hook_t; the virt_hooks_unconfined boolean
  (off by default) lets hooks run unconfined. QEMU (svirt_t) reads virt_content_t
  (/var/lib/libvirt/boot, /var/lib/libvirt/isos) and virt_image_t (/var/lib/libvirt/images)
  files; the rest of /var/lib/libvirt is virt_var_lib_t and home directories user_home_t,
  neither of which it may read.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

HOOK_BOOLEAN = "virt_hooks_unconfined"
APPARMOR_DIR = "etc/apparmor.d"
ROM_DIR = "/usr/share/vgabios"  # read by QEMU under libvirt's AppArmor abstraction and SELinux
# SELinux types QEMU's svirt_t may read, and the types files get by default under these paths
# (selinux-policy's virt.fc; the longest matching prefix wins).
SVIRT_READABLE = ("virt_content_t", "virt_image_t", "usr_t")
DEFAULT_TYPES = (
    ("/var/lib/libvirt/boot/", "virt_content_t"),
    ("/var/lib/libvirt/isos/", "virt_content_t"),
    ("/var/lib/libvirt/images/", "virt_image_t"),
    ("/var/lib/libvirt/", "virt_var_lib_t"),
    ("/home/", "user_home_t"),
    ("/root/", "admin_home_t"),
    ("/usr/", "usr_t"),
    ("/tmp/", "tmp_t"),
)


def _read(path: Path) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read(1 << 20)
    except OSError:
        return None


# --- SELinux -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SELinux:
    enforcing: bool
    hooks_unconfined: bool | None  # None: the policy has no such boolean

    @classmethod
    def read(cls, root: Path) -> SELinux | None:
        """SELinux's state from <root>/sys/fs/selinux, None when it is off or absent."""
        enforce = _read(Path(root) / "sys/fs/selinux/enforce")
        if enforce is None:
            return None
        boolean = _read(Path(root) / "sys/fs/selinux/booleans" / HOOK_BOOLEAN)
        # A boolean file reads "current pending", e.g. "0 0".
        value = None if boolean is None else boolean.split()[:1] == ["1"]
        return cls(enforcing=enforce.strip() == "1", hooks_unconfined=value)


def selinux_type(path: Path) -> str | None:
    """The SELinux type of a file from its security.selinux attribute, if it can be read."""
    try:
        label = os.getxattr(path, "security.selinux").decode(errors="replace").rstrip("\0")
    except (OSError, AttributeError):
        return None
    parts = label.split(":")
    return parts[2] if len(parts) >= 3 else None


def default_type(path: str) -> str | None:
    """The type selinux-policy gives a file at this path by default, for the paths ROM files
    usually lie in; None when the path is none of those."""
    for prefix, label in DEFAULT_TYPES:
        if path.startswith(prefix):
            return label
    return None


# --- AppArmor ------------------------------------------------------------------------------


def apparmor_enabled(root: Path) -> bool:
    return (_read(Path(root) / "sys/module/apparmor/parameters/enabled") or "").strip() == "Y"


@dataclass(frozen=True)
class Rule:
    path: str  # the glob, as written
    perms: str
    deny: bool
    source: str  # "file:line"
    pattern: re.Pattern

    def __str__(self) -> str:
        return f"{'deny ' if self.deny else ''}{self.path} {self.perms}"


_INCLUDE = re.compile(r"^\s*#?include(\s+if\s+exists)?\s+[<\"]([^>\"]+)[>\"]")
_VARIABLE = re.compile(r"^\s*(@\{\w+\})\s*\+?=\s*(.+)$")
_RULE = re.compile(
    r"^\s*(?:audit\s+)?(deny\s+)?(?:owner\s+|other\s+)?(?:file\s+)?"
    r"(\"[^\"]+\"|/\S*|@\{\w+\}\S*)\s+([rwaxmlkdiuUpPcCbB]+)(?:\s+->\s*\S+)?\s*,"
)


class AppArmorProfile:
    """The file rules of a profile and what it includes (nested profiles left out), enough
    to answer `allows(path, perm)` as apparmor_parser would for plain globs."""

    def __init__(self, root: Path, name: str):
        self.root = Path(root)
        self.base = self.root / APPARMOR_DIR
        self.rules: list[Rule] = []
        self.variables: dict[str, list[str]] = {}
        self.files: list[str] = []
        self._pending: list[tuple[str, str, bool, str]] = []
        self._load(self.base / name, set())
        for path, perms, deny, source in self._pending:
            for expanded in self._expand(path):
                self.rules.append(Rule(path, perms, deny, source, _glob_regex(expanded)))

    @property
    def found(self) -> bool:
        return bool(self.files)

    def _load(self, path: Path, seen: set[Path]) -> None:
        if path in seen:
            return
        seen.add(path)
        text = _read(path) if path.is_file() else None
        if text is None:
            if path.is_dir():  # `include <abstractions/libvirt-qemu.d>`: every file in it
                for child in sorted(path.iterdir()):
                    self._load(child, seen)
            return
        self.files.append("/" + os.path.relpath(path, self.root))
        depth = 0  # profile blocks: rules of nested (child) profiles are not QEMU's or the hook's
        for number, line in enumerate(text.splitlines(), 1):
            include = _INCLUDE.match(line)
            if include:
                if depth <= 1:
                    self._load(self.base / include.group(2), seen)
                continue
            line = line.split("#", 1)[0].strip()
            variable = _VARIABLE.match(line)
            if variable:
                values = variable.group(2).replace('"', "").split()
                self.variables.setdefault(variable.group(1), []).extend(values)
                continue
            rule = _RULE.match(line)
            if rule and depth <= 1:
                path_glob = rule.group(2).strip('"')
                where = f"/{os.path.relpath(path, self.root)}:{number}"
                self._pending.append((path_glob, rule.group(3), bool(rule.group(1)), where))
            if line.endswith("{"):
                depth += 1
            elif line.startswith("}"):
                depth = max(depth - 1, 0)

    def _expand(self, glob: str, limit: int = 3) -> list[str]:
        match = re.search(r"@\{\w+\}", glob)
        if not match or limit == 0:
            return [glob]
        values = self.variables.get(match.group(0)) or ["*"]
        out: list[str] = []
        for value in values:
            out += self._expand(glob[: match.start()] + value + glob[match.end() :], limit - 1)
        return out

    def allows(self, path: str, perm: str) -> tuple[bool, Rule | None]:
        """(allowed, the rule that decides) for one permission letter on a path."""
        allowing = None
        for rule in self.rules:
            if not rule.pattern.fullmatch(path) or not _grants(rule.perms, perm):
                continue
            if rule.deny:
                return False, rule
            allowing = allowing or rule
        return allowing is not None, allowing


def _grants(perms: str, perm: str) -> bool:
    if perm == "x":
        return any(c in perms for c in "xiuUpPcC")
    if perm == "w":
        return "w" in perms or "a" in perms
    return perm in perms


def _glob_regex(glob: str) -> re.Pattern:
    """An AppArmor path glob as a regex: ** crosses /, * and ? do not, {a,b} alternates."""
    out, i, depth = [], 0, 0
    while i < len(glob):
        c = glob[i]
        if glob.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "{":
            out.append("(?:")
            depth += 1
        elif c == "}" and depth:
            out.append(")")
            depth -= 1
        elif c == "," and depth:
            out.append("|")
        elif c == "[":
            end = glob.find("]", i)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = glob[i + 1 : end].replace("\\", "\\\\")
                out.append("[" + ("^" + body[1:] if body.startswith("^") else body) + "]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    try:
        return re.compile("".join(out))
    except re.error:
        return re.compile(re.escape(glob))


def qemu_profile(root: Path, uuid: str | None) -> AppArmorProfile:
    """The AppArmor profile QEMU runs under for a domain: its own libvirt-<uuid> when one
    exists, else the TEMPLATE.qemu a new one is made from (both include the libvirt-qemu
    abstraction), else the abstraction itself."""
    for name in (f"libvirt/libvirt-{uuid}" if uuid else "", "libvirt/TEMPLATE.qemu"):
        if name and (Path(root) / APPARMOR_DIR / name).is_file():
            return AppArmorProfile(root, name)
    return AppArmorProfile(root, "abstractions/libvirt-qemu")


def daemon_profile(root: Path) -> AppArmorProfile | None:
    """The AppArmor profile of the libvirt daemon that runs qemu hooks (virtqemud on modular
    installs, libvirtd otherwise), None when neither is installed."""
    for name in ("usr.sbin.virtqemud", "usr.sbin.libvirtd"):
        if (Path(root) / APPARMOR_DIR / name).is_file():
            return AppArmorProfile(root, name)
    return None


def security_driver(root: Path) -> str | None:
    """`security_driver` from /etc/libvirt/qemu.conf ("none" turns confinement off)."""
    for line in (_read(Path(root) / "etc/libvirt/qemu.conf") or "").splitlines():
        match = re.match(r'\s*security_driver\s*=\s*"?\[?\s*"?([\w-]+)', line)
        if match:
            return match.group(1)
    return None
