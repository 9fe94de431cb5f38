"""Helpers of the Ansible tier: the collection in ansible/ against throwaway Debian systems.

Once per test session: a virtualenv with ansible-core and ansible-lint (from PyPI), a
Debian tree made by mmdebstrap (python3, PyYAML, the libvirt bindings, python3-apt), both
cached between runs and keyed on their inputs; the collection built with
`ansible-galaxy collection build` and installed into a temporary collections path. Each
test module gets its own copies of the tree, one per target, reached with chroot(8)
through tests/ansible/connection_plugins/chroot.py. Nothing is mounted in a target: its
/sys and /proc are a fake host's plain files (tests/hosts.py), never this machine's.

Cache: $PASSTHROUGH_ANSIBLE_CACHE, else $XDG_CACHE_HOME/passthrough-hook-tests/ansible.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
COLLECTION = REPO / "ansible"
SUITE = "bookworm"
PACKAGES = ("python3", "python3-yaml", "python3-libvirt", "python3-apt")
MIRROR_FALLBACK = "http://deb.debian.org/debian"


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path:
        return path
    message = f"{tool} is not installed (tools/test installs it)"
    if os.environ.get("PASSTHROUGH_ALL_TIERS"):
        pytest.fail(message)
    pytest.skip(message)
    raise AssertionError  # unreachable


def cache_dir() -> Path:
    explicit = os.environ.get("PASSTHROUGH_ANSIBLE_CACHE")
    base = (
        Path(explicit)
        if explicit
        else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        / "passthrough-hook-tests"
        / "ansible"
    )
    base.mkdir(parents=True, exist_ok=True)
    return base


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One builder at a time for a cache entry (several pytest runs may share the cache)."""
    with open(path.with_name(path.name + ".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _key(*parts: str | bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    return digest.hexdigest()[:12]


def debian_mirror() -> str:
    """The Debian mirror apt already uses here (deb822 or one-line sources)."""
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        try:
            text = path.read_text()
        except OSError:
            continue
        for match in re.finditer(r"^(?:URIs:\s*|deb\s+(?:\[[^]]*\]\s+)?)(\S+)", text, re.M):
            uri = match.group(1).rstrip("/")
            if uri.endswith("/debian"):
                return uri
    return MIRROR_FALLBACK


def ansible_env(collections: Path | None = None, home: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(
        ANSIBLE_CONNECTION_PLUGINS=str(HERE / "connection_plugins"),
        ANSIBLE_PIPELINING="1",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_RETRY_FILES_ENABLED="0",
        ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="0",
        ANSIBLE_FORKS="3",
        PY_COLORS="0",
        NO_COLOR="1",
    )
    if collections is not None:
        env["ANSIBLE_COLLECTIONS_PATH"] = str(collections)
    if home is not None:
        env["ANSIBLE_HOME"] = str(home)
        env["ANSIBLE_LOCAL_TEMP"] = str(home / "tmp")
    return env


def ansible(bin_dir: Path, tool: str, *args: str, cwd: Path, env: dict | None = None):
    return subprocess.run(
        [str(bin_dir / tool), *args],
        cwd=cwd,
        env=env or ansible_env(),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


RECAP = re.compile(
    r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)\s+"
    r"skipped=(\d+)\s+rescued=(\d+)\s+ignored=(\d+)",
    re.M,
)


@dataclasses.dataclass
class Run:
    returncode: int
    output: str

    @property
    def recap(self) -> dict[str, dict[str, int]]:
        names = ("ok", "changed", "unreachable", "failed", "skipped", "rescued", "ignored")
        return {
            m.group(1): dict(zip(names, map(int, m.groups()[1:]), strict=True))
            for m in RECAP.finditer(self.output)
        }

    def changed(self) -> dict[str, int]:
        return {host: counts["changed"] for host, counts in self.recap.items()}

    def failed(self) -> dict[str, int]:
        return {host: counts["failed"] for host, counts in self.recap.items()}


@dataclasses.dataclass
class Fleet:
    """Targets (name -> tree) and a way to run playbooks against them."""

    bin_dir: Path
    collections: Path
    workdir: Path
    targets: dict[str, Path]

    def overlay(self, extra: dict | None = None) -> Path:
        """An inventory that reaches the targets (chroot, no become): given after the
        inventory under test, it only adds how to connect."""
        import yaml

        hosts = {
            name: {
                "ansible_host": str(root),
                "ansible_connection": "chroot",
                "ansible_python_interpreter": "/usr/bin/python3",
                "ansible_become": False,
                "passthrough_hook_source": str(REPO),
                **(extra or {}),
            }
            for name, root in self.targets.items()
        }
        path = self.workdir / "targets.yml"
        path.write_text(yaml.safe_dump({"all": {"hosts": hosts}}))
        return path

    def playbook(self, playbook: Path, *args: str, inventory: Path | None = None) -> Run:
        inventories = ["-i", str(inventory)] if inventory else []
        result = ansible(
            self.bin_dir,
            "ansible-playbook",
            *inventories,
            "-i",
            str(self.overlay()),
            str(playbook),
            *args,
            cwd=playbook.parent,
            env=ansible_env(self.collections, self.workdir / "ansible-home"),
        )
        run = Run(result.returncode, result.stdout + result.stderr)
        logs = sorted(self.workdir.glob("run-*.log"))
        (self.workdir / f"run-{len(logs) + 1:02d}-{playbook.stem}.log").write_text(
            f"$ ansible-playbook {playbook.name} {' '.join(args)}\n{run.output}"
        )
        return run


def extract(tarball: Path, root: Path) -> Path:
    root.mkdir(parents=True)
    subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-xf", str(tarball)], check=True)
    return root


def lay_over(root: Path, tree: Path) -> None:
    """Replace the target's sys/ and proc/ by a host tree's, and add the rest of it (through
    the target's own /lib -> usr/lib link)."""
    for top in ("sys", "proc"):
        if (tree / top).exists():
            shutil.rmtree(root / top)
    subprocess.run(
        f"tar -C '{tree}' -cf - . | tar -C '{root}' --keep-directory-symlink -xf -",
        shell=True,
        check=True,
    )
