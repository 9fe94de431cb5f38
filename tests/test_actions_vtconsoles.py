"""vtconsoles: unbind only the bound consoles, bind exactly those again on undo."""

from pathlib import Path

from runs import LOG, hook
from toolbox import read, system_state

PROFILE = "prepare/begin:\n  - vtconsoles: unbind\n"


def test_unbinds_the_bound_console_and_release_binds_it_again(kernel):
    start = system_state(kernel)
    code, _, err = hook(kernel, "prepare", "begin", profile=PROFILE)
    assert code == 0, err
    assert read("sys/class/vtconsole/vtcon1/bind") == "0"
    assert (
        read("sys/class/vtconsole/vtcon0/bind") == "1"
    )  # the kernel hands the VTs to the dummy console
    assert kernel.writes == [("devices/virtual/vtconsole/vtcon1/bind", "0")]
    code, _, err = hook(kernel, "release", "end")
    assert code == 0, err
    assert system_state(kernel) == start


def test_nothing_bound_is_a_recorded_no_op(kernel):
    kernel.store.set_text("class/vtconsole/vtcon1/bind", "0")
    code, _, err = hook(kernel, "prepare", "begin", profile=PROFILE)
    assert code == 0, err
    assert kernel.writes == []
    assert (
        "no virtual console is bound to a console driver   [nothing to do]" in Path(LOG).read_text()
    )


def test_dry_run_names_the_write_and_changes_nothing(kernel):
    start = system_state(kernel)
    code, out, _ = hook(kernel, "prepare", "begin", profile=PROFILE, dry_run=True)
    assert code == 0, out
    assert "1. unbind the virtual consoles from their console drivers" in out
    assert (
        "write 0 > /sys/class/vtconsole/vtcon1/bind   [vtcon1 (M) frame buffer device: bound → unbound]"
        in out
    )
    assert system_state(kernel) == start


def test_on_a_bios_boot_vgacon_takes_the_consoles(kernel):
    """BIOS/CSM boots have vgacon as the system console driver, not the dummy one: it takes
    the consoles back when fbcon is unbound, and writing 0 to it would do nothing."""
    Path("/host/sys/devices/virtual/vtconsole/vtcon0/name").write_text("(S) VGA+\n")
    start = system_state(kernel)
    code, _, err = hook(kernel, "prepare", "begin", profile=PROFILE)
    assert code == 0, err
    assert read("sys/class/vtconsole/vtcon1/bind") == "0"
    assert read("sys/class/vtconsole/vtcon0/bind") == "1"
    assert "vtcon0 (S) VGA+ (vgacon) takes the consoles" in Path(LOG).read_text()
    assert kernel.writes == [("devices/virtual/vtconsole/vtcon1/bind", "0")]  # vgacon left alone
    code, _, err = hook(kernel, "release", "end")
    assert code == 0, err
    assert system_state(kernel) == start


def test_writing_0_to_the_system_console_driver_does_nothing(kernel):
    Path("/host/sys/devices/virtual/vtconsole/vtcon0/name").write_text("(S) VGA+\n")
    kernel.model.write("devices/virtual/vtconsole/vtcon1/bind", "0")
    kernel.model.write("devices/virtual/vtconsole/vtcon0/bind", "0")
    assert read("sys/class/vtconsole/vtcon0/bind") == "1"


def test_a_console_the_kernel_keeps_bound_fails_the_step(kernel):
    """With no system console driver to take over, the kernel accepts the 0 and keeps the
    last console bound."""
    Path("/host/sys/devices/virtual/vtconsole/vtcon0/name").write_text("(M) other console\n")
    start = system_state(kernel)
    code, _, err = hook(kernel, "prepare", "begin", profile=PROFILE)
    assert code == 1
    assert "the kernel kept vtcon1 ((M) frame buffer device) bound after writing 0" in err
    assert system_state(kernel) == start


def test_a_write_error_is_reported_with_the_file(kernel):
    kernel.fail("devices/virtual/vtconsole/vtcon1/bind", "EBUSY")
    code, _, err = hook(kernel, "prepare", "begin", profile=PROFILE)
    assert code == 1
    assert "writing '0' to /sys/class/vtconsole/vtcon1/bind failed: Device or resource busy" in err
    assert read("sys/class/vtconsole/vtcon1/bind") == "1"
