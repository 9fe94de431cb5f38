"""The .deb as a Debian user gets it: built with dpkg-buildpackage, `apt install ./...deb`,
`virsh start` through the real libvirtd, then `apt remove` and `apt purge` back to the start.

The package is installed into this machine's dpkg database for real; every test ends with the
package purged and /etc/libvirt, /var/lib/passthrough-hook, the hook's log and every path the
package ships exactly as they were, even when it fails. It refuses to run where passthrough-hook
is already installed (from the package or by install.sh).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon import DAEMON_ENV, ETC_LIBVIRT, HOOKS_DIR, Libvirtd, TreeSnapshot, release_extra
from hook_trace import HookTrace, trace_hooks
from source_tree import copy_source_tree
from test_hook_libvirt import (
    FOREIGN_HOOK,
    HOOK_LOG,
    INSTALLED_OUTSIDE_ETC,
    MAIN_HOOK,
    NO_OP_PROFILE,
    PROFILES,
    QEMU_D_HOOK,
    START_EVENTS,
    STATE_DIR,
    STOP_EVENTS,
    _contents,
    win10,
)
from test_packaging import VERSION

pytestmark = pytest.mark.libvirt

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "passthrough-hook"
APT = ["apt-get", "-o", "DPkg::Lock::Timeout=900", "-y", "-q", "--no-install-recommends"]
ENV = {**DAEMON_ENV, "DEBIAN_FRONTEND": "noninteractive", "HOME": "/root"}
PACKAGE_STATE = Path("/var/lib/passthrough-hook")
LOGROTATE = Path("/etc/logrotate.d/passthrough-hook")
MARKER = "installed by the passthrough-hook package"  # in the hook files hook-setup writes
BUILD_TOOLS = {"dpkg-buildpackage": "dpkg-dev", "dh": "debhelper", "dh_python3": "dh-python"}


def _run(argv: list[str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        argv, capture_output=True, text=True, env=ENV, timeout=timeout, check=False
    )
    assert result.returncode == 0, (
        f"`{' '.join(argv)}` exited {result.returncode}:\n{result.stdout}{result.stderr}"
    )
    return result


def dpkg_status() -> str:
    """passthrough-hook's state in dpkg's database: installed, config-files, not-installed..."""
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${db:Status-Status}", PACKAGE],
        capture_output=True,
        text=True,
        env=ENV,
        check=False,
    )
    return result.stdout.strip() or "not-installed"


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """passthrough-hook_<version>_all.deb, built from a copy of this tree (the build writes
    next to its source directory and cleans the tree)."""
    missing = [tool for tool in BUILD_TOOLS if not shutil.which(tool, path=ENV["PATH"])]
    if missing:
        outcome = pytest.fail if os.environ.get("PASSTHROUGH_ALL_TIERS") == "1" else pytest.skip
        packages = " ".join(BUILD_TOOLS[tool] for tool in missing)
        outcome(f"building the .deb needs {', '.join(missing)} (apt-get install {packages})")
    build = tmp_path_factory.mktemp("deb")
    copy_source_tree(build / "src")
    result = subprocess.run(
        ["dpkg-buildpackage", "-b", "-us", "-uc"],
        cwd=build / "src",
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, f"dpkg-buildpackage failed:\n{result.stdout}{result.stderr}"
    (package,) = build.glob(f"{PACKAGE}_*_all.deb")
    return package


class DebInstall:
    """The package on this machine while a test runs (fixture `package`)."""

    def __init__(self, libvirtd: Libvirtd, deb: Path) -> None:
        self.libvirtd = libvirtd
        self.deb = deb
        self.log_offset = HOOK_LOG.stat().st_size if HOOK_LOG.exists() else 0

    def apt(self, *args: str) -> str:
        """Run apt-get ARGS; returns what apt and the maintainer scripts printed."""
        output = _run([*APT, *args]).stdout
        # The maintainer scripts' SIGHUP: wait for that reload to end before going on.
        self.libvirtd.reload()
        return output

    def install(self) -> str:
        return self.apt("install", str(self.deb))

    def log(self) -> str:
        """What the hook wrote to its log since the test started."""
        if not HOOK_LOG.exists():
            return ""
        with HOOK_LOG.open("rb") as log:
            log.seek(self.log_offset)
            return log.read().decode(errors="replace")


def shipped_paths(deb: Path) -> list[Path]:
    """Every path in the package, as dpkg would install it."""
    lines = _run(["dpkg-deb", "-c", str(deb)]).stdout.splitlines()
    # "drwxr-xr-x root/root 0 2026-12-01 10:00 ./usr/bin/" (a link adds " -> target")
    names = [line.split(None, 5)[5].split(" -> ")[0] for line in lines]
    return [Path(name.lstrip(".").rstrip("/") or "/") for name in names]


@pytest.fixture
def package(libvirtd: Libvirtd, hooks_dir: Path, deb: Path) -> Iterator[DebInstall]:
    """A DebInstall; afterwards the package is purged and the machine is as it was before."""
    leftover = [str(path) for path in INSTALLED_OUTSIDE_ETC if path.exists()]
    if dpkg_status() != "not-installed" or leftover or PACKAGE_STATE.exists():
        outcome = pytest.fail if os.environ.get("PASSTHROUGH_ALL_TIERS") == "1" else pytest.skip
        outcome(
            f"passthrough-hook is already on this machine (dpkg: {dpkg_status()}; "
            f"{', '.join(leftover + [str(PACKAGE_STATE)] * PACKAGE_STATE.exists()) or 'no files'}); "
            "this test installs and purges the package itself: remove it first "
            "(apt purge passthrough-hook, or install.sh --uninstall)",
            pytrace=False,
        )
    shipped = shipped_paths(deb)
    absent = [path for path in shipped if not os.path.lexists(path)]
    win10(libvirtd)  # defined first: its XML in /etc/libvirt/qemu is libvirt's, not the package's
    etc_before = TreeSnapshot(ETC_LIBVIRT)
    log_before = HOOK_LOG.read_bytes() if HOOK_LOG.exists() else None
    state_existed = STATE_DIR.exists()
    installation = DebInstall(libvirtd, deb)
    try:
        yield installation
    finally:
        for profile in PROFILES.glob("*.yaml"):
            profile.unlink()  # the test's own: a user's profiles survive purge, these must not
        try:
            if dpkg_status() != "not-installed":
                _run([*APT, "purge", PACKAGE])
        finally:
            # Never leave the machine changed, even when purge is broken.
            left = [path for path in absent if os.path.lexists(path)]
            for path in sorted(left, reverse=True):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
            shutil.rmtree(PACKAGE_STATE, ignore_errors=True)
            # The tests compare /etc/libvirt themselves (they change it too: a foreign hook).
            ours = [
                path
                for path in HOOKS_DIR.rglob("*")
                if path.is_file() and MARKER in path.read_text(errors="replace")
            ]
            etc_before.restore()
            for rotated in HOOK_LOG.parent.glob(HOOK_LOG.name + ".*"):
                rotated.unlink()
            if log_before is None:
                HOOK_LOG.unlink(missing_ok=True)
            else:
                HOOK_LOG.write_bytes(log_before)
            if not state_existed:
                shutil.rmtree(STATE_DIR, ignore_errors=True)
            libvirtd.reload()
        assert not left, f"apt purge left {', '.join(map(str, left))}"
        assert not ours, f"apt purge left the package's hook {', '.join(map(str, ours))}"


@pytest.fixture
def trace(libvirtd: Libvirtd, tmp_path: Path) -> Iterator[HookTrace]:
    with trace_hooks(libvirtd, tmp_path / "libvirtd-hook-calls.log") as hook_trace:
        yield hook_trace


def test_apt_install_starts_a_domain_with_a_profile_and_purge_restores_the_host(
    libvirtd: Libvirtd, package: DebInstall, trace: HookTrace
) -> None:
    etc_before = _contents(TreeSnapshot(ETC_LIBVIRT))

    output = package.install()

    assert dpkg_status() == "installed"
    assert "write a profile as /etc/libvirt/hooks/passthrough/<domain>.yaml" in output, output
    hook = Path(MAIN_HOOK)
    assert hook.read_bytes() == Path("/usr/lib/passthrough-hook/qemu").read_bytes()
    assert hook.stat().st_mode & 0o777 == 0o755
    assert not (HOOKS_DIR / "qemu.d").exists()
    for path in (
        "/usr/share/bash-completion/completions/passthrough-hook",
        "/usr/share/zsh/vendor-completions/_passthrough-hook",
        "/usr/share/doc/passthrough-hook/examples/win10.yaml",
        "/etc/logrotate.d/passthrough-hook",
    ) + ("/usr/share/man/man8/passthrough-hook.8.gz",) * (
        REPO / "docs/passthrough-hook.8"
    ).exists():
        assert Path(path).is_file(), path
    # The program is the distribution python's, with the distribution's bindings.
    version = _run(["passthrough-hook", "--version"]).stdout.strip()
    assert version == f"passthrough-hook {VERSION}"
    import_path = _run(
        [
            "/usr/bin/python3",
            "-I",
            "-c",
            "import passthrough, libvirt, yaml; print(passthrough.__file__)",
        ]
    ).stdout.strip()
    assert import_path == "/usr/lib/python3/dist-packages/passthrough/__init__.py"

    package_profile = PROFILES / "win10.yaml"
    package_profile.write_text(NO_OP_PROFILE)
    package_profile.chmod(0o644)
    domain = win10(libvirtd)
    libvirtd.virsh("start", domain)
    libvirtd.virsh("destroy", domain)

    assert trace.summary(MAIN_HOOK, domain) == [
        (event, 0) for event in START_EVENTS + STOP_EVENTS
    ], trace
    log = package.log()
    assert "win10 prepare/begin: 1. undo what release/end changed, in reverse order: done" in log
    assert "win10 release/end: 1. undo what prepare/begin changed, in reverse order: done" in log
    assert not (STATE_DIR / "win10.json").exists()

    # remove: the hook is gone at once (its program is), the profile and the conffile stay.
    output = package.apt("remove", PACKAGE)
    assert f"kept {PROFILES} (not empty)" in output, output
    assert dpkg_status() == "config-files"
    assert not hook.exists()
    assert package_profile.exists()
    assert LOGROTATE.exists()
    assert HOOK_LOG.exists()
    assert not Path("/usr/lib/python3/dist-packages/passthrough").exists()

    # The user deletes the profile; purge takes the conffile, the log and the profile
    # directory the package created (it remembered it) and leaves /etc/libvirt as before.
    package_profile.unlink()
    package.apt("purge", PACKAGE)
    assert dpkg_status() == "not-installed"
    assert not LOGROTATE.exists()
    assert not HOOK_LOG.exists()
    assert not PACKAGE_STATE.exists()
    assert _contents(TreeSnapshot(ETC_LIBVIRT)) == etc_before


def test_an_existing_hook_is_kept_the_package_hook_goes_to_qemu_d_and_purge_restores_it(
    libvirtd: Libvirtd, package: DebInstall, trace: HookTrace, tmp_path: Path
) -> None:
    foreign_log = tmp_path / "my-hook.log"
    foreign = HOOKS_DIR / "qemu"
    foreign.write_text(FOREIGN_HOOK.format(log=foreign_log))
    foreign.chmod(0o755)
    etc_before = _contents(TreeSnapshot(ETC_LIBVIRT))

    output = package.install()

    assert f"kept your existing {MAIN_HOOK}; installed the hook as {QEMU_D_HOOK}" in output
    assert foreign.read_text() == FOREIGN_HOOK.format(log=foreign_log)
    (PROFILES / "win10.yaml").write_text(NO_OP_PROFILE)
    (PROFILES / "win10.yaml").chmod(0o644)
    domain = win10(libvirtd)
    libvirtd.virsh("start", domain)
    libvirtd.virsh("destroy", domain)

    expected = [(event, 0) for event in START_EVENTS + STOP_EVENTS]
    assert trace.summary(MAIN_HOOK, domain) == expected, trace
    assert trace.summary(QEMU_D_HOOK, domain) == expected, trace
    release = f"release end {release_extra(libvirtd.daemon_version(), 'destroyed')}"
    assert foreign_log.read_text().splitlines()[-1] == f"{domain} {release}"
    assert "win10 release/end: 1. undo what prepare/begin changed" in package.log()

    # purge with the profile still there: it is the user's, it stays with its directory.
    package.apt("purge", PACKAGE)
    assert dpkg_status() == "not-installed"
    assert (PROFILES / "win10.yaml").read_text() == NO_OP_PROFILE
    assert foreign.read_text() == FOREIGN_HOOK.format(log=foreign_log)
    assert not Path(QEMU_D_HOOK).exists()
    (PROFILES / "win10.yaml").unlink()
    PROFILES.rmdir()  # as the user would, once done with it
    assert _contents(TreeSnapshot(ETC_LIBVIRT)) == etc_before


def test_lintian_finds_nothing_to_say_about_the_package(deb: Path) -> None:
    if not shutil.which("lintian", path=ENV["PATH"]):
        outcome = pytest.fail if os.environ.get("PASSTHROUGH_ALL_TIERS") == "1" else pytest.skip
        outcome("needs lintian (apt-get install lintian)")
    result = subprocess.run(
        ["lintian", "--pedantic", "--display-info", "--tag-display-limit", "0", str(deb)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
        check=False,
    )
    tags = sorted({line.split()[2] for line in result.stdout.splitlines() if ": " in line})
    # The man page is generated from the parsers and committed as docs/passthrough-hook.8.
    expected = [] if (REPO / "docs" / "passthrough-hook.8").exists() else ["no-manual-page"]
    assert tags == expected, result.stdout
