"""display_manager: stop the running display manager, wait until it is gone, start it on undo."""

import os
from pathlib import Path

import pytest
from fakecommands import install_fake_commands
from runs import LOG, hook
from toolbox import system_state

PROFILE = "prepare/begin:\n  - display_manager: stop\n"


@pytest.fixture
def book(kernel):
    return install_fake_commands(kernel)


def alive(pid: int) -> bool:
    return os.path.exists(f"/host/proc/{pid}/comm")


def test_stops_gdm_waits_for_it_and_release_starts_it(kernel, book):
    start = system_state(kernel)
    code, _, err = hook(kernel, "prepare", "begin", profile=PROFILE)
    assert code == 0, err
    assert book.calls == [["systemctl", "stop", "gdm3.service"]]
    # gdm3, and its GNOME session logged out: gnome-shell and Xwayland of session-2.scope
    assert not alive(1021) and not alive(1502) and not alive(1577)
    assert alive(1560) and alive(1490)  # pipewire and the user manager are user units: they stay
    log = Path(LOG).read_text()
    assert "systemctl stop gdm3.service   [gdm3.service: active → inactive]" in log
    assert (
        "wait until gdm3 (pid 1021), gnome-shell (pid 1502), Xwayland (pid 1577) have exited" in log
    )
    code, _, err = hook(kernel, "release", "end")
    assert code == 0, err
    assert book.calls[-1] == ["systemctl", "start", "gdm3.service"]
    assert system_state(kernel) == start


def test_graphical_sessions_are_stopped_first_when_asked(kernel, book):
    code, _, err = hook(
        kernel,
        "prepare",
        "begin",
        profile="prepare/begin:\n  - display_manager: {operation: stop, sessions: true}\n",
    )
    assert code == 0, err
    assert book.calls == [
        ["systemctl", "--user", "--machine=1000@.host", "stop", "graphical-session.target"],
        ["systemctl", "stop", "gdm3.service"],
    ]
    assert not alive(1502) and alive(1490)  # the user manager itself stays
    assert alive(1560)  # pipewire is not part of graphical-session.target


def test_a_stopped_display_manager_is_left_alone(kernel, book):
    book.end([p for p in book.processes() if p.comm == "gdm3"])
    code, _, err = hook(kernel, "prepare", "begin", profile=PROFILE)
    assert code == 0, err
    assert "gdm3.service is not running   [nothing to do]" in Path(LOG).read_text()
    code, _, err = hook(kernel, "release", "end")
    assert code == 0, err
    assert book.calls == []  # not stopped, so not started either


def test_without_the_alias_a_known_display_manager_is_found_by_its_process(kernel, book):
    os.unlink("/host/etc/systemd/system/display-manager.service")
    code, _, err = hook(kernel, "prepare", "begin", profile=PROFILE)
    assert code == 0, err
    assert book.calls == [["systemctl", "stop", "gdm3.service"]]


def test_no_display_manager_at_all_is_a_no_op(kernel, book):
    os.unlink("/host/etc/systemd/system/display-manager.service")
    book.end([p for p in book.processes() if p.comm == "gdm3"])
    code, _, err = hook(kernel, "prepare", "begin", profile=PROFILE)
    assert code == 0, err
    assert (
        "no display manager: no display-manager.service alias, and none of" in Path(LOG).read_text()
    )
    assert book.calls == []


def test_dry_run_shows_the_stop_and_the_wait(kernel, book):
    start = system_state(kernel)
    code, out, _ = hook(kernel, "prepare", "begin", profile=PROFILE, dry_run=True)
    assert code == 0, out
    assert "systemctl stop gdm3.service   [gdm3.service: active → inactive]" in out
    assert (
        "wait until gdm3 (pid 1021), gnome-shell (pid 1502), Xwayland (pid 1577) have exited   "
        "[up to 60 s]" in out
    )
    assert book.calls == [] and system_state(kernel) == start


def test_a_process_that_does_not_exit_fails_the_step_and_the_manager_is_started_again(kernel, book):
    book.stubborn.add(1577)
    code, _, err = hook(kernel, "prepare", "begin", profile=PROFILE + "    timeout: 0.3\n")
    assert code == 1
    assert "gdm3.service stopped but Xwayland (pid 1577) still run" in err
    assert "kill_holders" in err
    assert book.calls[-1] == ["systemctl", "start", "gdm3.service"]  # rolled back
    assert alive(1021)
