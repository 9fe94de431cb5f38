"""Single-GPU desktops (tests/desktop_hosts.py): the dry run predicts what stopping the
display manager and kill_holders do to the processes that hold the card, and the fake
kernel's real run does the same."""

from pathlib import Path

from desktop_hosts import DESKTOP_HOSTS, DOMAIN_XML
from fakecommands import install_fake_commands
from fakekernel import FakeKernel
from toolbox import run, system_state

REPO = Path(__file__).resolve().parent.parent


def desktop_kernel(fs, name: str) -> FakeKernel:
    fs.add_real_directory(str(REPO / "config"), read_only=True)
    fs.add_real_directory(str(REPO / "passthrough"), read_only=True)
    return FakeKernel(fs, DESKTOP_HOSTS[name]())


def without_pids(state: dict) -> dict:
    return {key: value for key, value in state.items() if key != "pids"}


def test_single_gpu_profile_plans_and_runs_on_a_desktop_that_holds_the_card(fs):
    kernel = desktop_kernel(fs, "single-amd")
    book = install_fake_commands(kernel)
    profile = (REPO / "config" / "single-gpu.yaml").read_text()
    start = system_state(kernel)
    code, out, err = run(kernel, profile, "prepare", "begin", dry_run=True, domain="win11")
    assert code == 0, out + err
    assert (
        "wait until gdm (pid 900), gdm-session-wor (pid 1380), gdm-x-session (pid 1390), "
        "Xorg (pid 1400), gnome-shell (pid 1450) have exited   [up to 60 s]" in out
    )
    assert "kill -s TERM -- 1501   [SIGTERM to wireplumber (pid 1501)]" in out
    assert "libvirt nodedev-detach pci_0000_03_00_0 --driver vfio   [amdgpu → vfio-pci]" in out
    assert "FAILS" not in out and book.calls == [] and system_state(kernel) == start
    # The real run ends the same processes, and the detach finds the card free.
    code, _, err = run(
        kernel, None, "prepare", "begin", xml=DOMAIN_XML["single-amd"], domain="win11"
    )
    assert code == 0, err
    assert kernel.driver("0000:03:00.0") == "vfio-pci"
    alive = set(system_state(kernel)["pids"])
    assert not alive & {900, 1380, 1390, 1400, 1450, 1501} and {1, 1300, 1500} <= alive
    code, _, err = run(kernel, None, "release", "end", xml=DOMAIN_XML["single-amd"], domain="win11")
    assert code == 0, err
    assert without_pids(system_state(kernel)) == without_pids(start)
    assert set(system_state(kernel)["pids"]) == set(start["pids"]) - {1501}  # wireplumber was ended


def test_kde_plasma_units_outlive_the_display_manager_unless_sessions_are_stopped(fs):
    kernel = desktop_kernel(fs, "kde-wayland")
    install_fake_commands(kernel)
    plain = (
        (REPO / "config" / "single-gpu.yaml")
        .read_text()
        .replace(
            "  - display_manager:               # gdm, sddm, lightdm... and the desktops they run: waits\n"
            "      operation: stop              # until Xorg, gnome-shell, kwin_wayland... have exited\n"
            "      sessions: true               # KDE Plasma's compositor is a user unit: stop those too\n",
            "  - display_manager: stop\n",
        )
    )
    code, out, _ = run(kernel, plain, "prepare", "begin", dry_run=True, domain="win11")
    assert code == 1
    assert (
        "FAILS: refusing to end processes not in allow: kwin_wayland (pid 1300) holds /dev/dri/card0"
        in out
    )
    code, _, err = run(kernel, plain, "prepare", "begin", domain="win11")
    assert code == 1 and "kwin_wayland (pid 1300) holds /dev/dri/card0" in err
    profile = (REPO / "config" / "single-gpu.yaml").read_text()
    code, out, _ = run(kernel, profile, "prepare", "begin", dry_run=True, domain="win11")
    assert code == 0, out
    assert "systemctl --user --machine=1000@.host stop graphical-session.target" in out
    code, _, err = run(kernel, profile, "prepare", "begin", domain="win11")
    assert code == 0, err
