"""Starting a program and collecting what it says, without the subprocess module.

subprocess (with selectors, signal and their own imports) was the largest single import
of a hook event that loads or unloads a module, under QEMU a seventh of the event. The
hook needs little of it: argv and an environment, stdin from bytes or /dev/null, stdout
and stderr on pipes (or stderr with stdout), optionally a session of its own, cwd /, no
descriptor of the hook's but those, and a deadline.

The child is forked and calls only os functions until it execs (another thread of the
hook may hold a lock that would never be released in the child); an exec that fails is
reported through a close-on-exec pipe, so start raises OSError as subprocess.Popen does.
"""

from __future__ import annotations

import errno
import os
import select
import time

_MAX_FD = 1 << 20


class Child:
    """A started program: its pid and the hook's ends of its pipes."""

    def __init__(self, pid: int, stdin: int | None, stdout: int, stderr: int | None):
        self.pid = pid
        self._stdin = stdin
        self._open = [fd for fd in (stdout, stderr) if fd is not None]
        self._fds = {fd: name for fd, name in ((stdout, "out"), (stderr, "err")) if fd is not None}
        self._output: dict[str, list[bytes]] = {"out": [], "err": []}
        self._status: int | None = None
        try:
            self._pidfd: int | None = os.pidfd_open(pid)
        except (AttributeError, OSError):  # kernels before 5.3: poll the exit instead
            self._pidfd = None

    def communicate(self, timeout: float, data: bytes = b"") -> tuple[int, bytes, bytes] | None:
        """Write data to its stdin (then close it), read its stdout and stderr to the end
        and wait for its exit: (exit status, stdout, stderr), the status negative for a
        signal as subprocess gives it; None when that has not all happened within timeout
        (the child runs on; kill() or abandon() it)."""
        end = time.monotonic() + timeout
        pending = data
        if self._stdin is not None and not pending:
            self._close_stdin()
        while self._open or self._stdin is not None or self._status is None:
            if self._status is None and self._exited():
                continue
            left = end - time.monotonic()
            if left <= 0:
                return None
            watch = list(self._open)
            if self._pidfd is not None and self._status is None:
                watch.append(self._pidfd)
            writers = [self._stdin] if self._stdin is not None else []
            if not watch and not writers:  # only the exit is left, and no pidfd to watch
                time.sleep(min(left, 0.005))
                continue
            readable, writable, _ = select.select(watch, writers, [], left)
            for fd in readable:
                if fd == self._pidfd:
                    self._exited()
                    continue
                chunk = os.read(fd, 1 << 16)
                if chunk:
                    self._output[self._fds[fd]].append(chunk)
                else:
                    self._open.remove(fd)
                    os.close(fd)
            if writable and self._stdin is not None:
                try:
                    pending = pending[os.write(self._stdin, pending[: 1 << 16]) :]
                except BrokenPipeError:
                    pending = b""  # it stopped reading: what it read is what it gets
                if not pending:
                    self._close_stdin()
        self._release_pidfd()
        assert self._status is not None
        return self._status, b"".join(self._output["out"]), b"".join(self._output["err"])

    def kill(self) -> None:
        """SIGKILL it and reap it (a command past its timeout)."""
        if self._status is None:
            try:
                os.kill(self.pid, 9)
            except ProcessLookupError:
                pass
            os.waitpid(self.pid, 0)
            self._status = -9
        self.abandon()

    def abandon(self) -> None:
        """Close the hook's ends of its pipes and stop watching it (a helper stuck in the
        kernel: it goes on, or stays there, on its own; its later output goes nowhere)."""
        for fd in self._open:
            os.close(fd)
        self._open = []
        self._close_stdin()
        self._release_pidfd()

    def _exited(self) -> bool:
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        if pid == 0:
            return False
        self._status = os.waitstatus_to_exitcode(status)
        self._release_pidfd()
        return True

    def _close_stdin(self) -> None:
        if self._stdin is not None:
            os.close(self._stdin)
            self._stdin = None

    def _release_pidfd(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None


def start(
    argv: list[str],
    env: dict[str, str] | None,
    *,
    stdin: bool = False,
    merge_stderr: bool = False,
    new_session: bool = False,
) -> Child:
    """Start argv[0] (a path: no PATH lookup) with env (None: the hook's own), cwd /,
    stdin a pipe (stdin=True) or /dev/null, stdout and stderr on pipes (stderr with
    stdout when merge_stderr), in a session of its own when new_session; no other
    descriptor of the hook."""
    environment = dict(os.environ) if env is None else env
    _fill_stdio()
    in_read, in_write = os.pipe() if stdin else (-1, -1)
    out_read, out_write = os.pipe()
    err_read, err_write = (-1, -1) if merge_stderr else os.pipe()
    report_read, report_write = os.pipe()  # close-on-exec: EOF once the exec succeeded
    pid = os.fork()
    if pid == 0:  # the child: os calls only, then exec
        code = errno.EIO
        try:
            if new_session:
                os.setsid()
            if stdin:
                os.dup2(in_read, 0)
            else:
                null = os.open(os.devnull, os.O_RDONLY)
                os.dup2(null, 0)
            os.dup2(out_write, 1)
            os.dup2(out_write if merge_stderr else err_write, 2)
            os.closerange(3, report_write)
            os.closerange(report_write + 1, _MAX_FD)
            os.chdir("/")
            os.execve(argv[0], argv, environment)
        except OSError as exc:
            code = exc.errno or errno.EIO
        finally:
            try:
                os.write(report_write, str(code).encode())
            finally:
                os._exit(127)
    for fd in (in_read, out_write, err_write, report_write):
        if fd >= 0:
            os.close(fd)
    report = b""
    while chunk := os.read(report_read, 64):
        report += chunk
    os.close(report_read)
    if report:  # the exec failed: reap the child, close its pipes, raise as Popen does
        os.waitpid(pid, 0)
        for fd in (in_write, out_read, err_read):
            if fd >= 0:
                os.close(fd)
        code = int(report)
        raise OSError(code, os.strerror(code), argv[0])
    return Child(
        pid,
        in_write if stdin else None,
        out_read,
        None if merge_stderr else err_read,
    )


def _fill_stdio() -> None:
    """A closed 0, 1 or 2 of the hook's becomes /dev/null, so no pipe made here gets that
    number (the child's dup2 onto 0-2 would overwrite it)."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)  # the lowest free descriptor: this one
