"""Kernel writes that can block for ever, run in a helper process detached from libvirt.

Unbinding a device a process still holds waits in the kernel (vfio_unregister_group_dev)
until that process lets go: interruptibly at first, uninterruptibly once a signal came.
A thread stuck there keeps the whole hook from exiting, and libvirt waits until the
hook's stdout and stderr close. So such writes (unbind, bind, drivers_probe, remove,
rescan, resourceN_resize) run in a forked helper: its own session, stdin/stdout/stderr on
/dev/null and no other descriptor of the hook (no libvirt pipe, no state lock), reporting
the kernel's answer through a pipe. When it does not answer in time the hook stops
waiting, reports the device as stuck and exits; the helper finishes, or stays in the
kernel, on its own.

Sysfs writes go to one writer helper, forked at the first and reused while it answers
(a fork per write made every page the hook touched after it a copy, which under QEMU cost
more than the write); a write that does not return leaves that helper in the kernel and
the next write forks another. Forked after the imports, never a new interpreter. A helper
calls only os functions and leaves with os._exit: another thread may hold a lock
(logging, stdio) that would never be released in the child. Programs that can wait in the kernel
(`modprobe -r`, a libvirt node-device call) run the same way through `command`: their own
session and stdio, never waited for past the timeout. `read` is the bounded read of an
attribute whose read takes the device lock.
"""

from __future__ import annotations

import errno
import os
import select
import time

from ..errors import StepTimeout

TYPE_CHECKING = False  # typing's constant, without importing typing (the hook's imports)
if TYPE_CHECKING:
    from collections.abc import Callable

# The answer when the helper died without one (killed by a signal).
NO_ANSWER = -1


class StuckWrite(StepTimeout):
    """A detached write did not return in time: the helper (pid) still waits in the kernel."""

    def __init__(
        self, message: str, *, pid: int, device: str | None = None, timeout: float = 0.0
    ) -> None:
        self.pid = pid
        self.timeout = timeout
        super().__init__(message, device=device)

    @classmethod
    def of(cls, pid: int, what: str, timeout: float) -> StuckWrite:
        """The helper `pid` doing `what` has not answered within timeout."""
        return cls(
            f"{what} did not return within {timeout:.1f} s: it is stuck in the kernel "
            f"(helper pid {pid} still waits there)",
            pid=pid,
            timeout=timeout,
        )


def writer(path: str, value: bytes) -> Callable[[], int]:
    """The helper's job for one sysfs write, as `echo value > path` does it: 0 or the errno."""

    def job() -> int:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
        except OSError as exc:
            return exc.errno or errno.EIO
        try:
            os.write(fd, value)
        except OSError as exc:
            return exc.errno or errno.EIO
        finally:
            try:
                os.close(fd)
            except OSError:
                pass
        return 0

    return job


class _Writer:
    """One forked helper that makes sysfs writes in turn for the hook, answering each with
    0 or the errno. A write that does not return in time leaves it in the kernel; it is
    dropped (never waited for, never sent anything again) and the next write forks a new
    one. It exits when the hook closes its end of the request pipe (when the hook exits)."""

    def __init__(self) -> None:
        requests_read, self.requests = os.pipe()
        self.answers, answers_write = os.pipe()
        self.owner = os.getpid()
        self.pid = os.fork()
        if self.pid == 0:  # the helper
            try:
                _detach(requests_read, (answers_write,))
                _serve(requests_read, answers_write)
            finally:
                os._exit(0)
        os.close(requests_read)
        os.close(answers_write)

    def write(self, path: str, value: bytes, timeout: float) -> bytes | None:
        """The helper's answer, or None when it has none within timeout."""
        request = path.encode() + b"\0" + value
        header = len(request).to_bytes(4, "big")
        try:
            _write_all(self.requests, header + request)
        except OSError:
            return b""  # it is gone (killed): no answer
        answer = _read_answer(self.answers, timeout, line=True)
        return None if answer is None else answer.strip()

    def close(self) -> None:
        for fd in (self.requests, self.answers):
            try:
                os.close(fd)
            except OSError:
                pass


_writer: _Writer | None = None


def write(path: str, value: bytes, timeout: float, what: str) -> int:
    """`echo value > path` in the hook's writer helper (forked once, reused while it
    answers): 0 or the kernel's errno, NO_ANSWER when the helper died without one. Raises
    StuckWrite when there is no answer within timeout; the helper stays in the kernel on
    its own and the next write gets a new one."""
    global _writer
    if _writer is None or _writer.owner != os.getpid():
        _writer = _Writer()
    helper = _writer
    answer = helper.write(path, value, timeout)
    if answer is None:
        helper.close()
        _writer = None
        raise StuckWrite.of(helper.pid, what, timeout)
    if not answer:  # it died: reap it, and the next write forks another
        helper.close()
        os.waitpid(helper.pid, 0)
        _writer = None
        return NO_ANSWER
    return int(answer)


def _serve(requests: int, answers: int) -> None:
    """In the writer helper: each request is a 4-byte length, the path, NUL, the value."""
    while True:
        header = _read_exactly(requests, 4)
        if len(header) < 4:
            return  # the hook closed the pipe: it is done
        request = _read_exactly(requests, int.from_bytes(header, "big"))
        path, _, value = request.partition(b"\0")
        code = writer(path.decode(), value)()
        _write_all(answers, b"%d\n" % code)


