"""libvirt's own entry (passthrough.hook.hook_main) on the fake kernel: tolerant and silent
where a person's command is strict, and the same steps where there is work."""

from __future__ import annotations

import json
from pathlib import Path

from runs import CONFIG, LOG, STATE, command, libvirt, tree_options, write_profile

GPU, AUDIO = "0000:03:00.0", "0000:03:00.1"


def test_the_seed_cycle_through_libvirts_entry_restores_the_host(kernel):
    start = kernel.snapshot()
    result = libvirt(kernel, "prepare", "begin", config=CONFIG)
    assert result.code == 0, result.err + Path(LOG).read_text()
    assert kernel.driver(GPU) == "vfio-pci" and kernel.driver(AUDIO) == "vfio-pci"
    entries = json.loads(Path(STATE, "win10.json").read_text())["entries"]
    assert [e["action"] for e in entries] == ["modprobe", "detach", "resize_bar"]
    assert result.out == ""  # libvirt keeps stdout; the hook writes nothing there
    assert "resize BAR 2 of gpu (0000:03:00.0) to 8 MiB: done" in Path(LOG).read_text()

    result = libvirt(kernel, "release", "end", config=CONFIG)
    assert result.code == 0, result.err
    assert kernel.snapshot() == start
    assert not Path(STATE, "win10.json").exists()


def test_what_a_person_is_told_off_for_libvirts_call_passes_in_silence(kernel):
    start = kernel.snapshot()
    # A domain without a profile, an event libvirt may add one day, a domain named like a
    # command: each is an error typed by a person, and nothing at all from libvirt's entry.
    for domain, operation, sub in [
        ("nosuchvm", "prepare", "begin"),
        ("win10", "frobnicate", "begin"),
        ("status", "prepare", "begin"),
    ]:
        typed = command(
            "--config-dir", CONFIG, *tree_options(), domain, operation, sub, kernel=kernel
        )
        assert typed.code == 2, (domain, operation, typed)
        called = libvirt(kernel, operation, sub, domain=domain, config=CONFIG)
        assert called == (0, "", ""), (domain, operation, called)
    assert kernel.snapshot() == start
    assert not kernel.writes


def test_a_profile_broken_while_the_domain_ran_still_gives_the_devices_back(kernel):
    start = kernel.snapshot()
    profile = (CONFIG / "win10.yaml").read_text()
    result = libvirt(kernel, "prepare", "begin", profile=profile)
    assert result.code == 0, result.err
    assert kernel.driver(GPU) == "vfio-pci"
    write_profile(profile + "  - no_such_action: {}\n")
    result = libvirt(kernel, "release", "end")
    assert result.code == 0, result.err
    assert "the profile did not load" in result.err
    assert "no_such_action" in result.err
    assert kernel.snapshot() == start
    assert not Path(STATE, "win10.json").exists()
