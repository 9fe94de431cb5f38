"""Fixtures of the Ansible tier (see ansible_fleet.py): the tools, the Debian tree and the
built collection, once per test session."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ansible_fleet import (
    COLLECTION,
    HERE,
    PACKAGES,
    SUITE,
    _key,
    _locked,
    _need,
    ansible,
    cache_dir,
    debian_mirror,
)


@pytest.fixture(scope="session")
def ansible_bin() -> Path:
    """bin/ of a cached virtualenv with the pinned ansible-core and ansible-lint."""
    requirements = (HERE / "requirements.txt").read_bytes()
    venv = cache_dir() / f"venv-{_key(requirements, sys.version)}"
    with _locked(venv):
        if not (venv / ".complete").exists():
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True)
            subprocess.run(
                [
                    str(venv / "bin/python"),
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    "--disable-pip-version-check",
                    "-r",
                    str(HERE / "requirements.txt"),
                ],
                check=True,
            )
            (venv / ".complete").write_text("")
    return venv / "bin"


@pytest.fixture(scope="session")
def debian_tarball() -> Path:
    """A minimal Debian system as a tarball, made by mmdebstrap from Debian's mirror."""
    mmdebstrap = _need("mmdebstrap")
    _need("chroot")
    mirror = debian_mirror()
    tarball = cache_dir() / f"debian-{SUITE}-{_key(SUITE, *PACKAGES)}.tar"
    with _locked(tarball):
        if not tarball.exists():
            partial = tarball.with_name(f".{tarball.name}.{os.getpid()}")
            subprocess.run(
                [
                    mmdebstrap,
                    "--quiet",
                    "--variant=minbase",
                    f"--include={','.join(PACKAGES)}",
                    "--dpkgopt=path-exclude=/usr/share/man/*",
                    "--dpkgopt=path-exclude=/usr/share/doc/*",
                    "--dpkgopt=path-exclude=/usr/share/locale/*",
                    "--format=tar",
                    SUITE,
                    str(partial),
                    mirror,
                ],
                check=True,
            )
            os.replace(partial, tarball)
    return tarball


@pytest.fixture(scope="session")
def collections_path(ansible_bin, tmp_path_factory) -> Path:
    """The collection as users get it: built into a tarball, installed from it."""
    build = tmp_path_factory.mktemp("collection-build")
    result = ansible(
        ansible_bin,
        "ansible-galaxy",
        "collection",
        "build",
        str(COLLECTION),
        "--output-path",
        str(build),
        cwd=build,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    [tarball] = build.glob("passthrough-passthrough_hook-*.tar.gz")
    installed = tmp_path_factory.mktemp("collections")
    result = ansible(
        ansible_bin,
        "ansible-galaxy",
        "collection",
        "install",
        str(tarball),
        "-p",
        str(installed),
        cwd=build,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return installed