def _read_exactly(fd: int, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


def run(job: Callable[[], int], timeout: float, what: str, keep_fds: tuple[int, ...] = ()) -> int:
    """Run job in a detached helper process; its answer (0 or an errno), or NO_ANSWER when
    the helper died without one. Raises StuckWrite when there is none within timeout.
    keep_fds: descriptors the job needs besides /dev/null (the tests' fake kernel)."""
    answer = _run(lambda: str(job()).encode(), timeout, what, keep_fds)
    return int(answer) if answer else NO_ANSWER


def read(path: str, timeout: float, what: str, limit: int = 64 * 1024) -> bytes:
    """The first `limit` bytes of a file, read in a detached helper: a sysfs attribute whose
    read takes the device lock (driver_override) waits as long as a write stuck on that
    device does. Raises OSError with the kernel's errno, StuckWrite when there is no answer
    within timeout."""

    def job() -> bytes:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            return str(exc.errno or errno.EIO).encode()
        try:
            return b"0 " + os.read(fd, limit)
        except OSError as exc:
            return str(exc.errno or errno.EIO).encode()
        finally:
            try:
                os.close(fd)
            except OSError:
                pass

    answer = _run(job, timeout, what, ())
    code, _, data = answer.partition(b" ")
    if not code:
        raise OSError(errno.EIO, f"the helper reading {path} died without an answer")
    if code != b"0":
        raise OSError(int(code), os.strerror(int(code)))
    return data


def _run(job: Callable[[], bytes], timeout: float, what: str, keep_fds: tuple[int, ...]) -> bytes:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the helper
        try:
            _detach(write_end, keep_fds)
            _write_all(write_end, job())
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        answer = _read_answer(read_end, timeout)
    finally:
        os.close(read_end)
    if answer is None:
        raise StuckWrite.of(pid, what, timeout)
    os.waitpid(pid, 0)  # it has answered, so it is exiting now
    return answer


def command(
    argv: list[str], timeout: float, what: str, env: dict[str, str] | None
) -> tuple[int, str]:
    """Run a program that can wait in the kernel (`modprobe -r`, a libvirt call) as a
    detached helper: its own session, stdin on /dev/null, stdout and stderr on a pipe of
    its own (never libvirt's), no other descriptor of the hook. (exit status, its output)
    once it exits; StuckWrite when it has not within timeout: the hook stops waiting and
    the helper goes on, or stays in the kernel, on its own (never killed: a process in the
    kernel's uninterruptible wait cannot be, and a signal turns vfio's wait uninterruptible)."""
    from . import spawn

    child = spawn.start(argv, env, merge_stderr=True, new_session=True)
    finished = child.communicate(timeout)
    if finished is None:
        child.abandon()  # its later output goes nowhere; it is not waited for
        raise StuckWrite.of(child.pid, what, timeout)
    code, output, _ = finished
    return code, output.decode(errors="replace")


def _detach(keep: int, keep_fds: tuple[int, ...]) -> None:
    """In the helper: a session of its own, stdio on /dev/null, every other descriptor
    closed (libvirt's pipes, the state lock, the log), so nothing waits on this process."""
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    kept = sorted({keep, *keep_fds})
    low = 3
    for fd in kept:
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 20)


def _read_answer(fd: int, timeout: float, line: bool = False) -> bytes | None:
    """All the helper wrote before closing the pipe, or with line=True its answer up to the
    first newline (the writer helper keeps its pipe open for the next request); b"" if it
    died without an answer, None when there is none within timeout."""
    end = time.monotonic() + timeout
    data = b""
    while not (line and data.endswith(b"\n")):
        left = end - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            return None
        chunk = os.read(fd, 1 << 16)
        if not chunk:  # the helper closed the pipe: it answered, or died
            return b"" if line else data
        data += chunk
    return data


def process_state(stat: str | None, started: int | None) -> str:
    """From the text of /proc/<pid>/stat: "gone" (no such process, a zombie, or another
    process that reuses the pid), or the state letter (S, D...) of a live helper."""
    if not stat or ")" not in stat:
        return "gone"
    fields = stat.rsplit(")", 1)[1].split()
    if not fields or fields[0] in ("Z", "X", "x"):
        return "gone"
    if started is not None and len(fields) > 19 and fields[19] != str(started):
        return "gone"
    return fields[0]


def start_time(stat: str | None) -> int | None:
    """The start time (clock ticks after boot) in /proc/<pid>/stat: with the pid, it names
    one process for good."""
    if not stat or ")" not in stat:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[19]) if len(fields) > 19 and fields[19].isdigit() else None


def since(record: dict) -> str:
    """When a stuck record's write started, as HH:MM:SS for messages ("" if not known)."""
    return str(record.get("since", "?"))[11:19]


def subject(record: dict) -> str:
    """What a stuck record is about, in messages: the device's address, or `module NAME`."""
    if record.get("module"):
        return f"module {record['module']}"
    return str(record.get("address", "?"))
