"""Single-GPU desktops (tests/desktop_hosts.py): the dry run predicts what stopping the
display manager and kill_holders do to the processes that hold the card, and the fake
kernel's real run does the same."""

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from desktop_hosts import DESKTOP_HOSTS, DOMAIN_XML
from fakecommands import install_fake_commands
from fakekernel import FakeKernel
from hosts import write_tree
from runs import PROFILES, command, hook, program
from toolbox import system_state

# The tools run inside pyfakefs here: import them first outside it (pyfakefs unloads modules
# first imported inside a test, and a module imported there keeps the fake os, so a later
# test outside pyfakefs would call a fake os.getxattr).
import passthrough.tools.check  # noqa: F401, E402
import passthrough.tools.init  # noqa: F401, E402
import passthrough.tools.policy_checks  # noqa: F401, E402
import passthrough.tools.security  # noqa: F401, E402
from passthrough.profile import load_profile

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
    code, out, err = hook(kernel, "prepare", "begin", profile=profile, dry_run=True, domain="win11")
    assert code == 0, out + err
    assert (
        "wait until gdm (pid 900), gdm-session-wor (pid 1380), gdm-x-session (pid 1390), "
        "Xorg (pid 1400), gnome-shell (pid 1450) have exited   [up to 60 s]" in out
    )
    assert "kill -s TERM -- 1501   [SIGTERM to wireplumber (pid 1501)]" in out
    assert "libvirt nodedev-detach pci_0000_03_00_0 --driver vfio   [amdgpu → vfio-pci]" in out
    assert "FAILS" not in out and book.calls == [] and system_state(kernel) == start
    # The real run ends the same processes, and the detach finds the card free.
    code, _, err = hook(kernel, "prepare", "begin", xml=DOMAIN_XML["single-amd"], domain="win11")
    assert code == 0, err
    assert kernel.driver("0000:03:00.0") == "vfio-pci"
    alive = set(system_state(kernel)["pids"])
    assert not alive & {900, 1380, 1390, 1400, 1450, 1501} and {1, 1300, 1500} <= alive
    code, _, err = hook(kernel, "release", "end", xml=DOMAIN_XML["single-amd"], domain="win11")
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
    code, out, _ = hook(kernel, "prepare", "begin", profile=plain, dry_run=True, domain="win11")
    assert code == 1
    assert (
        "FAILS: refusing to end processes not in allow: kwin_wayland (pid 1300) holds /dev/dri/card0"
        in out
    )
    code, _, err = hook(kernel, "prepare", "begin", profile=plain, domain="win11")
    assert code == 1 and "kwin_wayland (pid 1300) holds /dev/dri/card0" in err
    profile = (REPO / "config" / "single-gpu.yaml").read_text()
    code, out, _ = hook(kernel, "prepare", "begin", profile=profile, dry_run=True, domain="win11")
    assert code == 0, out
    assert "systemctl --user --machine=1000@.host stop graphical-session.target" in out
    code, _, err = hook(kernel, "prepare", "begin", profile=profile, domain="win11")
    assert code == 0, err


# --- every desktop host: init -> check -> dry run -> prepare -> release ----------------------


def init_profile(name: str) -> str:
    Path("/xml").mkdir(exist_ok=True)
    Path("/xml/win11.xml").write_text(DOMAIN_XML[name])
    code, out, err = command(
        "init", "--root", "/host", "--config-dir", str(PROFILES), "--xml", "/xml/win11.xml", "win11"
    )
    assert code == 0, out + err
    return (PROFILES / "win11.yaml").read_text()


def check_findings(profile_dir: Path = PROFILES) -> list[dict]:
    code, out, err = command(
        "check",
        "--json",
        "--root",
        "/host",
        "--config-dir",
        str(profile_dir),
        "--xml",
        "/xml/win11.xml",
        "win11",
    )
    assert out.startswith("{"), out + err
    findings = json.loads(out)["findings"]
    assert code == (1 if any(f["severity"] == "error" for f in findings) else 0)
    return findings


