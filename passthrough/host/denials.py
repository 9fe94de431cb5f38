"""A write or modprobe the kernel refused with EACCES/EPERM: was it SELinux or AppArmor?

Both log their denials to the audit log (/var/log/audit/audit.log when auditd runs; the
kernel log otherwise), under the host's root. SELinux's record:
    type=AVC msg=audit(1719999999.123:456): avc:  denied  { write } for  pid=1234
    comm="qemu" name="drivers_probe" dev="sysfs" ino=1 scontext=system_u:system_r:
    virtqemud_t:s0 tcontext=system_u:object_r:sysfs_t:s0 tclass=file permissive=0
AppArmor's:
    type=AVC msg=audit(1719999999.123:457): apparmor="DENIED" operation="open"
    profile="libvirtd" name="/sys/bus/pci/drivers_probe" pid=1234 comm="qemu"
    requested_mask="w" denied_mask="w" fsuid=0 ouid=0
The pid is the process's (its thread group), so the hook finds its own denials by its pid;
a command it ran (modprobe) by the command's name, among the last minute's records.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

LOGS = ("var/log/audit/audit.log", "var/log/kern.log")
TAIL = 512 * 1024  # the newest records are at the end
WINDOW = 60.0  # seconds: older records are not this failure's

_TIME = re.compile(r"audit\((\d+)(?:\.\d+)?:\d+\)")
_FIELD = re.compile(r'(\w+)=("[^"]*"|\S+)')
_SELINUX = re.compile(r"avc:\s+denied\s+\{\s*([^}]*?)\s*\}")


def _tail(path: Path) -> list[str]:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - TAIL))
            return handle.read().decode(errors="replace").splitlines()
    except OSError:
        return []


def _fields(line: str) -> dict[str, str]:
    return {key: value.strip('"') for key, value in _FIELD.findall(line)}


def find_denial(
    root: str | os.PathLike,
    *,
    pid: int | None = None,
    comm: str | None = None,
    now: float | None = None,
) -> str | None:
    """The newest SELinux or AppArmor denial of process `pid` (or of a process named `comm`)
    in the last minute, in words: 'denied by SELinux: ...'; None when there is none."""
    now = time.time() if now is None else now
    for rel in LOGS:
        for line in reversed(_tail(Path(root) / rel)):
            selinux = _SELINUX.search(line)
            if not selinux and 'apparmor="DENIED"' not in line:
                continue
            stamp = _TIME.search(line)
            if stamp and now - int(stamp.group(1)) > WINDOW:
                break  # older still above
            fields = _fields(line)
            if not (
                (pid is not None and fields.get("pid") == str(pid))
                or (comm is not None and fields.get("comm") == comm[:15])
            ):
                continue
            return _describe(fields, selinux.group(1) if selinux else None, rel)
    return None


def _describe(fields: dict[str, str], selinux_perms: str | None, log: str) -> str:
    target = fields.get("name") or fields.get("path") or "?"
    if selinux_perms is not None:
        return (
            f"denied by SELinux: {{ {selinux_perms} }} on {target} ({fields.get('tclass', '?')} "
            f"{fields.get('tcontext', '?')}) for {fields.get('comm', '?')} running as "
            f"{fields.get('scontext', '?')} (/{log})"
        )
    return (
        f"denied by AppArmor: {fields.get('operation', '?')} {fields.get('denied_mask', '?')} on "
        f"{target} under profile {fields.get('profile', '?')} (/{log})"
    )


def fix_for(denial: str) -> str:
    if denial.startswith("denied by SELinux"):
        return (
            "let libvirt run hooks unconfined: setsebool -P virt_hooks_unconfined on "
            "(`passthrough-hook check DOMAIN` reports it)"
        )
    return (
        "allow it in the libvirt daemon's local AppArmor override (/etc/apparmor.d/local/), "
        "then apparmor_parser -r its profile (`passthrough-hook check DOMAIN` names both)"
    )
