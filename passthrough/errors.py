"""Error types. Each one carries a message meant for a person, never a traceback.

Exit codes (see cli.main): 0 ok, 1 an action failed (rolled back), 2 a profile or
usage error (nothing was touched), 3 an unexpected internal error (see the log),
130 interrupted.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130


class PassthroughError(Exception):
    """An expected failure: its message is printed as is and the exit code is `exit_code`."""

    exit_code = EXIT_FAILED


class UsageError(PassthroughError):
    exit_code = EXIT_USAGE


class ProfileError(PassthroughError):
    """One or more problems in a profile, each already prefixed with FILE:LINE:COL."""

    exit_code = EXIT_USAGE

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class HostError(PassthroughError):
    """The host refused or failed an operation (sysfs write, libvirt call, command)."""

    def __init__(self, message: str, *, device: str | None = None, hint: str | None = None):
        self.device = device
        self.hint = hint
        text = f"{device}: {message}" if device else message
        if hint:
            text += f" ({hint})"
        super().__init__(text)


class StepTimeout(HostError):
    """A bounded operation did not finish in time."""


class UnsafeOperation(PassthroughError):
    """An operation the program refuses to do (outside the allowed paths, on the real host
    with --root, ...)."""

    exit_code = EXIT_USAGE
