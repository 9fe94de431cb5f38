"""The installed hook under a real libvirtd: `install.sh` as a user runs it, then `virsh`.

install.sh installs for real (/usr/local, /etc/libvirt/hooks, /var/lib/passthrough-hook);
the `passthrough` fixture runs `install.sh --uninstall` after each test, even a failed one,
and checks nothing of the install is left. /etc/libvirt itself is restored by the session
fixture (daemon.py).

This machine's only PCI devices are its disk and network: no profile here names one of
them. Profiles name an absent address, or have steps that change nothing. What libvirt got
back from each hook call is read from libvirtd's own debug log (hook_trace.py); what the
hook did, from its log file.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon import DAEMON_ENV, HOOKS_DIR, Libvirtd, TreeSnapshot, release_extra
from hook_trace import HookTrace, trace_hooks
from timing import time_cycles

pytestmark = pytest.mark.libvirt

REPO = Path(__file__).resolve().parents[2]
INSTALL_SH = REPO / "install.sh"
# What install.sh puts outside /etc/libvirt.
INSTALLED_OUTSIDE_ETC = (
    Path("/usr/local/lib/passthrough-hook"),
    Path("/usr/local/bin/passthrough-hook"),
    Path("/var/lib/passthrough-hook"),
    Path("/etc/logrotate.d/passthrough-hook"),
)
PROFILES = HOOKS_DIR / "passthrough"
HOOK_LOG = Path("/var/log/libvirt/passthrough-hook.log")
STATE_DIR = Path("/run/passthrough-hook")
MAIN_HOOK = str(HOOKS_DIR / "qemu")
QEMU_D_HOOK = str(HOOKS_DIR / "qemu.d" / "passthrough-hook")

START_EVENTS = ["prepare/begin", "start/begin", "started/begin"]
STOP_EVENTS = ["stopped/end", "release/end"]
# A step that fails without touching any device: this machine's PCI devices are its disk
# and network, so the hook never acts on them here. A detach that fails on real devices,
# and its rollback, runs in the QEMU guest (tests/guest/test_libvirt_in_guest.py).
UNAPPLIABLE_PROFILE = """\
devices: {}
prepare/begin:
  - command: ["false"]
"""

# Steps that run and change nothing: nothing is journaled, so there is nothing to undo.
NO_OP_PROFILE = """\
devices: {}
prepare/begin:
  - undo: release/end
release/end:
  - undo: prepare/begin
"""

# Line 5 is indented one column too far for the list it belongs to.
INVALID_YAML_PROFILE = """\
devices:
  gpu: "0000:0a:00.0"
prepare/begin:
  - detach: [gpu]
   - resize_bar: {device: gpu, bar: 2, size: 8MiB}
