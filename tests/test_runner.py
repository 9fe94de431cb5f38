"""passthrough/runner.py called directly on the fake kernel: steps in order, the journal
after each, rollback in reverse on failure, undo that reports what it could not restore."""

from hosts import SEED_PROFILE

from passthrough.journal import Journal
from passthrough.profile import parse_profile
from passthrough.runner import Runner

GPU, AUDIO = "0000:03:00.0", "0000:03:00.1"


def runner(kernel, text=SEED_PROFILE, journal=None):
    profile = parse_profile(text.encode(), "win10.yaml")
    host = kernel.host()
    return Runner(host, journal or Journal(None, "win10"), profile, "win10"), host


def test_steps_run_in_order_and_each_is_journaled_with_what_it_changed(kernel):
    seen = []
    run, host = runner(kernel)
    run.on_outcome = lambda outcome: seen.append((outcome.title, outcome.status))
    result = run.run("prepare/begin")
    assert result.ok and [status for _, status in seen] == ["done", "done", "done"]
    assert [e["action"] for e in run.journal.entries] == ["modprobe", "detach", "resize_bar"]
    assert run.journal.devices() == {GPU, AUDIO}
    assert kernel.driver(GPU) == kernel.driver(AUDIO) == "vfio-pci"
    assert host.deadline is None and host.force is False  # the step scope is over


def test_a_failing_step_undoes_the_steps_before_it_in_reverse(kernel):
    start = kernel.snapshot()
    kernel.fail("bus/pci/devices/0000:03:00.0/resource2_resize", "EINVAL")
    run, _ = runner(kernel)
    result = run.run("prepare/begin")
    assert result.failed is not None and result.failed.title.startswith("3. resize BAR 2")
    assert [o.title.split(":")[0] for o in result.rollback] == [
        "undo prepare/begin step 3",  # its partial work: the GPU back on vfio-pci
        "undo prepare/begin step 2",
        "undo prepare/begin step 1",
    ]
    assert all(o.status == "undone" for o in result.rollback)
    assert run.journal.entries == [] and kernel.snapshot() == start


def test_release_without_steps_undoes_the_journal_newest_first(kernel):
    start = kernel.snapshot()
    run, _ = runner(kernel)
    assert run.run("prepare/begin").ok
    result = run.run("release/end")
    assert result.ok and result.steps == []
    assert [o.title.split(":")[0] for o in result.rollback] == [
        "undo prepare/begin step 3",
        "undo prepare/begin step 2",
        "undo prepare/begin step 1",
    ]
    assert kernel.snapshot() == start and run.journal.entries == []


def test_an_undo_that_fails_is_kept_for_the_next_try(kernel):
    run, _ = runner(kernel)
    assert run.run("prepare/begin").ok
    kernel.fail("bus/pci/drivers_probe", "EIO", times=100)
    result = run.run("release/end")
    assert not result.ok and result.not_restored
    assert {e["status"] for e in run.journal.entries} >= {"undo-failed"}
    kernel.faults.clear()
    again = run.run("release/end")
    assert again.ok, [(o.title, o.status, o.error) for o in again.rollback]
    assert run.journal.entries == []


def test_nothing_journaled_is_a_note_not_a_failure(kernel):
    run, _ = runner(kernel)
    result = run.run("release/end")
    assert result.ok and result.note == "nothing is journaled for this domain; nothing to undo"
