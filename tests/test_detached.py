"""The detached writer (passthrough/host/detached.py) on real files, without the fake kernel.

A FIFO nobody reads stands for a kernel write that does not return: opening it for writing
blocks the helper until a reader comes, and nothing the hook does can interrupt that.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from passthrough.host import detached

REPO = Path(__file__).resolve().parent.parent


def test_a_write_that_returns_gives_the_kernels_answer(tmp_path):
    target = tmp_path / "driver_override"
    target.write_text("old\n")
    assert detached.run(detached.writer(str(target), b"vfio-pci\n"), 30, "writing") == 0
    assert target.read_text() == "vfio-pci\n"
    missing = str(tmp_path / "no" / "unbind")
    assert detached.run(detached.writer(missing, b"x"), 30, "writing") == errno.ENOENT


def _release(fifo: Path) -> None:
    """Be the reader the blocked helper waits for, so it finishes and exits."""
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    os.close(fd)


def test_a_write_that_does_not_return_leaves_a_detached_helper(tmp_path):
    fifo = tmp_path / "unbind"
    os.mkfifo(fifo)
    with pytest.raises(detached.StuckWrite) as caught:
        detached.run(detached.writer(str(fifo), b"0000:01:00.0"), 1, "writing to unbind")
    pid = caught.value.pid
    try:
        assert f"helper pid {pid} still waits there" in str(caught.value)
        assert "writing to unbind did not return within 1.0 s" in str(caught.value)
        stat = Path(f"/proc/{pid}/stat").read_text()
        assert detached.process_state(stat, detached.start_time(stat)) != "gone"
        # Its own session, stdio on /dev/null, and nothing else of ours but the answer pipe.
        assert os.getsid(pid) == pid
        fds = {int(fd): os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
        assert [fds[fd] for fd in (0, 1, 2)] == ["/dev/null"] * 3
        assert all(target.startswith("pipe:") for fd, target in fds.items() if fd > 2)
        assert len(fds) == 4
    finally:
        _release(fifo)
        os.waitpid(pid, 0)
    assert detached.process_state(None, None) == "gone"


def test_a_caller_waiting_for_stdout_and_stderr_to_close_is_not_held(tmp_path):
    """As libvirt runs the hook: it reads the hook's stdout and stderr until both close.
    The hook gives up on a stuck write and exits; its helper must not keep them open."""
    fifo = tmp_path / "unbind"
    os.mkfifo(fifo)
    program = (
        "import sys\n"
        "sys.path.insert(0, sys.argv[2])\n"
        "from passthrough.host import detached\n"
        "try:\n"
        "    detached.run(detached.writer(sys.argv[1], b'x'), 1, 'writing to unbind')\n"
        "except detached.StuckWrite as exc:\n"
        "    print(exc.pid)\n"
        "    print(exc, file=sys.stderr)\n"
        "    sys.exit(1)\n"
    )
    started = time.monotonic()
    hook = subprocess.run(
        [sys.executable, "-I", "-c", program, str(fifo), str(REPO)],
        capture_output=True,
        text=True,
        timeout=60,  # communicate() returns only once stdout and stderr are closed
    )
    elapsed = time.monotonic() - started
    helper = int(hook.stdout.split()[0])
    try:
        assert hook.returncode == 1
        assert "it is stuck in the kernel" in hook.stderr
        assert elapsed < 30
        assert _state(helper) != "gone"
    finally:
        _release(fifo)
    deadline = time.monotonic() + 30
    while _state(helper) != "gone" and time.monotonic() < deadline:
        time.sleep(0.05)  # it finishes its write and exits (a zombie until init reaps it)
    assert _state(helper) == "gone"


def _state(pid: int) -> str:
    try:
        return detached.process_state(Path(f"/proc/{pid}/stat").read_text(), None)
    except FileNotFoundError:
        return "gone"


def test_process_state_reads_proc_stat():
    stat = "812 (python3) S 1 812 812 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 7777 12 13"
    assert detached.start_time(stat) == 7777
    assert detached.process_state(stat, 7777) == "S"
    assert detached.process_state(stat, 7778) == "gone"  # the pid now names another process
    assert detached.process_state(stat.replace(") S", ") Z"), 7777) == "gone"
    assert detached.process_state("", None) == "gone"


def test_a_bounded_read_gives_the_content_or_names_the_stuck_helper(tmp_path):
    target = tmp_path / "driver_override"
    target.write_bytes(b"vfio-pci\n")
    assert detached.read(str(target), 30, "reading") == b"vfio-pci\n"
    with pytest.raises(OSError) as missing:
        detached.read(str(tmp_path / "absent"), 30, "reading")
    assert missing.value.errno == errno.ENOENT
    fifo = tmp_path / "locked"
    os.mkfifo(fifo)  # reading it blocks until a writer comes, as a read on a locked device
    with pytest.raises(detached.StuckWrite) as caught:
        detached.read(str(fifo), 0.5, "reading driver_override")
    assert f"helper pid {caught.value.pid} still waits there" in str(caught.value)
    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    os.waitpid(caught.value.pid, 0)


def test_a_command_that_does_not_return_is_left_running_on_its_own_stdio(tmp_path):
    """`modprobe -r` stuck in the kernel, played by a program blocked on a FIFO: the caller
    gets StuckWrite with its pid; the program has its own session, stdin on /dev/null, its
    own pipe for stdout and stderr (never the caller's), and goes on once let go."""
    code, output = detached.command(
        [sys.executable, "-c", "import sys; print('out'); sys.exit('FATAL: in use')"],
        30,
        "a command",
        env=None,
    )
    assert (code, output.split()) == (1, ["out", "FATAL:", "in", "use"])
    fifo = tmp_path / "unbind"
    os.mkfifo(fifo)
    program = f"open({str(fifo)!r}, 'w').write('x')"
    with pytest.raises(detached.StuckWrite) as caught:
        detached.command([sys.executable, "-c", program], 0.5, "`modprobe -r vfio_pci`", env=None)
    pid = caught.value.pid
    try:
        assert str(caught.value).startswith("`modprobe -r vfio_pci` did not return within 0.5 s")
        assert os.getsid(pid) == pid
        fds = {fd: os.readlink(f"/proc/{pid}/fd/{fd}") for fd in (0, 1, 2)}
        assert fds[0] == "/dev/null"
        assert fds[1] == fds[2] and fds[1].startswith("pipe:")
        assert fds[1] not in {os.readlink(f"/proc/self/fd/{fd}") for fd in (0, 1, 2)}
    finally:
        with open(fifo) as reader:  # the kernel lets go: the write completes
            assert reader.read() == "x"
    deadline = time.monotonic() + 30
    while _state(pid) != "gone" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _state(pid) == "gone"


def test_sysfs_writes_share_one_helper_while_it_answers(tmp_path):
    first, second = tmp_path / "driver_override", tmp_path / "drivers_probe"
    first.write_text("")
    second.write_text("")
    assert detached.write(str(first), b"vfio-pci\n", 30, "writing") == 0
    helper = detached._writer
    assert helper is not None
    assert detached.write(str(second), b"0000:03:00.0", 30, "writing") == 0
    assert detached._writer is helper  # the same process made both writes
    assert (first.read_text(), second.read_text()) == ("vfio-pci\n", "0000:03:00.0")
    missing = str(tmp_path / "no" / "unbind")
    assert detached.write(missing, b"x", 30, "writing") == errno.ENOENT
    assert detached._writer is helper
    # Detached as the one-write helpers are: its own session, stdio on /dev/null.
    assert os.getsid(helper.pid) == helper.pid
    assert [os.readlink(f"/proc/{helper.pid}/fd/{fd}") for fd in (0, 1, 2)] == ["/dev/null"] * 3


def test_a_stuck_sysfs_write_leaves_its_helper_and_the_next_write_gets_another(tmp_path):
    fifo = tmp_path / "unbind"
    os.mkfifo(fifo)
    target = tmp_path / "driver_override"
    target.write_text("")
    assert detached.write(str(target), b"a\n", 30, "writing") == 0
    with pytest.raises(detached.StuckWrite) as caught:
        detached.write(str(fifo), b"0000:01:00.0", 1, "writing to unbind")
    stuck = caught.value.pid
    try:
        assert "writing to unbind did not return within 1.0 s" in str(caught.value)
        assert f"helper pid {stuck} still waits there" in str(caught.value)
        assert detached.write(str(target), b"b\n", 30, "writing") == 0
        assert detached._writer is not None and detached._writer.pid != stuck
        assert target.read_text() == "b\n"
        stat = Path(f"/proc/{stuck}/stat").read_text()
        assert detached.process_state(stat, detached.start_time(stat)) != "gone"
    finally:
        _release(fifo)
        os.waitpid(stuck, 0)  # once the kernel lets it go it finds nobody to answer, and exits


def test_the_writer_helper_exits_with_the_hook(tmp_path):
    """A hook process that made writes exits; its helper follows, holding nothing of it."""
    target = tmp_path / "bind"
    target.write_text("")
    program = (
        "import sys\n"
        "sys.path.insert(0, sys.argv[2])\n"
        "from passthrough.host import detached\n"
        "assert detached.write(sys.argv[1], b'x', 30, 'writing') == 0\n"
        "print(detached._writer.pid)\n"
    )
    hook = subprocess.run(
        [sys.executable, "-I", "-c", program, str(target), str(REPO)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert hook.returncode == 0, hook.stderr
    helper = int(hook.stdout)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        stat = Path(f"/proc/{helper}/stat")
        state = detached.process_state(stat.read_text() if stat.exists() else None, None)
        if state == "gone":
            break
        time.sleep(0.05)
    assert state == "gone"
    assert target.read_text() == "x"