@pytest.mark.parametrize("name", list(DESKTOP_HOSTS))
def test_init_check_dry_run_prepare_and_release_end_where_they_began(fs, name):
    kernel = desktop_kernel(fs, name)
    book = install_fake_commands(kernel)
    start = system_state(kernel)
    profile = init_profile(name)
    assert [f for f in check_findings() if f["severity"] == "error"] == []
    code, out, err = hook(kernel, "prepare", "begin", dry_run=True, domain="win11")
    assert code == 0 and "FAILS" not in out, out + err
    assert book.calls == [] and system_state(kernel) == start
    xml = DOMAIN_XML[name]
    code, _, err = hook(kernel, "prepare", "begin", xml=xml, domain="win11")
    assert code == 0, err
    gpu = load_profile(PROFILES / "win11.yaml").devices["gpu"]
    assert kernel.driver(gpu) == "vfio-pci"
    code, _, err = hook(kernel, "release", "end", xml=xml, domain="win11")
    assert code == 0, err
    assert without_pids(system_state(kernel)) == without_pids(start)
    # Everything is back but what kill_holders ended (it says so: not undone).
    ended = {int(pid) for call in book.calls if call[0] == "kill" for pid in call[4:]}
    assert set(system_state(kernel)["pids"]) == set(start["pids"]) - ended
    single = name.startswith(("single", "kde"))
    assert ("display_manager" in profile) == single and ("vtconsoles: unbind" in profile) == single
    assert ("nvidia-persistenced" in profile) == (name in ("single-nvidia", "laptop"))


# --- the contract: no error from check => the dry run does not fail for a reason check sees --


def variants(profile: str) -> list[tuple[str, str]]:
    """The profile init wrote, and versions of it with one of its prepare/begin steps left
    out (what users do when they copy half a tutorial)."""
    lines = profile.splitlines()
    steps = [i for i, line in enumerate(lines) if line.startswith("  - ")]
    found = [("as written", profile)]
    for index in steps:
        if lines[index].startswith(("  - modprobe: [vfio", "  - detach:")):
            continue
        end = index + 1
        while end < len(lines) and lines[end].startswith("      "):  # a step in block style
            end += 1
        kept = lines[:index] + lines[end:]
        found.append((f"without `{lines[index].strip()[2:]}`", "\n".join(kept) + "\n"))
    found.append(("single-gpu.yaml", (REPO / "config" / "single-gpu.yaml").read_text()))
    return found


@pytest.mark.parametrize("name", list(DESKTOP_HOSTS))
def test_when_check_finds_no_error_the_dry_run_does_not_fail(fs, name):
    kernel = desktop_kernel(fs, name)
    install_fake_commands(kernel)
    profile = init_profile(name)
    seen = {"clean": 0, "errors": 0}
    for what, text in variants(profile):
        directory = Path(f"/variants/{len(seen)}-{seen['clean'] + seen['errors']}")
        directory.mkdir(parents=True)
        (directory / "win11.yaml").write_text(text)
        errors = [f for f in check_findings(directory) if f["severity"] == "error"]
        PROFILES.mkdir(exist_ok=True)
        (PROFILES / "win11.yaml").write_text(text)
        code, out, _ = hook(kernel, "prepare", "begin", dry_run=True, domain="win11")
        if errors:
            seen["errors"] += 1
            continue
        seen["clean"] += 1
        failure = re.search(r"FAILS: (.*)", out)
        assert code == 0 and not failure, (
            f"{name}, profile {what}: check found no error, but\n{out}"
        )
    assert seen["clean"] >= 1
    # Leaving out any of the steps a single-GPU host needs is caught by check.
    if name.startswith(("single", "kde")):
        assert seen["errors"] >= 2


# --- the example profiles in config/, written by init on these hosts ---------------------------

