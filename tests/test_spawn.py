"""host/spawn.py: what the hook's commands get from it is what subprocess gave them.

Real processes of this machine's own Python (no device, nothing of the host touched)."""

from __future__ import annotations

import errno
import json
import os
import sys
import time

import pytest

from passthrough.host import spawn

PY = sys.executable
ENV = {"PATH": "/usr/bin:/bin", "LC_ALL": "C"}
# What the child sees of itself: its descriptors, session, directory and environment.
SELF = """
import json, os, sys
print(json.dumps({
    "fds": sorted(int(fd) for fd in os.listdir("/proc/self/fd")),
    "sid": os.getsid(0), "pid": os.getpid(), "cwd": os.getcwd(), "env": dict(os.environ),
    "stdin": sys.stdin.read(),
}))
"""


def finished(child: spawn.Child, timeout: float = 60, data: bytes = b"") -> tuple:
    result = child.communicate(timeout, data)
    assert result is not None, "the child did not finish"
    return result


def test_stdout_stderr_and_the_exit_status_come_back_apart():
    code = "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"
    assert finished(spawn.start([PY, "-c", code], ENV)) == (3, b"out\n", b"err\n")


def test_merged_output_keeps_its_order():
    code = "import sys\nfor i in range(3):\n print(i, flush=True); print('e', i, file=sys.stderr, flush=True)"
    status, out, err = finished(spawn.start([PY, "-c", code], ENV, merge_stderr=True))
    assert (status, out, err) == (0, b"0\ne 0\n1\ne 1\n2\ne 2\n", b"")


def test_the_child_has_only_its_stdio_its_own_session_and_cwd_root(tmp_path):
    held = os.open(tmp_path / "held", os.O_RDWR | os.O_CREAT)  # a descriptor of the hook's
    os.set_inheritable(held, True)  # even one that would be inherited
    try:
        child = spawn.start([PY, "-c", SELF], ENV, new_session=True)
        seen = json.loads(finished(child)[1])
    finally:
        os.close(held)
    assert seen["fds"] == [0, 1, 2, 3]  # 3: the listing's own directory descriptor
    assert seen["sid"] == seen["pid"] == child.pid
    assert seen["cwd"] == "/"
    assert seen["env"] == ENV
    assert seen["stdin"] == ""  # /dev/null


def test_without_a_new_session_the_child_stays_in_the_hooks():
    seen = json.loads(finished(spawn.start([PY, "-c", SELF], ENV))[1])
    assert seen["sid"] == os.getsid(0)


def test_a_large_input_and_output_do_not_deadlock():
    data = bytes(range(256)) * 8192  # 2 MiB each way, far past a pipe's 64 KiB
    code = "import sys; d = sys.stdin.buffer.read(); sys.stdout.buffer.write(d); sys.stderr.write(str(len(d)))"
    status, out, err = finished(spawn.start([PY, "-c", code], ENV, stdin=True), data=data)
    assert (status, out == data, err) == (0, True, str(len(data)).encode())


def test_a_child_that_stops_reading_its_input_is_not_an_error():
    code = "import sys; sys.stdin.close(); print('done')"
    child = spawn.start([PY, "-c", code], ENV, stdin=True)
    assert finished(child, data=b"x" * (1 << 22)) == (0, b"done\n", b"")


def test_a_signal_gives_a_negative_status_as_subprocess_does():
    code = "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"
    assert finished(spawn.start([PY, "-c", code], ENV))[0] == -15


def test_a_failed_exec_raises_as_popen_does(tmp_path):
    with pytest.raises(FileNotFoundError):
        spawn.start([str(tmp_path / "missing")], ENV)
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(PermissionError) as raised:
        spawn.start([str(script)], ENV)
    assert raised.value.errno == errno.EACCES and raised.value.filename == str(script)


def test_past_the_timeout_the_child_runs_on_until_killed():
    child = spawn.start([PY, "-c", "import time; time.sleep(600)"], ENV)
    started = time.monotonic()
    assert child.communicate(0.5) is None
    assert time.monotonic() - started < 60  # it returned instead of waiting for the child
    os.kill(child.pid, 0)  # still there
    child.kill()
    with pytest.raises(ProcessLookupError):
        os.kill(child.pid, 0)  # killed and reaped


def test_an_abandoned_child_is_left_alone():
    child = spawn.start([PY, "-c", "import time; time.sleep(600)"], ENV, new_session=True)
    assert child.communicate(0.2) is None
    child.abandon()
    os.kill(child.pid, 0)  # not killed
    os.kill(child.pid, 9)
    os.waitpid(child.pid, 0)


def test_the_wait_covers_a_grandchild_that_keeps_the_output_open():
    """As subprocess.communicate: the output ends when every writer closed it."""
    code = (
        "import os, time\n"
        "if os.fork() == 0:\n time.sleep(1); print('late', flush=True); os._exit(0)\n"
        "print('early', flush=True)"
    )
    status, out, _ = finished(spawn.start([PY, "-c", code], ENV))
    assert (status, out) == (0, b"early\nlate\n")


def test_a_closed_stdio_of_the_hook_is_not_handed_a_pipe():
    """Run in a child whose stdin is closed: the pipe made for the command's stdout must not
    become descriptor 0, where the command's /dev/null stdin would overwrite it."""
    code = (
        "import os, sys\n"
        "os.close(0)\n"
        "from passthrough.host import spawn\n"
        "child = spawn.start([sys.executable, '-c', 'print(42)'], None)\n"
        "print(child.communicate(60))\n"
    )
    env = {**ENV, "PYTHONPATH": os.path.dirname(os.path.dirname(spawn.__file__.rsplit("/", 1)[0]))}
    status, out, err = finished(spawn.start([PY, "-c", code], env))
    assert (status, out, err) == (0, b"(0, b'42\\n', b'')\n", b"")
