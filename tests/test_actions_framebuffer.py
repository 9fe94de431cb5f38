"""framebuffer: unbind the firmware framebuffers that are bound, bind exactly those again."""

import shutil
from pathlib import Path

from runs import LOG, hook
from toolbox import system_state

PROFILE = "prepare/begin:\n  - framebuffer: unbind\n"
LINK = Path("/host/sys/bus/platform/drivers/efi-framebuffer/efi-framebuffer.0")


def test_unbinds_efifb_and_release_binds_it_again(kernel):
    start = system_state(kernel)
    code, _, err = hook(kernel, "prepare", "begin", profile=PROFILE)
    assert code == 0, err
    assert (
        not LINK.exists()
        and not Path("/host/sys/bus/platform/devices/efi-framebuffer.0/driver").exists()
    )
    assert ("bus/platform/drivers/efi-framebuffer/unbind", "efi-framebuffer.0") in kernel.writes
    code, _, err = hook(kernel, "release", "end")
    assert code == 0, err
    assert ("bus/platform/drivers/efi-framebuffer/bind", "efi-framebuffer.0") in kernel.writes
    assert system_state(kernel) == start


def test_only_bound_framebuffers_are_touched(kernel):
    LINK.unlink()
    Path("/host/sys/devices/platform/efi-framebuffer.0/driver").unlink()
    code, _, err = hook(kernel, "prepare", "begin", profile=PROFILE)
    assert code == 0, err
    assert kernel.writes == []
    assert "no firmware framebuffer is bound to a driver   [nothing to do]" in Path(LOG).read_text()


def test_dry_run_shows_the_unbind_and_changes_nothing(kernel):
    start = system_state(kernel)
    code, out, _ = hook(kernel, "prepare", "begin", profile=PROFILE, dry_run=True)
    assert code == 0, out
    assert (
        "write efi-framebuffer.0 > /sys/bus/platform/drivers/efi-framebuffer/unbind   "
        "[efi-framebuffer.0: efi-framebuffer → no driver]"
    ) in out
    assert system_state(kernel) == start


def test_a_framebuffer_taken_over_by_a_gpu_driver_is_only_a_warning_on_undo(kernel):
    assert hook(kernel, "prepare", "begin", profile=PROFILE)[0] == 0
    # amdgpu probing removes the firmware framebuffer device altogether (aperture takeover).
    Path("/host/sys/bus/platform/devices/efi-framebuffer.0").unlink()
    shutil.rmtree("/host/sys/devices/platform/efi-framebuffer.0")
    code, _, err = hook(kernel, "release", "end")
    assert code == 0, err
    assert (
        "efi-framebuffer.0 is gone (the kernel removed it when a GPU driver took the "
        "framebuffer over, or for a BAR resize); nothing to bind until reboot"
        in Path(LOG).read_text()
    )


def test_an_unbind_error_fails_the_step(kernel):
    kernel.fail("bus/platform/drivers/efi-framebuffer/unbind", "ENODEV")
    start = system_state(kernel)
    code, _, err = hook(kernel, "prepare", "begin", profile=PROFILE)
    assert code == 1
    assert (
        "writing 'efi-framebuffer.0' to /sys/bus/platform/drivers/efi-framebuffer/unbind failed: "
        "No such device"
    ) in err
    assert system_state(kernel) == start