EXAMPLES = {
    "single-gpu-nvidia": "single-nvidia",
    "single-gpu-amd": "single-amd",
    "dual-gpu": "dual-gpu",
    "laptop-dgpu": "laptop",
}


def body(profile: str) -> str:
    return profile[profile.index("devices:") :]


@pytest.mark.parametrize("example", list(EXAMPLES))
def test_example_profile_is_what_init_writes_and_runs_on_its_host(fs, example):
    name = EXAMPLES[example]
    kernel = desktop_kernel(fs, name)
    text = (REPO / "config" / f"{example}.yaml").read_text()
    schema = json.loads((REPO / "passthrough" / "profile.schema.json").read_text())
    assert text.startswith("# yaml-language-server: $schema=../passthrough/profile.schema.json\n")
    assert list(jsonschema.Draft7Validator(schema).iter_errors(yaml.safe_load(text))) == []
    install_fake_commands(kernel)
    start = system_state(kernel)
    assert body(init_profile(name)) == body(text), f"config/{example}.yaml differs from init's"
    (PROFILES / "win11.yaml").write_text(text)
    assert [f for f in check_findings() if f["severity"] == "error"] == []
    code, out, _ = hook(kernel, "prepare", "begin", dry_run=True, domain="win11")
    assert code == 0, out
    for event in (("prepare", "begin"), ("release", "end")):
        code, _, err = hook(kernel, *event, xml=DOMAIN_XML[name], domain="win11")
        assert code == 0, err
    assert without_pids(system_state(kernel)) == without_pids(start)


# --- the README's single-GPU init output -------------------------------------------------------


def readme_init_output(tmp_path: Path) -> str:
    """`init` on the single-nvidia host, run as the README shows it (relative paths)."""
    write_tree(DESKTOP_HOSTS["single-nvidia"](), tmp_path / "single-nvidia")
    (tmp_path / "win11.xml").write_text(DOMAIN_XML["single-nvidia"])
    result = program(
        "init",
        "--root",
        "single-nvidia",
        "--config-dir",
        "profiles",
        "--xml",
        "win11.xml",
        "win11",
        cwd=tmp_path,
    )
    assert result.code == 0, result.out + result.err
    return result.out


def test_the_readme_shows_init_on_a_single_gpu_host(tmp_path):
    out = readme_init_output(tmp_path)
    assert "/tmp" not in out and str(REPO) not in out
    assert out in (REPO / "README.md").read_text(), (
        "README.md shows an outdated init output; paste the new one:\n" + out
    )


OLD_INIT = """\
devices:
  gpu: "0000:03:00.0"
  gpu-audio: "0000:03:00.1"

prepare/begin:
  - modprobe: [vfio, vfio_iommu_type1, vfio_pci]
  - detach: [gpu, gpu-audio]
"""


def readme_check_error(tmp_path: Path) -> str:
    """check of a profile without the single-GPU steps on the single-amd host: its error."""
    write_tree(DESKTOP_HOSTS["single-amd"](), tmp_path / "single-amd")
    (tmp_path / "win11.xml").write_text(DOMAIN_XML["single-amd"])
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "win11.yaml").write_text(OLD_INIT)
    result = program(
        "check",
        "--root",
        "single-amd",
        "--config-dir",
        "profiles",
        "--xml",
        "win11.xml",
        "win11",
        cwd=tmp_path,
    )
    assert result.code == 1, result.out + result.err
    lines = result.out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("  error"))
    end = next(i for i in range(start + 1, len(lines)) if not lines[i].startswith("   "))
    return "\n".join(lines[start:end]) + "\n"


def test_the_readme_shows_check_without_the_single_gpu_steps(tmp_path):
    out = readme_check_error(tmp_path)
    assert "Xorg (pid 1400), gnome-shell (pid" in out and "`display_manager: stop`" in out
    assert out in (REPO / "README.md").read_text(), "paste the new check error:\n" + out
