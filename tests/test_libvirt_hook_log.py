"""Reading libvirtd's hook debug log (the libvirt tiers' evidence of what each hook returned)."""

from libvirt_hook_log import parse_trace

# Two threads interleaved; one hook fails with two lines of stderr; a QEMU command in between.
LOG = """\
2026-11-24 16:56:10.420+0000: 32123: info : libvirt version: 9.0.0, package: 9.0.0-4+deb12u2 (Debian)
2026-11-24 16:56:10.462+0000: 86: debug : virRunScript:279 : Calling hook /etc/libvirt/hooks/qemu id=win10 op=prepare subop=begin extra=-
2026-11-24 16:56:10.463+0000: 86: debug : virCommandRunAsync:2607 : About to run LC_ALL=C /etc/libvirt/hooks/qemu win10 prepare begin -
2026-11-24 16:56:10.464+0000: 90: debug : virRunScript:279 : Calling hook /etc/libvirt/hooks/qemu.d/x id=other vm op=release subop=end extra=destroyed
2026-11-24 16:56:10.467+0000: 86: error : virCommandWait:2725 : internal error: Child process (LC_ALL=C /etc/libvirt/hooks/qemu win10 prepare begin -) unexpected exit status 1: first line
second line

2026-11-24 16:56:10.467+0000: 86: debug : virCommandRun:2453 : Result status 0, stdout: '' stderr: 'first line
second line
'
2026-11-24 16:56:10.470+0000: 86: debug : virCommandRunAsync:2607 : About to run /usr/bin/qemu-system-x86_64 -S
2026-11-24 16:56:10.471+0000: 86: debug : virCommandRun:2453 : Result status 0, stdout: '' stderr: ''
2026-11-24 16:56:10.490+0000: 90: debug : virCommandRun:2453 : Result status 0, stdout: '' stderr: ''
2026-11-24 16:56:10.500+0000: 91: debug : virRunScript:279 : Calling hook /etc/libvirt/hooks/qemu id=win10 op=stopped subop=end extra=-
"""


def test_calls_with_their_status_stderr_and_duration():
    calls = parse_trace(LOG)
    assert [(c.script, c.domain, c.event, c.extra, c.status) for c in calls] == [
        ("/etc/libvirt/hooks/qemu", "win10", "prepare/begin", "-", 1),
        ("/etc/libvirt/hooks/qemu.d/x", "other vm", "release/end", "destroyed", 0),
        ("/etc/libvirt/hooks/qemu", "win10", "stopped/end", "-", None),  # still running
    ]
    assert calls[0].stderr == "first line\nsecond line\n"
    assert round(calls[0].seconds, 3) == 0.005
    assert round(calls[1].seconds, 3) == 0.026
    assert calls[2].seconds is None


def test_a_hook_killed_by_a_signal():
    log = "".join(
        f"2026-11-24 16:56:10.467+0000: 86: {record}\n"
        for record in (
            "debug : virRunScript:279 : Calling hook /h id=d op=prepare subop=begin extra=-",
            "error : virCommandWait:2725 : internal error: Child process (/h d prepare begin -) unexpected fatal signal 9",
            "debug : virCommandRun:2453 : Result status 0, stdout: '' stderr: ''",
        )
    )
    assert [c.status for c in parse_trace(log)] == [-9]
