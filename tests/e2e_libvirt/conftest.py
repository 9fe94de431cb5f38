"""Fixtures for tests against a real libvirtd (see daemon.py for what it changes and restores).

`libvirtd` (session): a running Libvirtd. Skipped where the machine cannot run it, failed
instead when PASSTHROUGH_ALL_TIERS=1 (CI must not skip a tier silently).
`hooks_dir` (function): /etc/libvirt/hooks, empty before and after the test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from daemon import HOOKS_DIR, Libvirtd, LibvirtUnavailable, clear_hooks, running_libvirtd

_DAEMON = pytest.StashKey[Libvirtd]()


@pytest.fixture(scope="session")
def libvirtd(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Libvirtd]:
    with ExitStack() as stack:
        try:
            daemon = stack.enter_context(running_libvirtd(tmp_path_factory.mktemp("libvirtd")))
        except LibvirtUnavailable as unavailable:
            outcome = pytest.fail if os.environ.get("PASSTHROUGH_ALL_TIERS") == "1" else pytest.skip
            raise outcome.Exception(str(unavailable), pytrace=False) from None  # the reason alone
        request.config.stash[_DAEMON] = daemon
        yield daemon


@pytest.fixture
def hooks_dir(libvirtd: Libvirtd) -> Iterator[Path]:
    clear_hooks()
    yield HOOKS_DIR
    clear_hooks()


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    """Print what the libvirt tests measured (kept out of assertions: machines differ)."""
    daemon = config.stash.get(_DAEMON, None)
    if daemon is None or not daemon.timings:
        return
    terminalreporter.section("libvirt timings (seconds)")
    for what, seconds in daemon.timings.items():
        terminalreporter.write_line(f"{what}: {', '.join(f'{s:.3f}' for s in seconds)}")
