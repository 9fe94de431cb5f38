"""passthrough/state.py: the state directory, its lock, and who holds which device."""

import json
import stat
import threading
from pathlib import Path

import pytest

from passthrough.state import StateDir, StateError, check_ownership


def journal(state, domain, entries):
    state.ensure()
    (Path(state.path) / f"{domain}.json").write_text(
        json.dumps({"format": 1, "domain": domain, "entries": entries})
    )


def detach_entry(address, time="2026-12-01T12:03:00+0000"):
    return {
        "id": 1,
        "event": "prepare/begin",
        "step": 2,
        "action": "detach",
        "time": time,
        "status": "done",
        "record": {
            "devices": [{"address": address, "before": {"driver": "amdgpu"}, "changed": True}]
        },
    }


def test_the_directory_is_root_only(tmp_path):
    state = StateDir(tmp_path / "run")
    state.ensure()
    assert stat.S_IMODE(Path(state.path).stat().st_mode) == 0o700
    Path(state.path).chmod(0o755)
    state.ensure()
    assert stat.S_IMODE(Path(state.path).stat().st_mode) == 0o700


def test_a_device_another_domain_holds_is_refused_by_name(tmp_path):
    state = StateDir(tmp_path / "run")
    journal(state, "win11", [detach_entry("0000:03:00.0")])
    check_ownership(state, "win10", ["0000:04:00.0"])  # another device: fine
    check_ownership(state, "win11", ["0000:03:00.0"])  # its own: fine
    with pytest.raises(StateError) as caught:
        check_ownership(state, "win10", ["0000:03:00.0"])
    assert str(caught.value) == (
        "0000:03:00.0 is held by domain win11 since 12:03; stop win11 first "
        "(or, if it is not running, `passthrough-hook recover win11`)"
    )


def test_a_broken_journal_proves_no_ownership(tmp_path):
    state = StateDir(tmp_path / "run")
    state.ensure()
    (Path(state.path) / "win11.json").write_text("{broken")
    check_ownership(state, "win10", ["0000:03:00.0"])
    check_ownership(StateDir(tmp_path / "absent"), "win10", ["0000:03:00.0"])


def test_the_lock_serializes_runs_and_names_the_holder(tmp_path):
    state = StateDir(tmp_path / "run")
    held, release = threading.Event(), threading.Event()

    def holder():
        with state.lock("win11", "prepare/begin"):
            held.set()
            release.wait(30)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert held.wait(30)
        with (
            pytest.raises(
                StateError,
                match=r"another passthrough-hook run \(pid \d+, win11 prepare/begin\) "
                r"has held .*/lock for over 0 s",
            ),
            state.lock("win10", "prepare/begin", timeout=0.05),
        ):
            pass
    finally:
        release.set()
        thread.join()
    with state.lock("win10", "prepare/begin", timeout=5):
        pass
    assert stat.S_IMODE(Path(state.path).stat().st_mode) == 0o700  # the lock made the directory
