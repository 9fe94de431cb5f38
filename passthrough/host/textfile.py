"""Reading a kernel file as text, the way open(path, encoding="utf-8", errors="replace")
reads it, with os calls only: sysfs and procfs reads are hundreds per event, and under
QEMU a file object for each was a good part of the hook's own time."""

from __future__ import annotations

import os


def read(path: str) -> str | None:
    """The whole text of path (undecodable bytes replaced, newlines as text mode reads
    them), or None when it cannot be opened or read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
    except OSError:
        return None
    finally:
        os.close(fd)
    text = b"".join(chunks).decode("utf-8", errors="replace")
    return text.replace("\r\n", "\n").replace("\r", "\n")
