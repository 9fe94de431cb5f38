"""kill_holders: end the allowed processes that hold a device; refuse to end any other."""

import os
from pathlib import Path

import hostdeps
import pytest
from fakecommands import install_fake_commands
from runs import LOG, hook
from toolbox import system_state

HOST = Path("/host")
GPU, AUDIO = "0000:03:00.0", "0000:03:00.1"
DEVICES = 'devices: {gpu: "0000:03:00.0", gpu-audio: "0000:03:00.1"}\n'
PROFILE = (
    DEVICES
    + "prepare/begin:\n  - kill_holders: {device: [gpu, gpu-audio], allow: [Xorg, pipewire]}\n"
)


@pytest.fixture
def book(kernel):
    hostdeps.add_process(HOST, 3100, "Xorg", files=["/dev/null", "/dev/dri/card1"])
    hostdeps.add_process(HOST, 3200, "pipewire", files=["/dev/snd/controlC1"])
    return install_fake_commands(kernel)


def alive(pid: int) -> bool:
    return os.path.exists(f"/host/proc/{pid}/comm")


def test_allowed_holders_are_ended_and_awaited(kernel, book):
    code, _, err = hook(kernel, "prepare", "begin", profile=PROFILE)
    assert code == 0, err
    assert book.calls == [["kill", "-s", "TERM", "--", "3100", "3200"]]
    assert not alive(3100) and not alive(3200) and alive(1502)
    log = Path(LOG).read_text()
    assert "kill -s TERM -- 3100 3200   [SIGTERM to Xorg (pid 3100), pipewire (pid 3200)]" in log
    assert "wait until Xorg (pid 3100), pipewire (pid 3200) have exited   [up to 10 s]" in log
    # Not undoable: release has nothing to do for it.
    code, _, err = hook(kernel, "release", "end")
    assert code == 0 and book.calls == [["kill", "-s", "TERM", "--", "3100", "3200"]]


def test_a_holder_not_allowed_is_named_and_nothing_is_ended(kernel, book):
    hostdeps.add_process(
        HOST, 3300, "vkcube", maps=["/sys/devices/pci0000:00/0000:00:03.1/0000:03:00.0/resource0"]
    )
    start = system_state(kernel)
    code, _, err = hook(kernel, "prepare", "begin", profile=PROFILE)
    assert code == 1
    assert (
        "refusing to end processes not in allow: vkcube (pid 3300) holds "
        "/sys/devices/pci0000:00/0000:00:03.1/0000:03:00.0/resource0 of gpu (0000:03:00.0)"
    ) in err
    assert "add their names to allow:" in err
    assert book.calls == [] and system_state(kernel) == start


def test_a_device_nobody_holds_is_a_no_op(kernel):
    book = install_fake_commands(kernel)
    code, _, err = hook(kernel, "prepare", "begin", profile=PROFILE)
    assert code == 0, err
    assert book.calls == []
    assert "no process holds 0000:03:00.0, 0000:03:00.1   [nothing to do]" in Path(LOG).read_text()


def test_a_process_that_ignores_the_signal_fails_the_step(kernel, book):
    book.stubborn.add(3100)
    code, _, err = hook(
        kernel,
        "prepare",
        "begin",
        profile=DEVICES + "prepare/begin:\n  - kill_holders: {device: gpu, allow: [Xorg], "
        "signal: INT, timeout: 0.2}\n",
    )
    assert code == 1
    assert (
        "Xorg (pid 3100) did not exit within 0.2 s of SIGINT (use signal: KILL, or a longer timeout)"
        in err
    )
    assert book.calls == [["kill", "-s", "INT", "--", "3100"]]


def test_dry_run_names_the_signal_and_ends_nothing(kernel, book):
    start = system_state(kernel)
    code, out, _ = hook(kernel, "prepare", "begin", profile=PROFILE, dry_run=True)
    assert code == 0, out
    assert (
        "1. end the processes holding gpu (0000:03:00.0), gpu-audio (0000:03:00.1) (allowed: Xorg, pipewire)"
        in out
    )
    assert "kill -s TERM -- 3100 3200   [SIGTERM to Xorg (pid 3100), pipewire (pid 3200)]" in out
    assert book.calls == [] and system_state(kernel) == start


@pytest.mark.parametrize(
    "step,message",
    [
        ("{device: gpu}", 'kill_holders needs "allow"'),
        (
            "{device: gpu, allow: [Xorg], signal: STOP}",
            '"STOP" is not one of TERM, INT, HUP, QUIT, KILL',
        ),
        ("{device: gpu, allow: [xdg-desktop-portal-gnome]}", "at most 15 characters"),
    ],
)
def test_arguments_are_validated(kernel, step, message):
    code, _, err = hook(
        kernel, "prepare", "begin", profile=DEVICES + f"prepare/begin:\n  - kill_holders: {step}\n"
    )
    assert code == 2 and message in err
