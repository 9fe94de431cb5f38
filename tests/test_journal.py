"""passthrough/journal.py: the per-domain JSON journal, written after every change."""

import json
import os
import stat

import pytest

from passthrough.journal import FORMAT, Journal, JournalError, action_of, held_by
from passthrough.profile import parse_profile

PROFILE = parse_profile(
    b'devices: {gpu: "0000:03:00.0", gpu-audio: "0000:03:00.1"}\n'
    b"prepare/begin:\n  - detach: [gpu, gpu-audio]\n"
    b"  - resize_bar: {device: gpu, bar: 2, size: 8MiB}\n",
    "win10.yaml",
)
DETACH, RESIZE = PROFILE.events["prepare/begin"]


def detached(address, changed=True):
    return {
        "address": address,
        "before": {"driver": "amdgpu", "override": None},
        "changed": changed,
    }


def test_every_change_is_on_disk_at_once_and_the_file_goes_when_empty(tmp_path):
    journal = Journal.load(tmp_path, "win10")
    entry = journal.begin("prepare/begin", DETACH, "detach gpu")
    on_disk = json.loads((tmp_path / "win10.json").read_text())
    assert on_disk["format"] == FORMAT and on_disk["domain"] == "win10"
    assert on_disk["entries"][0] | {"time": "-"} == {
        "id": 1,
        "event": "prepare/begin",
        "step": 1,
        "action": "detach",
        "where": "win10.yaml:3:5",
        "describe": "detach gpu",
        "time": "-",
        "pid": os.getpid(),
        "status": "running",
        "record": {},
    }
    journal.update(entry, {"devices": [detached("0000:03:00.0")]}, status="done")
    again = Journal.load(tmp_path, "win10")
    assert again.entries[0]["status"] == "done" and again.devices() == {"0000:03:00.0"}
    assert stat.S_IMODE((tmp_path / "win10.json").stat().st_mode) == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    again.remove(again.entries[0])
    assert not (tmp_path / "win10.json").exists()


def test_ids_grow_and_events_are_kept_apart(tmp_path):
    journal = Journal.load(tmp_path, "win10")
    first = journal.begin("prepare/begin", DETACH, "detach")
    second = journal.begin("release/end", RESIZE, "resize")
    assert (first["id"], second["id"]) == (1, 2)
    assert journal.for_event("release/end") == [second]
    assert journal.for_event(None) == [first, second]


def test_each_action_names_what_its_records_hold():
    detach = {
        "action": "detach",
        "record": {"devices": [detached("0000:03:00.0"), detached("0000:03:00.1", False)]},
    }
    resize = {
        "action": "resize_bar",
        "record": {"address": "0000:03:00.0", "bar": 2, "changed": True},
    }
    unchanged = {"action": "resize_bar", "record": {"address": "0000:04:00.0", "changed": False}}
    modules = {"action": "modprobe", "record": {"loaded": ["vfio_pci"]}}
    assert held_by(detach) == ["0000:03:00.0"]
    assert held_by(resize) == ["0000:03:00.0"] and held_by(unchanged) == []
    assert held_by(modules) == []
    assert action_of(modules).held_changes(modules["record"]) == {"modules": ["vfio_pci"]}


def test_an_action_this_version_does_not_know_holds_nothing_and_does_not_crash():
    entry = {"action": "from_the_future", "record": {"address": "0000:03:00.0", "changed": True}}
    assert action_of(entry).name == "unknown"
    assert held_by(entry) == [] and action_of(entry).held_changes(entry["record"]) == {}


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "cannot read the journal"),
        ('{"format": 99, "entries": []}', "not a journal of format 1"),
        ('{"format": 1, "entries": {}}', "not a journal of format 1"),
        ("[]", "not a journal of format 1"),
    ],
)
def test_an_unreadable_journal_is_an_error_that_says_what_to_do(tmp_path, content, message):
    (tmp_path / "win10.json").write_text(content)
    with pytest.raises(JournalError, match=message):
        Journal.load(tmp_path, "win10")


def test_the_dry_runs_journal_lives_in_memory(tmp_path):
    on_disk = Journal.load(tmp_path, "win10")
    on_disk.begin("prepare/begin", DETACH, "detach")
    copy = Journal.in_memory(on_disk)
    copy.begin("prepare/begin", RESIZE, "resize")
    copy.clear()
    assert len(Journal.load(tmp_path, "win10").entries) == 1
    assert Journal.load(None, "win10").path is None
