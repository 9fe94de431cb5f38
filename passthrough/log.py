"""Logging: every step with its duration and outcome to syslog (when /dev/log exists) and
to a log file; the terminal gets concise lines only. At DEBUG (`--debug`, or `log_level: debug`
in the domain's profile) the file also gets every operation of each step."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TextIO

LOGGER = "passthrough-hook"


def setup(log_file: Path | None, use_syslog: bool, level: int = logging.INFO) -> logging.Logger:
    logger = logging.getLogger(LOGGER)
    logger.setLevel(level)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    if log_file is not None:
        try:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(log_file, encoding="utf-8")
        except OSError:
            pass  # not root on a read-only check; the terminal still gets the messages
        else:
            handler.setFormatter(
                logging.Formatter("%(asctime)s [%(process)d] %(levelname)s %(message)s")
            )
            logger.addHandler(handler)
    if use_syslog and os.path.exists("/dev/log"):
        from logging.handlers import (
            SysLogHandler,
        )  # only here: it imports socket, pickle, queue (~4 ms)

        try:
            handler = SysLogHandler(address="/dev/log")
        except OSError:
            pass
        else:
            handler.setFormatter(logging.Formatter("passthrough-hook[%(process)d]: %(message)s"))
            handler.setLevel(logging.INFO)
            logger.addHandler(handler)
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
    return logger


def log_path(logger: logging.Logger) -> str | None:
    for handler in logger.handlers:
        if isinstance(handler, logging.FileHandler):
            return handler.baseFilename
    return None


def internal_error(err: TextIO) -> int:
    """The error boundary's last case (a bug): the traceback goes to the log (or a file of
    its own when there is no log) and the person gets a pointer to it, not the traceback."""
    import traceback

    from .constants import PROG
    from .errors import EXIT_INTERNAL

    logger = logging.getLogger(LOGGER)
    path = log_path(logger)
    logger.error("internal error:\n%s", traceback.format_exc())
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
