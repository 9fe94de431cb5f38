"""Test-wide guards and the fake kernel fixture.

This machine's real PCI devices are its disk and network: one wrong unbind ends the
session. So every unit test runs with the real /sys, modprobe and libvirt unreachable;
tests reach a kernel only through the fake one (or the QEMU guest tier).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
from pathlib import Path

import pytest
import yaml  # noqa: F401  loaded once here: pyfakefs unloads modules first imported inside a test,

# and PyYAML's C parser keeps building nodes of the first import's classes.
from hypothesis import HealthCheck, settings
from pyfakefs.fake_filesystem_unittest import Patcher

import passthrough
from passthrough.actions import REGISTRY
from passthrough.errors import UnsafeOperation
from passthrough.host import detached
from passthrough.host import sysfs as sysfs_module

# No test may depend on a wall-clock margin below a second (the suite runs on loaded
# machines, and once more under stress-ng): hypothesis's 200 ms deadline per example and
# its too-slow health check are such margins, so neither applies here. What each property
# asserts is unchanged.
settings.register_profile(
    "passthrough", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("passthrough")

# The registry imports an action's module on first use; a module first imported inside a
# pyfakefs test is unloaded after it, leaving the registry and other modules holding its old
# classes (and its os bound to a finished fake filesystem). So every test process imports
# them all here, as the hook's process would over its life. Lazy loading itself is tested
# in a fresh interpreter (tests/test_actions_registry.py).
ALL_ACTIONS = list(REGISTRY.values())

# The detached writer's plumbing is processes and pipes, never a file of the host tree:
# pyfakefs leaves it real (the fake kernel's stuck writes fork a real helper through it).
Patcher.SKIPMODULES.add(detached)

REPO = Path(__file__).resolve().parent.parent

# Every module of the program is imported here, before any test. pyfakefs unloads a module
# first imported inside a test when the test ends, but `from passthrough import trust` in a
# later test still finds the old module object on the package, with its `os` bound to the
# finished fake filesystem (a CI run failed so, in whichever xdist worker first imported
# trust inside a fake-filesystem test). coverage.py too decides once per file whether to
# trace it, when its code first runs: on pyfakefs's filesystem the file is not found.
for _module in pkgutil.walk_packages(passthrough.__path__, "passthrough."):
    if not _module.name.endswith(".__main__"):  # that one runs the program
        importlib.import_module(_module.name)


@pytest.fixture(autouse=True)
def _no_real_host(monkeypatch, request):
    if request.node.get_closest_marker("guest") or request.node.get_closest_marker("libvirt"):
        return  # those tiers run real things on purpose, inside a guest or a test daemon

    original_init = sysfs_module.Sysfs.__init__

    def guarded_init(self, root, host):
        # os.path, not pathlib: pyfakefs swaps pathlib's internals while a test runs.
        if os.path.realpath(str(root)) == "/":
            raise UnsafeOperation("a unit test reached the real /sys; use the fake kernel (--root)")
        original_init(self, root, host)

    def no_commands(*args, **kwargs):
        raise UnsafeOperation(f"a unit test tried to run a command on the real host: {args}")

    original_command = detached.command

    def guarded_command(argv, timeout, what, env):
        # Detached programs: only this Python, and the libvirt helper only with a stand-in
        # libvirt module on its path (never modprobe, never the real libvirt).
        from passthrough.host.libvirt import HELPER

        real_libvirt = HELPER in argv and len(argv) <= argv.index(HELPER) + 5
        if argv[0] != sys.executable or real_libvirt:
            raise UnsafeOperation(f"a unit test tried to run a command on the real host: {argv}")
        return original_command(argv, timeout, what, env)

    monkeypatch.setattr(sysfs_module.Sysfs, "__init__", guarded_init)
    monkeypatch.setattr("passthrough.host.commands.run", no_commands)
    monkeypatch.setattr("passthrough.host.commands.run_detached", no_commands)
    monkeypatch.setattr(detached, "command", guarded_command)

    def no_domain_lookup(domain, uri, timeout):
        from passthrough.tools.libvirt_domain import DomainXmlError

        raise DomainXmlError(
            "libvirt is not reachable from unit tests",
            f"pass the XML with --xml FILE (`virsh dumpxml {domain} > {domain}.xml`)",
        )

    monkeypatch.setattr("passthrough.tools.libvirt_domain.from_libvirt", no_domain_lookup)


@pytest.fixture
def fs(fs):
    """pyfakefs's fake filesystem; a run's log file opened in it is closed while it still
    exists (the log stays open until the next run's setup, which would close it after the
    filesystem is gone)."""
    yield fs
    from passthrough import log

    log.setup(None, use_syslog=False)


@pytest.fixture
def kernel(fs):
    """The demo host as a fake kernel at /host, with the project's config dir visible."""
    from fakekernel import FakeKernel
    from hosts import demo_host

    fs.add_real_directory(str(REPO / "config"), read_only=True)
    fs.add_real_directory(str(REPO / "passthrough"), read_only=True)
    return FakeKernel(fs, demo_host())


# Tiers that plain `pytest` leaves out: the inner loop is the fake kernel. Naming files, node
# ids or a `-m` expression runs what was named; PASSTHROUGH_ALL_TIERS=1 (tools/test, and so CI)
# runs everything.
OUTER_TIERS = ("slow", "guest", "libvirt", "ansible")
# Set for the xdist workers of an inner-loop run: they are given the test paths as
# arguments, so they cannot tell from their own command line.
INNER_LOOP_ENV = "PASSTHROUGH_INNER_LOOP"


def _inner_loop(config: pytest.Config) -> bool:
    if os.environ.get(INNER_LOOP_ENV) == "1":
        return True
    return (
        os.environ.get("PASSTHROUGH_ALL_TIERS") != "1"
        and not config.option.markexpr
        and config.args_source == pytest.Config.ArgsSource.TESTPATHS
    )


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """Plain `pytest` spreads the inner loop over every CPU when pytest-xdist is there
    (tools/test installs it); `-n N` or `-p no:xdist` decide otherwise, and the outer tiers
    (QEMU guests, this machine's libvirtd) always run one at a time."""
    if hasattr(config, "workerinput") or not config.pluginmanager.hasplugin("xdist"):
        return
    if getattr(config.option, "numprocesses", None) is not None or not _inner_loop(config):
        return
    if config.option.collectonly or (os.cpu_count() or 1) < 2:
        return
    config.option.numprocesses = "auto"
    os.environ[INNER_LOOP_ENV] = "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not _inner_loop(config):
        return
    kept, left_out = [], []
    for item in items:
        (left_out if any(item.get_closest_marker(m) for m in OUTER_TIERS) else kept).append(item)
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = kept
