"""The test libvirtd calls hooks the way notes/libvirt-hooks.md says a real one does.

Every assertion on hook calls reads the hook's own log: a hook the daemon skipped (e.g. one it
has not noticed yet) leaves virsh's exit code unchanged.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from daemon import Libvirtd, release_extra
from timing import time_cycles

pytestmark = pytest.mark.libvirt

# Appends its arguments, one call per line, and exits 0.
LOGGING_HOOK = """#!/bin/bash
printf '%s\\n' "$*" >> {log}
"""

# Logs like LOGGING_HOOK, then refuses prepare/begin with two lines on stderr and one on stdout.
REFUSING_HOOK = """#!/bin/bash
printf '%s\\n' "$*" >> {log}
if [ "$2 $3" = "prepare begin" ]; then
    echo "hook stdout line"
    printf 'first stderr line\\nsecond stderr line\\n' >&2
    exit 1
fi
"""


def install(libvirtd: Libvirtd, hook: str, log: Path) -> None:
    libvirtd.install_hook(hook.format(log=shlex.quote(str(log))))


def hook_calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_start_and_destroy_call_the_hook_in_order(
    libvirtd: Libvirtd, hooks_dir: Path, tmp_path: Path
) -> None:
    log = tmp_path / "hook.log"
    install(libvirtd, LOGGING_HOOK, log)
    domain = libvirtd.define_domain("pt-smoke-order")

    libvirtd.virsh("start", domain)
    libvirtd.virsh("destroy", domain)

    assert hook_calls(log) == [
        f"{domain} prepare begin -",
        f"{domain} start begin -",
        f"{domain} started begin -",
        f"{domain} stopped end -",
        f"{domain} release end {release_extra(libvirtd.daemon_version(), 'destroyed')}",
    ]


def test_failing_prepare_aborts_start_and_still_releases(
    libvirtd: Libvirtd, hooks_dir: Path, tmp_path: Path
) -> None:
    log = tmp_path / "hook.log"
    install(libvirtd, REFUSING_HOOK, log)
    domain = libvirtd.define_domain("pt-smoke-refused")

    result = libvirtd.virsh("start", domain, check=False)

    assert result.returncode == 1
    assert "Hook script execution failed" in result.stderr
    assert "first stderr line\nsecond stderr line" in result.stderr  # multi-line stderr kept
    assert "hook stdout line" not in result.stderr + result.stdout  # stdout dropped
    assert libvirtd.virsh("domstate", "--reason", domain).stdout.strip() == "shut off (failed)"
    assert hook_calls(log) == [
        f"{domain} prepare begin -",
        f"{domain} stopped end -",
        f"{domain} release end {release_extra(libvirtd.daemon_version(), 'failed')}",
    ]


def test_daemon_restart_reconnects_a_running_guest(
    libvirtd: Libvirtd, hooks_dir: Path, tmp_path: Path
) -> None:
    log = tmp_path / "hook.log"
    install(libvirtd, LOGGING_HOOK, log)
    domain = libvirtd.define_domain("pt-smoke-reconnect")
    libvirtd.virsh("start", domain)

    libvirtd.restart()

    assert hook_calls(log)[-1] == f"{domain} reconnect begin -"
    assert libvirtd.virsh("domstate", domain).stdout.strip() == "running"
    libvirtd.virsh("destroy", domain)


def test_virsh_start_cost_with_and_without_hook(
    libvirtd: Libvirtd, hooks_dir: Path, tmp_path: Path
) -> None:
    cycles = 3
    domain = libvirtd.define_domain("pt-smoke-timing")
    libvirtd.reload()  # forget hooks earlier tests installed: measure with none at all
    without_hook = time_cycles(libvirtd, domain, cycles)
    log = tmp_path / "hook.log"
    install(libvirtd, LOGGING_HOOK, log)
    with_hook = time_cycles(libvirtd, domain, cycles)

    assert len(hook_calls(log)) == 5 * cycles  # the hook really ran on every cycle measured
    for label, measured in (("no hook", without_hook), ("logging hook", with_hook)):
        libvirtd.timings[f"virsh start, {label}"] = [cycle.start for cycle in measured]
        libvirtd.timings[f"virsh destroy, {label}"] = [cycle.destroy for cycle in measured]
