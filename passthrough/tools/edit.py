"""`passthrough-hook edit DOMAIN`: edit a profile the way visudo edits sudoers.

The editor ($VISUAL, $EDITOR, else editor/vi/nano) works on a private copy. On save
the copy is validated; when it has errors they are shown and the person chooses to
edit again or discard. The real file is replaced only by a valid profile, atomically
(temporary file in the same directory, fsync, rename), with its owner and mode kept:
libvirt may start a VM at any moment, and the hook must never read half a profile or
an invalid one.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TextIO

from ..errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, ProfileError, UsageError
from .common import PROG, add_config_dir, config_dir, existing_profile, parser_for

FALLBACK_EDITORS = ("editor", "vi", "nano")  # `editor` is Debian's alternatives choice


def build_parser() -> argparse.ArgumentParser:
    parser = parser_for(
        "edit",
        "Edit a domain's profile in $VISUAL or $EDITOR on a copy; the profile is "
        "replaced only when the edited copy is valid (like visudo).",
    )
    add_config_dir(parser)
    parser.add_argument("domain")
    return parser


def main(argv: list[str], out: TextIO, err: TextIO) -> int:
    args = build_parser().parse_args(argv)
    path = existing_profile(config_dir(args), args.domain)
    real = Path(os.path.realpath(path))  # a symlinked profile: replace the file it points to
    check_replaceable(real, args.domain)  # before the editor opens: no work lost at the end
    try:
        original = real.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {real}: {exc.strerror}") from None
    editor = editor_command()
    workdir = Path(tempfile.mkdtemp(prefix="passthrough-hook-edit-"))
    copy = workdir / path.name
    copy.write_bytes(original)
    keep_copy = False
    try:
        while True:
            status = subprocess.run([*editor, str(copy)]).returncode
            if status != 0:
                print(
                    f"{editor[0]} exited with status {status}; {path} is left as it was", file=err
                )
                return EXIT_FAILED
            edited = copy.read_bytes()
            if edited == original:
                print(f"no changes; {path} is left as it was", file=out)
                return EXIT_OK
            problems = validate(edited, str(path))
            if problems is None:
                break
            print(problems, file=err)
            if ask(sys.stdin, out) != "e":
                print(f"discarded your changes; {path} is left as it was", file=out)
                return EXIT_USAGE
        if real.read_bytes() != original:
            keep_copy = True
            raise UsageError(
                f"{path} was changed by someone else while you edited it, so it was not replaced; "
                f"your version is in {copy}: merge it by hand"
            )
        try:
            replace_keeping_owner_and_mode(real, edited)
        except (UsageError, OSError) as exc:
            keep_copy = True
            reason = exc if isinstance(exc, UsageError) else exc.strerror
            raise UsageError(
                f"{path} was not saved ({reason}); your edited version is kept in {copy}"
            ) from None
        print(f"{path}: valid, saved", file=out)
        offer_check(args, out, err)
        return EXIT_OK
    finally:
        if not keep_copy:
            shutil.rmtree(workdir, ignore_errors=True)


def check_replaceable(real: Path, domain: str) -> None:
    """What replacing the profile needs, checked before the editor opens (like visudo): a
    directory this user can create the new file in, and the right to give it the profile's
    owner."""
    info = os.stat(real)
    sudo = f"run as root (`sudo {PROG} edit {domain}`)"
    if not os.access(real.parent, os.W_OK | os.X_OK):
        raise UsageError(
            f"cannot replace {real}: its directory {real.parent} is not writable by you; {sudo}"
        )
    if info.st_uid != os.geteuid() and os.geteuid() != 0:
        raise UsageError(
            f"cannot replace {real} keeping its owner (uid {info.st_uid}): only root can; {sudo}"
        )


def offer_check(args: argparse.Namespace, out: TextIO, err: TextIO) -> None:
    """After a valid save: the preflight against this host, asked for at a terminal."""
    command = f"{PROG} check {args.domain}"
    if not sys.stdin.isatty():
        print(f"Next: `{command}` checks it against this host.", file=out)
        return
    print(
        f"Run the preflight (`{command}`) against this host now? [Y/n] ",
        end="",
        file=out,
        flush=True,
    )
    if sys.stdin.readline().strip().lower() not in ("", "y", "yes"):
        return
    from . import check

    check.main(["--config-dir", str(config_dir(args)), args.domain], out, err)


def editor_command() -> list[str]:
    """$VISUAL, then $EDITOR (which may carry arguments: `code --wait`), then a fallback."""
    for variable in ("VISUAL", "EDITOR"):
        value = os.environ.get(variable, "").strip()
        if value:
            try:
                return shlex.split(value)
            except ValueError:
                raise UsageError(f"${variable} is not a command line: {value!r}") from None
    for name in FALLBACK_EDITORS:
        found = shutil.which(name)
        if found:
            return [found]
    raise UsageError(
        "no editor found: set VISUAL or EDITOR (e.g. `EDITOR=nano passthrough-hook edit DOMAIN`)"
    )


def validate(data: bytes, shown: str) -> str | None:
    """The profile's problems as printed lines, or None when it is valid."""
    from ..profile import MAX_BYTES, parse_profile

    if len(data) > MAX_BYTES:
        return (
            f"{shown}:1:1: the profile is larger than {MAX_BYTES // 1024} KiB; profiles are short"
        )
    try:
        parse_profile(data, shown)
    except ProfileError as exc:
        return str(exc)
    return None


def ask(stdin: TextIO, out: TextIO) -> str:
    """'e' to edit again, 'x' to discard; end of input discards."""
    while True:
        print(
            "The profile has errors. (e)dit again or e(x)it discarding your changes? [e/x] ",
            end="",
            file=out,
            flush=True,
        )
        answer = stdin.readline()
        if not answer:
            print("", file=out)
            return "x"
        choice = answer.strip().lower()[:1]
        if choice in ("e", "x"):
            return choice


def replace_keeping_owner_and_mode(real: Path, data: bytes) -> None:
    """Write data next to `real`, give it real's owner and mode, fsync, rename over it."""
    info = os.stat(real)
    tmp = real.with_name(f".{real.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if (info.st_uid, info.st_gid) != (os.geteuid(), os.getegid()):
                os.fchown(fd, info.st_uid, info.st_gid)
            os.fchmod(fd, stat.S_IMODE(info.st_mode))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, real)
    except PermissionError:
        tmp.unlink(missing_ok=True)
        raise UsageError(
            f"cannot replace {real} keeping its owner (uid {info.st_uid}) and mode: permission "
            f"denied; run as root"
        ) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    directory = os.open(real.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
