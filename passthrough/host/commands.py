"""Running commands: argv lists only, never a shell, a fixed PATH, bounded in time."""

from __future__ import annotations

import os
import shutil
import subprocess

from ..errors import HostError, StepTimeout

# libvirt runs hooks with the daemon's PATH; commands are looked up here instead, so a
# PATH entry earlier in some environment cannot substitute another program.
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class CommandError(HostError):
    def __init__(self, argv: list[str], returncode: int, stderr: str):
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr
        detail = stderr.strip().splitlines()[-1] if stderr.strip() else "no error output"
        super().__init__(f"`{' '.join(argv)}` exited with status {returncode}: {detail}")


def resolve(program: str) -> str:
    if os.path.isabs(program):
        return program
    found = shutil.which(program, path=SYSTEM_PATH)
    if not found:
        raise HostError(f"`{program}` was not found in {SYSTEM_PATH}", hint="install it or give an absolute path")
    return found


def run(argv: list[str], timeout: float, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    """Run argv; raise CommandError on a non-zero exit, StepTimeout past the timeout."""
    full = [resolve(argv[0]), *argv[1:]]
    try:
        result = subprocess.run(
            full, input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True, timeout=timeout, cwd="/",
            env={"PATH": SYSTEM_PATH, "LC_ALL": "C"}, check=False,
        )
    except subprocess.TimeoutExpired:
        raise StepTimeout(f"`{' '.join(argv)}` did not finish within {timeout:.0f} s (killed)") from None
    if result.returncode != 0:
        raise CommandError(argv, result.returncode, result.stderr.decode(errors="replace"))
    return result
