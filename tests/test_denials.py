"""A write the kernel refuses with EACCES/EPERM although the hook runs as root: when SELinux
or AppArmor logged the denial, the failure message says so and what to turn on."""

from __future__ import annotations

import os
import time

import pytest
from runs import CONFIG, hook
from test_seed_cycle import GPU

from passthrough.errors import HostError
from passthrough.host.commands import CommandError
from passthrough.host.denials import find_denial
from passthrough.host.modules import Modules

AUDIT = "/host/var/log/audit/audit.log"


def avc(pid: int, name: str, seconds_ago: float = 1.0) -> str:
    """An AVC record as the kernel writes it (two spaces around `denied`)."""
    stamp = time.time() - seconds_ago
    return (
        f"type=AVC msg=audit({stamp:.3f}:812): avc:  denied  {{ write }} for  pid={pid} "
        f'comm="qemu" name="{name}" dev="sysfs" ino=31337 '
        "scontext=system_u:system_r:virtqemud_t:s0 tcontext=system_u:object_r:sysfs_t:s0 "
        "tclass=file permissive=0\n"
    )


def syscall(pid: int) -> str:
    return (
        f"type=SYSCALL msg=audit({time.time():.3f}:812): arch=c000003e syscall=1 success=no "
        f'exit=-13 pid={pid} comm="qemu" exe="/usr/bin/python3.12"\n'
    )


def write_audit(fs, *lines: str) -> None:
    fs.create_file(AUDIT, contents="".join(lines))


def test_a_selinux_denial_of_the_resize_is_named_with_the_boolean(kernel, fs):
    kernel.fail(f"bus/pci/devices/{GPU}/resource2_resize", "EACCES")
    write_audit(fs, avc(1, "unbind"), avc(os.getpid(), "resource2_resize"), syscall(os.getpid()))
    start = kernel.snapshot()
    code, _, err = hook(kernel, "prepare", "begin", config=CONFIG)
    assert code == 1
    assert (
        f"  0000:03:00.0: writing '3' to /sys/bus/pci/devices/{GPU}/resource2_resize failed: "
        "Permission denied, denied by SELinux: { write } on resource2_resize (file "
        "system_u:object_r:sysfs_t:s0) for qemu running as system_u:system_r:virtqemud_t:s0 "
        "(/var/log/audit/audit.log) (let libvirt run hooks unconfined: setsebool -P "
        "virt_hooks_unconfined on (`passthrough-hook check DOMAIN` reports it))\n"
    ) in err
    assert kernel.snapshot() == start  # rolled back as any failure


def test_a_denial_of_another_process_or_an_old_one_is_not_blamed(kernel, fs):
    kernel.fail(f"bus/pci/devices/{GPU}/resource2_resize", "EACCES")
    write_audit(fs, avc(os.getpid() + 1, "resource2_resize"), avc(os.getpid(), "x", 600))
    code, _, err = hook(kernel, "prepare", "begin", config=CONFIG)
    assert code == 1
    assert "resource2_resize failed: Permission denied (not permitted; run as root)" in err
    assert "SELinux" not in err


def test_an_apparmor_denial_is_named_too(tmp_path):
    log = tmp_path / "var/log/kern.log"
    log.parent.mkdir(parents=True)
    log.write_text(
        f"Jan  1 00:00:00 host kernel: audit: type=1400 audit({int(time.time())}.120:77): "
        f'apparmor="DENIED" operation="open" profile="libvirtd" name="/sys/bus/pci/drivers_probe" '
        f'pid={os.getpid()} comm="qemu" requested_mask="w" denied_mask="w" fsuid=0 ouid=0\n'
    )
    assert find_denial(tmp_path, pid=os.getpid()) == (
        "denied by AppArmor: open w on /sys/bus/pci/drivers_probe under profile libvirtd "
        "(/var/log/kern.log)"
    )


def test_modprobe_refused_by_selinux_says_so(tmp_path):
    log = tmp_path / "var/log/audit/audit.log"
    log.parent.mkdir(parents=True)
    log.write_text(
        f"type=AVC msg=audit({time.time():.3f}:90): avc:  denied  {{ module_load }} for  pid=4242 "
        'comm="modprobe" path="/usr/lib/modules/6.8.5-301.fc40.x86_64/kernel/drivers/vfio/'
        'pci/vfio-pci.ko.xz" dev="dm-0" ino=1 scontext=system_u:system_r:virtqemud_t:s0 '
        "tcontext=system_u:object_r:modules_object_t:s0 tclass=system permissive=0\n"
    )
    error = CommandError(
        ["modprobe", "vfio_pci"],
        1,
        "modprobe: ERROR: could not insert 'vfio_pci': Operation not permitted\n",
    )
    modules = Modules(tmp_path, host=None)
    with pytest.raises(HostError) as raised:
        modules._explain_denial(error)
    text = str(raised.value)
    assert text.startswith(
        "`modprobe vfio_pci` exited with status 1: modprobe: ERROR: could not insert 'vfio_pci': "
        "Operation not permitted, denied by SELinux: { module_load } on /usr/lib/modules/"
    )
    assert text.endswith(
        "(let libvirt run hooks unconfined: setsebool -P virt_hooks_unconfined on "
        "(`passthrough-hook check DOMAIN` reports it))"
    )
    log.write_text("")  # without a record modprobe's own error stands
    assert modules._explain_denial(error) is None
