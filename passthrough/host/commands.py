"""Running commands: argv lists only, never a shell, a fixed PATH, bounded in time."""

from __future__ import annotations

import os

from ..errors import HostError, StepTimeout
from ..record import record

TYPE_CHECKING = False  # typing's constant, without importing typing (the hook's imports)
if TYPE_CHECKING:
    from . import Host

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


def which(program: str) -> str | None:
    """What shutil.which(program, path=SYSTEM_PATH) finds. shutil itself is not imported:
    with bz2 and lzma it was a tenth of a hook's imports."""
    if os.path.dirname(program):
        candidates = [program]
    else:
        candidates = [os.path.join(part, program) for part in SYSTEM_PATH.split(":")]
    for candidate in candidates:
        if os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
            return candidate
    return None


def resolve(program: str) -> str:
    if os.path.isabs(program):
        return program
    found = which(program)
    if not found:
        raise HostError(
            f"`{program}` was not found in {SYSTEM_PATH}",
            hint="install it or give an absolute path",
        )
    return found


@record(frozen=True)
class Completed:
    """A command that ran to its end: exit status and what it wrote."""

    returncode: int
    stdout: bytes
    stderr: bytes


def run(argv: list[str], timeout: float, stdin: bytes | None = None) -> Completed:
    """Run argv; raise CommandError on a non-zero exit, StepTimeout past the timeout."""
    from . import spawn

    full = [resolve(argv[0]), *argv[1:]]
    child = spawn.start(full, {"PATH": SYSTEM_PATH, "LC_ALL": "C"}, stdin=stdin is not None)
    finished = child.communicate(timeout, stdin or b"")
    if finished is None:
        child.kill()
        raise StepTimeout(f"`{' '.join(argv)}` did not finish within {timeout:.0f} s (killed)")
    result = Completed(*finished)
    if result.returncode != 0:
        raise CommandError(argv, result.returncode, result.stderr.decode(errors="replace"))
    return result


def run_detached(argv: list[str], timeout: float, what: str) -> str:
    """Run argv as a detached helper (host/detached.py `command`: its own session and stdio,
    not waited for past the timeout), for a program that can wait in the kernel. Its
    output; CommandError on a non-zero exit, detached.StuckWrite when it has not returned."""
    from . import detached

    code, output = detached.command(
        [resolve(argv[0]), *argv[1:]], timeout, what, env={"PATH": SYSTEM_PATH, "LC_ALL": "C"}
    )
    if code:
        raise CommandError(argv, code, output)
    return output


class Commands:
    """Commands as a Host member, so dry runs can record instead of run.

    `query` is for read-only commands (`systemctl is-active gdm`): it runs in dry runs too.
    `run` changes the host: recorded, bounded, never run in a dry run. Both act on the
    running system, so with a --root other than / they refuse.
    """

    def __init__(self, root: str | os.PathLike[str], host: Host):
        self.root = root
        self.host = host

    def _guard(self, argv: list[str]) -> None:
        from ..errors import UnsafeOperation

        if os.path.realpath(self.root) != "/":
            raise UnsafeOperation(
                f"cannot run `{' '.join(argv)}` with --root {self.root}: it would act on "
                f"this machine, not on the tree"
            )

    def query(self, argv: list[str], timeout: float = 10.0) -> str:
        self._guard(argv)
        return run(argv, min(timeout, self.host.time_left(timeout))).stdout.decode(errors="replace")

    def run(
        self,
        argv: list[str],
        timeout: float | None = None,
        stdin: bytes | None = None,
        effect: str = "",
    ) -> str:
        self._guard(argv)
        self.host.record(" ".join(argv), effect)
        # A command is often the whole step (`command:`, `scripts:`), so without its own
        # timeout it gets what is left of the step's, not the per-write bound.
        limit = (
            self.host.time_left(3600.0)
            if timeout is None
            else min(timeout, self.host.time_left(timeout))
        )
        return run(argv, limit, stdin).stdout.decode(errors="replace")


class RecordedCommands(Commands):
    """The dry run's commands: queries run (on / only), changes are only recorded."""

    def run(
        self,
        argv: list[str],
        timeout: float | None = None,
        stdin: bytes | None = None,
        effect: str = "",
    ) -> str:
        self.host.record(" ".join(argv), effect)
        return ""
