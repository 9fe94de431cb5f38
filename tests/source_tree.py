"""The version of pyproject.toml, and a copy of this checkout's files (tracked and new, not ignored ones), for package builds
that write into or next to their source tree."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The version every package carries (tomllib is Python 3.11+; the tests run on 3.10 too).
VERSION = re.search(r'^version = "([^"]+)"$', (REPO / "pyproject.toml").read_text(), re.M)[1]


def copy_source_tree(dest: Path) -> Path:
    """Copy the checkout to dest, symlinks as symlinks (the demo host tree is full of them)."""
    names = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, map(os.fsdecode, names)):
        source = REPO / name
        if source.is_symlink() or source.is_file():  # a deleted, uncommitted file is listed too
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name, follow_symlinks=False)
    return dest
