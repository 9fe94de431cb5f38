"""The one rule for trusting a file that root acts on (a profile, its directory, a legacy
hook script): like sudo and sshd, it must be owned by root (or by the user the program
runs as, who gains nothing by it) and not writable by its group or by others.

The hook applies it when it runs as root; `validate` and `check` apply it as the hook will
(an error when they run as root, a warning otherwise).
"""

from __future__ import annotations

import os
import stat


def untrusted(path: str | os.PathLike, runs_as: int | None = None) -> tuple[str, str] | None:
    """(what is wrong, the command that fixes it) when a program running as uid `runs_as`
    (default: this process) must not act on `path`; None when it may."""
    runs_as = os.geteuid() if runs_as is None else runs_as
    info = os.stat(path)
    shown = str(path)
    if info.st_uid not in (0, runs_as):
        return (
            f"{shown} is owned by uid {info.st_uid}, not root; a root hook only runs root's files",
            f"chown root:root {shown}",
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return (
            f"{shown} is writable by group or others (mode {stat.S_IMODE(info.st_mode):o}); anyone "
            f"who can write it runs code as root",
            f"chmod go-w {shown}",
        )
    return None


def profile_problems(path: str | os.PathLike, runs_as: int | None = None) -> list[tuple[str, str]]:
    """The rule applied to a profile and the directory holding it."""
    found = []
    for candidate in (path, os.path.dirname(os.path.abspath(path))):
        problem = untrusted(candidate, runs_as)
        if problem:
            found.append(problem)
    return found
