"""libvirt's calls keep each profile they validated, so the next event does not parse YAML.

libvirt runs the hook for every event of every domain, and on a domain with a profile
PyYAML's import and parse were the largest part of the hook's own time. After a profile
validates on one of libvirt's calls, its steps (each action's name and checked argument
values) are written beside the journals, to `<state dir>/profiles/<domain>.cache` (once a
run that changes the host has made the state directory), with the profile's file
identity: device, inode, size, mtime and ctime (which no write, rename or chmod leaves
unchanged), its owner and mode, the interpreter and the hook's own source files. A later
call uses the copy only when all of these are the same, and only when the copy passes the
rule a root hook applies to every file it acts on (trust.py); anything else parses the
file again. A person's commands (validate, dry runs, events typed at a terminal) always
parse the file, so what they report is the file's own word.
"""

from __future__ import annotations

import marshal
import os
import sys

from . import __version__

TYPE_CHECKING = False  # typing's constant, without importing typing (the hook's imports)
if TYPE_CHECKING:
    from typing import Any

    from .profile import Profile

FORMAT = 1
MAX_BYTES = 1 << 20
PACKAGE = os.path.dirname(os.path.realpath(__file__))
# Where the code that parses and validates a profile lives: a change to any of these files
# (an upgrade, an edit in a checkout) makes every copy stale.
CODE_DIRS = (PACKAGE, os.path.join(PACKAGE, "actions"))


def code_stamp() -> tuple:
    """(name, size, mtime) of every .py file of the code that validates profiles."""
    stamp = []
    for directory in CODE_DIRS:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.endswith(".py"):
                    info = entry.stat()
                    stamp.append((entry.name, info.st_size, info.st_mtime_ns))
    return tuple(sorted(stamp))


def file_key(path: str, info: os.stat_result) -> tuple:
    """What must be equal for a copy to stand for the file: the file's identity and the
    code and interpreter that validated it."""
    return (
        FORMAT,
        sys.hexversion,
        __version__,
        code_stamp(),
        str(path),
        info.st_dev,
        info.st_ino,
        info.st_size,
        info.st_mtime_ns,
        info.st_ctime_ns,
        info.st_uid,
        info.st_mode,
    )


def cache_path(state_dir: str, domain: str) -> str:
    return os.path.join(state_dir, "profiles", f"{domain}.cache")


def load_or_parse(state_dir: str, domain: str, path: str) -> Profile:
    """The profile at `path`: the copy kept by an earlier call if it stands for the file,
    else the file parsed and validated (and kept). Raises what load_profile raises."""
    from .profile import parse_profile, read_profile

    profile = load(state_dir, domain, path)
    if profile is None:
        data, info = read_profile(path, str(path))
        profile = parse_profile(data, str(path))
        store(state_dir, domain, path, info, profile)
    return profile


def load(state_dir: str, domain: str, path: str) -> Profile | None:
    """The profile at `path` as validated before, or None when there is no usable copy."""
    from .trust import profile_problems

    copy = cache_path(state_dir, domain)
    try:
        if profile_problems(copy):
            return None
        with open(copy, "rb") as handle:
            data = handle.read(MAX_BYTES + 1)
        info = os.stat(path)
    except OSError:
        return None
    if len(data) > MAX_BYTES:
        return None
    try:
        stored = marshal.loads(data)
    except (EOFError, ValueError, TypeError):
        return None
    try:
        if not isinstance(stored, dict) or stored.get("key") != file_key(path, info):
            return None
    except OSError:
        return None  # the code's files cannot be read: no copy can be vouched for
    try:
        return _rebuild(stored["profile"])
    except (KeyError, TypeError, ValueError):
        return None  # not what this code writes: parse the file


def store(state_dir: str, domain: str, path: str, info: os.stat_result, profile: Profile) -> None:
    """Keep the profile validated from the file whose stat (taken after reading it) is
    `info`, beside the journals. Nothing is kept for values that are not plain data, before
    a run that changes the host has made the state directory, or when it cannot be
    written; the next call parses the file again."""
    data = _plain(profile)
    if data is None:
        return
    copy = cache_path(state_dir, domain)
    if not os.path.isdir(state_dir):
        return  # the copy never makes the state directory: a run that changes the host does
    try:
        directory, name = os.path.split(copy)
        try:
            os.mkdir(directory, mode=0o700)
        except FileExistsError:
            pass
        temporary = os.path.join(directory, f".{name}.{os.getpid()}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(marshal.dumps({"key": file_key(path, info), "profile": data}))
        os.replace(temporary, copy)
    except OSError:
        return


def _is_plain(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


def _plain(profile: Profile) -> dict | None:
    events = {}
    for event, steps in profile.events.items():
        rows = []
        for step in steps:
            values = step.action.params.as_dict()
            if not _is_plain(values):
                return None
            where = (step.where.file, step.where.line, step.where.column)
            rows.append((step.number, step.action.name, values, where, step.timeout, step.force))
        events[event] = rows
    return {
        "path": profile.path,
        "devices": dict(profile.devices),
        "log_level": profile.log_level,
        "events": events,
    }


def _rebuild(data: dict) -> Profile:
    from .actions import REGISTRY
    from .profile import Profile, Step, Where

    devices = data["devices"]
    events = {}
    for event, rows in data["events"].items():
        steps = []
        for number, name, values, where, timeout, force in rows:
            action_class = REGISTRY[name]
            action = action_class(action_class.args.values(**values), devices)
            steps.append(Step(event, number, action, Where(*where), timeout, force))
        events[event] = tuple(steps)
    return Profile(path=data["path"], devices=devices, events=events, log_level=data["log_level"])
