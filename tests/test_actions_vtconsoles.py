"""vtconsoles: unbind only the bound consoles, bind exactly those again on undo."""

from pathlib import Path

from toolbox import LOG, read, run, system_state

PROFILE = "prepare/begin:\n  - vtconsoles: unbind\n"


def test_unbinds_the_bound_console_and_release_binds_it_again(kernel):
    start = system_state(kernel)
    code, _, err = run(kernel, PROFILE, "prepare", "begin")
    assert code == 0, err
    assert read("sys/class/vtconsole/vtcon1/bind") == "0"
    assert (
        read("sys/class/vtconsole/vtcon0/bind") == "1"
    )  # the kernel hands the VTs to the dummy console
    assert kernel.writes == [("devices/virtual/vtconsole/vtcon1/bind", "0")]
    code, _, err = run(kernel, None, "release", "end")
    assert code == 0, err
    assert system_state(kernel) == start


def test_nothing_bound_is_a_recorded_no_op(kernel):
    kernel.store.set_text("class/vtconsole/vtcon1/bind", "0")
    code, _, err = run(kernel, PROFILE, "prepare", "begin")
    assert code == 0, err
    assert kernel.writes == []
    assert (
        "no virtual console is bound to a console driver   [nothing to do]" in Path(LOG).read_text()
    )


def test_dry_run_names_the_write_and_changes_nothing(kernel):
    start = system_state(kernel)
    code, out, _ = run(kernel, PROFILE, "prepare", "begin", dry_run=True)
    assert code == 0, out
    assert "1. unbind the virtual consoles from their console drivers" in out
    assert (
        "write 0 > /sys/class/vtconsole/vtcon1/bind   [vtcon1 (M) frame buffer device: bound → unbound]"
        in out
    )
    assert system_state(kernel) == start


def test_a_console_the_kernel_keeps_bound_fails_the_step(kernel):
    """Without a dummy console to take over, the kernel accepts the 0 and keeps the console bound."""
    Path("/host/sys/devices/virtual/vtconsole/vtcon0/name").write_text("(S) VGA+\n")
    start = system_state(kernel)
    code, _, err = run(kernel, PROFILE, "prepare", "begin")
    assert code == 1
    assert "the kernel kept vtcon1 ((M) frame buffer device) bound after writing 0" in err
    assert system_state(kernel) == start


def test_a_write_error_is_reported_with_the_file(kernel):
    kernel.fail("devices/virtual/vtconsole/vtcon1/bind", "EBUSY")
    code, _, err = run(kernel, PROFILE, "prepare", "begin")
    assert code == 1
    assert "writing '0' to /sys/class/vtconsole/vtcon1/bind failed: Device or resource busy" in err
    assert read("sys/class/vtconsole/vtcon1/bind") == "1"
