"""Guest tier: tests that boot the distro kernel under QEMU (see harness.py).

Select or skip the tier with `-m guest` / `-m "not guest"`.  When a host tool
the tier needs is missing the tests are skipped, unless PASSTHROUGH_ALL_TIERS=1
(CI), where a missing tool fails them.
"""

from __future__ import annotations

import os

import pytest
from harness import GuestToolMissing, run_in_guest


@pytest.fixture(scope="session")
def guest():
    """run_in_guest, with GuestToolMissing turned into skip (or fail in CI)."""

    def run(script: str, **kwargs):
        try:
            return run_in_guest(script, **kwargs)
        except GuestToolMissing as exc:
            if os.environ.get("PASSTHROUGH_ALL_TIERS") == "1":
                pytest.fail(f"guest tier required but unavailable: {exc}", pytrace=False)
            pytest.skip(f"guest tier unavailable: {exc}")

    return run


_REPORT = pytest.StashKey[dict]()


@pytest.fixture(scope="session")
def guest_report(request: pytest.FixtureRequest):
    """report(section, line): a line for the terminal summary, for figures the guest
    measured (kept out of assertions: machines differ)."""
    sections = request.config.stash.setdefault(_REPORT, {})

    def report(section: str, line: str) -> None:
        sections.setdefault(section, []).append(line)

    return report


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    for section, lines in config.stash.get(_REPORT, {}).items():
        terminalreporter.section(section)
        for line in lines:
            terminalreporter.write_line(line)
