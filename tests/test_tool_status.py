"""`passthrough-hook status`: the journals a real run leaves, on the fake kernel."""

import json
import os

import pytest
from fakekernel import Killed
from runs import CONFIG, STATE, command, hook
from tool_trees import host_tree


def test_status_after_prepare_and_after_release(kernel):
    assert hook(kernel, "prepare", "begin", config=CONFIG)[0] == 0
    code, out, err = command("status", "--root", "/host")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].startswith("win10: holds 2 devices since ") and lines[0].endswith(
        f"(journal {STATE}/win10.json)"
    )
    assert lines[1:] == [
        "  gpu (0000:03:00.0): now vfio-pci, was amdgpu",
        "  gpu-audio (0000:03:00.1): now vfio-pci, was snd_hda_intel",
        "  BAR 2 of gpu (0000:03:00.0): set to 8 MiB, was 256 MiB",
        "  modules it loaded: vfio vfio_iommu_type1 vfio_pci",
    ]
    data = json.loads(command("status", "--root", "/host", "--json")[1])
    [win10] = data["domains"]
    assert [d["address"] for d in win10["devices"]] == ["0000:03:00.0", "0000:03:00.1"]
    assert win10["problems"] == [] and data["vfio_without_journal"] == []

    assert hook(kernel, "release", "end", config=CONFIG)[0] == 0
    assert command("status", "--root", "/host") == (
        0,
        f"No domain holds devices (no journals in {STATE}).\n",
        "",
    )


def test_a_hook_killed_mid_step_is_reported_with_recover(kernel):
    kernel.fail("libvirt detach 0000:03:00.1", "kill")
    with pytest.raises(Killed):
        hook(kernel, "prepare", "begin", config=CONFIG)
    code, out, _ = command("status", "--root", "/host")
    assert code == 1
    assert "  gpu (0000:03:00.0): now vfio-pci, was amdgpu" in out
    assert (
        "  gpu-audio (0000:03:00.1): on snd_hda_intel, as before" in out
    )  # journaled, killed before the change
    flat = " ".join(out.split())  # problems are wrapped to the terminal
    assert flat.count("PROBLEM") == 1
    assert (
        "PROBLEM (crashed): prepare/begin step 2 (detach gpu, gpu-audio to vfio-pci via libvirt, at "
        in flat
    )
    assert "was running when the hook stopped" in flat
    assert (
        "fix: run `passthrough-hook recover win10`: it undoes everything journaled for win10"
        in flat
    )


def test_a_running_step_of_a_live_process_is_not_a_crash(kernel):
    kernel.fail("libvirt detach 0000:03:00.1", "kill")
    with pytest.raises(Killed):
        hook(kernel, "prepare", "begin", config=CONFIG)
    os.makedirs(f"/host/proc/{os.getpid()}")  # the journal's pid is this test process
    code, out, _ = command("status", "--root", "/host")
    assert code == 0 and "PROBLEM" not in out


def test_a_failed_undo_is_reported(kernel):
    assert hook(kernel, "prepare", "begin", config=CONFIG)[0] == 0
    kernel.fail("libvirt reattach 0000:03:00.1", "libvirt", times=10)
    code, _, _ = hook(kernel, "release", "end", config=CONFIG)
    assert code == 1
    code, out, _ = command("status", "--root", "/host", "--json")
    [win10] = json.loads(out)["domains"]
    assert code == 1
    # The devices could not be given back, so the vfio modules that drive them stayed loaded too.
    assert [p["kind"] for p in win10["problems"]] == ["undo-failed", "undo-failed"]
    assert [p["message"].split(" (")[0] for p in win10["problems"]] == [
        "prepare/begin step 1",
        "prepare/begin step 2",
    ]
    assert all(p["message"].endswith("could not be undone") for p in win10["problems"])
    assert win10["problems"][1]["fix"] == (
        "find why in the log (/host/var/log/libvirt/passthrough-hook.log), fix "
        "that, then run `passthrough-hook recover win10`"
    )


def test_unreadable_journal_and_devices_on_vfio_without_one(tmp_path):
    root = host_tree(tmp_path, "demo")
    state = root / "run/passthrough-hook"
    state.mkdir(parents=True)
    (state / "win10.json").write_text("{not json")
    gpu = root / "sys/bus/pci/devices/0000:03:00.0"
    os.unlink(gpu / "driver")
    (root / "sys/bus/pci/drivers/vfio-pci").mkdir()
    os.symlink("../../../../bus/pci/drivers/vfio-pci", gpu / "driver")
    code, out, _ = command("status", "--root", root)
    assert code == 1
    assert out.splitlines()[0] == "win10: its journal cannot be read"
    assert f"PROBLEM (unreadable): {state}/win10.json: cannot read the journal" in " ".join(
        out.split()
    )
    assert out.splitlines()[-1] == (
        "On vfio-pci but in no journal (bound at boot by vfio-pci.ids, by another tool, or "
        "left by a lost journal): 0000:03:00.0 (VGA compatible controller, vfio-pci)"
    )


def test_other_actions_are_shown_by_what_their_undo_will_do(tmp_path, monkeypatch):
    from passthrough.actions import REGISTRY
    from passthrough.actions.base import Action

    class Hugepages(Action):
        name = "hugepages_for_test"

        @classmethod
        def describe_undo(cls, record):
            return f"set 2048 kB hugepages back to {record['before']}"

    monkeypatch.setitem(REGISTRY, Hugepages.name, Hugepages)
    root = host_tree(tmp_path, "demo")
    state = root / "run/passthrough-hook"
    state.mkdir(parents=True)
    entry = {
        "id": 1,
        "event": "prepare/begin",
        "step": 1,
        "action": "hugepages_for_test",
        "where": "w.yaml:3:5",
        "describe": "reserve 8192 hugepages of 2048 kB",
        "time": "2024-05-01T10:02:11+0200",
        "pid": 1,
        "status": "done",
        "record": {"before": 0},
    }
    (state / "win10.json").write_text(
        json.dumps({"format": 1, "domain": "win10", "entries": [entry]})
    )
    code, out, _ = command("status", "--root", root)
    assert code == 0
    assert out.splitlines()[1] == (
        "  prepare/begin step 1 (reserve 8192 hugepages of 2048 kB); undo: set 2048 kB "
        "hugepages back to 0"
    )