"""
INVALID_YAML_MESSAGE = (
    f"{PROFILES}/win10.yaml:5:4: invalid YAML: did not find expected '-' indicator"
)

# A hook that is not ours, as a user may already have one: logs its calls, reads the XML.
FOREIGN_HOOK = """#!/bin/bash
# my own qemu hook
cat >/dev/null
printf '%s\\n' "$*" >> {log}
"""


class Installation:
    """passthrough-hook installed with install.sh while a test runs (fixture `passthrough`)."""

    def __init__(self, libvirtd: Libvirtd) -> None:
        self.libvirtd = libvirtd
        self._log_offset = HOOK_LOG.stat().st_size if HOOK_LOG.exists() else 0
        self._profiles: list[Path] = []

    def install(self) -> str:
        """Run `install.sh` (no option: as a user would) and return what it printed."""
        result = _install_sh()
        assert "sent SIGHUP to libvirtd so it notices the hook" in result.stdout, result.stdout
        # Wait for that reload to end (a second SIGHUP while it runs is ignored, harmlessly).
        self.libvirtd.reload()
        return result.stdout

    def uninstall(self) -> str:
        result = _install_sh("--uninstall")
        self.libvirtd.reload()
        return result.stdout

    def write_profile(self, domain: str, text: str) -> Path:
        path = PROFILES / f"{domain}.yaml"
        path.write_text(text)
        path.chmod(0o644)  # root's, not writable by others: the hook refuses anything else
        self._profiles.append(path)
        return path

    def remove_profiles(self) -> None:
        for path in self._profiles:
            path.unlink(missing_ok=True)
        self._profiles.clear()

    def log(self) -> str:
        """What the hook wrote to its log file since the test started."""
        if not HOOK_LOG.exists():
            return ""
        with HOOK_LOG.open("rb") as log:
            log.seek(self._log_offset)
            return log.read().decode(errors="replace")


def _install_sh(*args: str) -> subprocess.CompletedProcess[str]:
    # sudo's environment: a plain PATH, whatever python the test runner uses.
    result = subprocess.run(
        [str(INSTALL_SH), *args],
        capture_output=True,
        text=True,
        env=DAEMON_ENV,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, (
        f"install.sh {' '.join(args)} failed:\n{result.stdout}{result.stderr}"
    )
    return result


@pytest.fixture
def passthrough(libvirtd: Libvirtd, hooks_dir: Path) -> Iterator[Installation]:
    """An Installation to install with; afterwards `install.sh --uninstall` has removed it all."""
    leftover = [str(path) for path in INSTALLED_OUTSIDE_ETC if path.exists()]
    if leftover:
        outcome = pytest.fail if os.environ.get("PASSTHROUGH_ALL_TIERS") == "1" else pytest.skip
        outcome(
            f"passthrough-hook is already installed on this machine ({', '.join(leftover)}); these "
            "tests install and uninstall it themselves: run `install.sh --uninstall` first",
            pytrace=False,
        )
    state_existed, log_existed = STATE_DIR.exists(), HOOK_LOG.exists()
    installation = Installation(libvirtd)
    try:
        yield installation
    finally:
        installation.remove_profiles()  # a user's profiles survive uninstall; the tests' must not
        try:
            installation.uninstall()  # says "not installed" if the test uninstalled already
        finally:
            left = [path for path in INSTALLED_OUTSIDE_ETC if path.exists()]
            for path in left:  # never leave the machine changed, even when uninstall is broken
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
            if not state_existed:
                shutil.rmtree(STATE_DIR, ignore_errors=True)
            if not log_existed:
                HOOK_LOG.unlink(missing_ok=True)
        assert not left, f"install.sh --uninstall left {', '.join(map(str, left))}"


@pytest.fixture
def trace(libvirtd: Libvirtd, tmp_path: Path) -> Iterator[HookTrace]:
    with trace_hooks(libvirtd, tmp_path / "libvirtd-hook-calls.log") as hook_trace:
        yield hook_trace


def win10(libvirtd: Libvirtd) -> str:
    """The test domain `win10`, defined once (defining it again would clash on its UUID)."""
    if "win10" not in libvirtd.virsh("list", "--all", "--name").stdout.split():
        libvirtd.define_domain("win10")
    return "win10"


def test_a_domain_without_profile_runs_normally_and_the_hook_costs_it_little(
    libvirtd: Libvirtd, passthrough: Installation, trace: HookTrace
) -> None:
    cycles = 5
    domain = libvirtd.define_domain("plain-vm")
    libvirtd.reload()  # forget hooks earlier tests installed: measure with none at all
    time_cycles(libvirtd, domain, 1)  # warm-up: QEMU's first start pays for disk caches
    without_hook = time_cycles(libvirtd, domain, cycles)
    passthrough.install()
    with_hook = time_cycles(libvirtd, domain, cycles)

    # Every event of every cycle ran the installed hook, and each call returned 0...
    assert (
        trace.summary(MAIN_HOOK, domain)
        == [(event, 0) for event in START_EVENTS + STOP_EVENTS] * cycles
    ), trace
    # ...without doing anything: nothing logged, nothing journaled.
    assert domain not in passthrough.log()
    assert not (STATE_DIR / f"{domain}.json").exists()

    ratio = statistics.median(c.start for c in with_hook) / statistics.median(
        c.start for c in without_hook
    )
    libvirtd.timings["virsh start, before install.sh"] = [c.start for c in without_hook]
    libvirtd.timings["virsh start, after install.sh (domain without profile)"] = [
        c.start for c in with_hook
    ]
    libvirtd.timings["virsh start after/before install.sh (ratio of medians)"] = [ratio]
    libvirtd.timings["hook call as libvirtd times it, domain without profile (median)"] = [
        statistics.median(call.seconds for call in trace.calls(MAIN_HOOK, domain))
    ]
    print(f"virsh start with the installed hook / without, medians of {cycles}: {ratio:.2f}")


def test_a_profile_that_cannot_be_applied_fails_the_start_with_the_hooks_message(
    libvirtd: Libvirtd, passthrough: Installation, trace: HookTrace
) -> None:
    passthrough.install()
    passthrough.write_profile("win10", UNAPPLIABLE_PROFILE)
    domain = win10(libvirtd)

    result = libvirtd.virsh("start", domain, check=False)

    assert result.returncode == 1
    assert "error: Hook script execution failed" in result.stderr
    assert (
        "passthrough-hook: win10 prepare/begin failed at step 1. run false (not undone)"
        in result.stderr
    )
    assert "`false` exited with status 1" in result.stderr
    assert libvirtd.virsh("domstate", "--reason", domain).stdout.strip() == "shut off (failed)"
    # libvirt still sends stopped/end and release/end; both succeed, with nothing to undo.
    assert trace.summary(MAIN_HOOK, domain) == [
        ("prepare/begin", 1),
        ("stopped/end", 0),
        ("release/end", 0),
    ], trace
    errors = [line for line in passthrough.log().splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "win10 prepare/begin: 1. run false" in errors[0], passthrough.log()
    assert not (STATE_DIR / "win10.json").exists()


def test_an_invalid_yaml_profile_is_reported_through_virsh_with_its_position(
    libvirtd: Libvirtd, passthrough: Installation, trace: HookTrace
) -> None:
    passthrough.install()
    passthrough.write_profile("win10", INVALID_YAML_PROFILE)
    domain = win10(libvirtd)

    result = libvirtd.virsh("start", domain, check=False)

    assert result.returncode == 1
    assert f"unexpected exit status 2: {INVALID_YAML_MESSAGE}" in result.stderr
    assert "Traceback" not in result.stderr
    assert libvirtd.virsh("domstate", domain).stdout.strip() == "shut off"
    assert trace.summary(MAIN_HOOK, domain)[0] == ("prepare/begin", 2), trace


def test_an_existing_hook_is_kept_both_run_and_uninstall_restores_the_hooks_dir(
    libvirtd: Libvirtd, passthrough: Installation, trace: HookTrace, tmp_path: Path
) -> None:
    foreign_log = tmp_path / "my-hook.log"
    foreign = HOOKS_DIR / "qemu"
    foreign.write_text(FOREIGN_HOOK.format(log=foreign_log))
    foreign.chmod(0o755)
    hooks_before = _contents(TreeSnapshot(HOOKS_DIR))

    output = passthrough.install()
    assert f"kept your existing {MAIN_HOOK}; installed the hook as {QEMU_D_HOOK}" in output
    assert foreign.read_text() == FOREIGN_HOOK.format(log=foreign_log)
    passthrough.write_profile("win10", NO_OP_PROFILE)
    domain = win10(libvirtd)
    libvirtd.virsh("start", domain)
    libvirtd.virsh("destroy", domain)

    # Both ran, each call of each returned 0, the foreign one first (libvirt's order).
    release = f"release end {release_extra(libvirtd.daemon_version(), 'destroyed')}"
    assert foreign_log.read_text().splitlines() == [
        f"{domain} {event}"
        for event in (
            "prepare begin -",
            "start begin -",
            "started begin -",
            "stopped end -",
            release,
        )
    ]
    expected = [(event, 0) for event in START_EVENTS + STOP_EVENTS]
    assert trace.summary(MAIN_HOOK, domain) == expected, trace
    assert trace.summary(QEMU_D_HOOK, domain) == expected, trace
    assert [call.script for call in trace.calls(domain=domain)][:2] == [MAIN_HOOK, QEMU_D_HOOK]
    libvirtd.timings[
        "hook call as libvirtd times it, profile with no-op steps: ours, a bash hook (medians)"
    ] = [
        statistics.median(call.seconds for call in trace.calls(script, domain))
        for script in (QEMU_D_HOOK, MAIN_HOOK)
    ]
    log = passthrough.log()
    assert "win10 prepare/begin: 1. undo what release/end changed, in reverse order: done" in log
    assert "win10 release/end: 1. undo what prepare/begin changed, in reverse order: done" in log

    passthrough.remove_profiles()
    passthrough.uninstall()
    assert _contents(TreeSnapshot(HOOKS_DIR)) == hooks_before


def test_a_daemon_restart_leaves_a_running_domain_alone(
    libvirtd: Libvirtd, passthrough: Installation, trace: HookTrace
) -> None:
    passthrough.install()
    passthrough.write_profile("win10", NO_OP_PROFILE)
    domain = win10(libvirtd)
    libvirtd.virsh("start", domain)

    libvirtd.restart()

    assert libvirtd.virsh("domstate", domain).stdout.strip() == "running"
    assert trace.summary(MAIN_HOOK, domain) == [
        (event, 0) for event in START_EVENTS + ["reconnect/begin"]
    ], trace
    assert " ERROR " not in passthrough.log()
    libvirtd.virsh("destroy", domain)
    assert trace.summary(MAIN_HOOK, domain)[-2:] == [(event, 0) for event in STOP_EVENTS], trace


def _contents(snapshot: TreeSnapshot) -> dict[Path, tuple]:
    """What a user sees of a tree: entries, kinds, modes, owners, contents (not mtimes)."""
    return {
        path: (entry.kind, entry.mode, entry.uid, entry.gid, entry.data)
        for path, entry in snapshot.entries.items()
    }
