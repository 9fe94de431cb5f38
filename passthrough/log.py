"""Logging: every step with its duration and outcome to syslog (when /dev/log exists) and
to a log file; the terminal gets concise lines only. At DEBUG (`--debug`, or `log_level: debug`
in the domain's profile) the file also gets every operation of each step.

Not the `logging` package: libvirt runs the hook on every event and `logging` imports
traceback, linecache, tokenize, textwrap and string with it, for one file and one syslog
line per step. The file's lines are the ones `logging` wrote (`2026-12-01 13:02:41,123
[pid] INFO message`), each appended in one write so concurrent hooks never mix lines;
syslog gets `passthrough-hook[pid]: message` at INFO and above through libc's syslog().
"""

from __future__ import annotations

import os
import time

TYPE_CHECKING = False  # typing's constant, without importing typing (the hook's imports)
if TYPE_CHECKING:
    from typing import TextIO

LOGGER = "passthrough-hook"
DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40
_NAMES = {DEBUG: "DEBUG", INFO: "INFO", WARNING: "WARNING", ERROR: "ERROR"}
_SYSLOG_PRIORITIES = {INFO: 6, WARNING: 4, ERROR: 3}  # LOG_INFO, LOG_WARNING, LOG_ERR


class Log:
    """Where a run's messages go: the log file (if it could be opened) and syslog."""

    def __init__(self, file: TextIO | None, use_syslog: bool, level: int):
        self.file = file
        self.level = level
        self.syslog = None
        if use_syslog:
            import syslog

            syslog.openlog(LOGGER, syslog.LOG_PID, syslog.LOG_USER)
            self.syslog = syslog

    @property
    def path(self) -> str | None:
        return os.path.abspath(self.file.name) if self.file is not None else None

    def log(self, level: int, message: str, *args: object) -> None:
        if level < self.level:
            return
        text = message % args if args else message
        if self.file is not None:
            now = time.time()
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
            line = f"{stamp},{int(now * 1000) % 1000:03d} [{os.getpid()}] {_NAMES[level]} {text}\n"
            try:
                self.file.write(line)
                self.file.flush()
            except (OSError, ValueError):
                pass  # a full disk must not fail the step that is being logged
        if self.syslog is not None and level >= INFO:
            self.syslog.syslog(_SYSLOG_PRIORITIES[level], text)

    def debug(self, message: str, *args: object) -> None:
        self.log(DEBUG, message, *args)

    def info(self, message: str, *args: object) -> None:
        self.log(INFO, message, *args)

    def warning(self, message: str, *args: object) -> None:
        self.log(WARNING, message, *args)

    def error(self, message: str, *args: object) -> None:
        self.log(ERROR, message, *args)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


_current = Log(None, False, INFO)  # the last set up: where internal_error writes


def setup(log_file: str | os.PathLike | None, use_syslog: bool, level: int = INFO) -> Log:
    """The log for this run (a new one replaces the last: tests run many in one process)."""
    global _current
    _current.close()
    file = None
    if log_file is not None:
        try:
            os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
            file = open(log_file, "a", encoding="utf-8")  # noqa: SIM115 - closed by the next setup
        except OSError:
            pass  # not root on a read-only check; the terminal still gets the messages
    _current = Log(file, use_syslog and os.path.exists("/dev/log"), level)
    return _current


def internal_error(err: TextIO) -> int:
    """The error boundary's last case (a bug): the traceback goes to the log (or a file of
    its own when there is no log) and the person gets a pointer to it, not the traceback."""
    import traceback

    from .constants import PROG
    from .errors import EXIT_INTERNAL

    path = _current.path
    _current.error("internal error:\n%s", traceback.format_exc())
    if path is None:
        import tempfile

        fd, path = tempfile.mkstemp(prefix="passthrough-hook-crash-", suffix=".log")
        with os.fdopen(fd, "w") as handle:
            handle.write(traceback.format_exc())
    print(
        f"{PROG}: internal error (a bug, not your profile); the traceback is in {path}. "
        f"Please report it with that file.",
        file=err,
    )
    return EXIT_INTERNAL
