"""The program as users and libvirt run it: subprocesses on the bundled demo host."""

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from runs import HOOK, HOOK_COMMAND, REPO, hook_process, program

DEMO = REPO / "config" / "demo-host"


def tree_digest(root: Path) -> str:
    """Every path, file content and link target under root."""
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in sorted(os.walk(root)):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            digest.update(str(path.relative_to(root)).encode())
            if path.is_symlink():
                digest.update(b"->" + os.readlink(path).encode())
            elif path.is_file():
                digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.fixture
def demo(tmp_path):
    copy = tmp_path / "host"
    shutil.copytree(DEMO, copy, symlinks=True)
    return copy


def write_profile(directory: Path, text: str) -> Path:
    directory.mkdir(exist_ok=True)
    (directory / "win10.yaml").write_text(text)
    return directory


def test_dry_run_shows_the_plan_and_changes_nothing(demo):
    before = tree_digest(demo)
    result = program(
        "--dry-run", "--root", str(demo), "--config-dir", "config", "win10", "prepare", "begin"
    )
    assert result.code == 0, result.err
    plan = result.out
    for expected in [
        "modprobe vfio_pci   [vfio_pci: not loaded → loaded]",
        "libvirt nodedev-detach pci_0000_03_00_0 --driver vfio   [amdgpu → vfio-pci]",
        "libvirt nodedev-detach pci_0000_03_00_1 --driver vfio   [snd_hda_intel → vfio-pci]",
        "write 0000:03:00.0 > /sys/bus/pci/devices/0000:03:00.0/driver/unbind   [vfio-pci → no driver]",
        "write 3 > /sys/bus/pci/devices/0000:03:00.0/resource2_resize   [BAR 2: 256 MiB → 8 MiB]",
        "check 0000:03:00.0 driver   [no driver → vfio-pci]",
        "at config/win10.yaml:14:5",
        "Plan: 3 step(s), no problems seen.",
    ]:
        assert expected in plan, plan
    assert result.err == ""
    assert tree_digest(demo) == before


def test_dry_run_json(demo):
    result = program(
        "--dry-run",
        "--json",
        "--root",
        str(demo),
        "--config-dir",
        "config",
        "win10",
        "prepare",
        "begin",
    )
    assert result.code == 0, result.err
    plan = json.loads(result.out)
    assert plan["ok"] and plan["dry_run"] and plan["event"] == "prepare/begin"
    assert [s["title"] for s in plan["steps"]] == [
        "1. load modules vfio vfio_iommu_type1 vfio_pci",
        "2. detach gpu, gpu-audio to vfio-pci via libvirt",
        "3. resize BAR 2 of gpu (0000:03:00.0) to 8 MiB",
    ]
    effects = [op["effect"] for op in plan["steps"][2]["operations"]]
    assert "BAR 2: 256 MiB → 8 MiB" in effects


def test_dry_run_reports_problems_it_can_see(demo, tmp_path):
    profiles = write_profile(
        tmp_path / "p",
        """\
devices: {gpu: "0000:03:00.0", nic: "0000:0b:00.0"}
prepare/begin:
  - detach: {devices: [gpu], via: sysfs}
  - detach: [nic]
""",
    )
    before = tree_digest(demo)
    result = program(
        "--dry-run", "--root", str(demo), "--config-dir", str(profiles), "win10", "prepare", "begin"
    )
    assert result.code == 1
    assert "0000:03:00.0: driver vfio-pci is not loaded, so it cannot take the device" in result.out
    assert "add a modprobe step" in result.out
    assert tree_digest(demo) == before


def test_dry_run_of_unsupported_bar_size(demo, tmp_path):
    profiles = write_profile(
        tmp_path / "p",
        """\
devices: {gpu: "0000:03:00.0"}
prepare/begin:
  - resize_bar: {device: gpu, bar: 0, size: 8MiB}
""",
    )
    result = program(
        "--dry-run", "--root", str(demo), "--config-dir", str(profiles), "win10", "prepare", "begin"
    )
    assert result.code == 1
    assert (
        "BAR 0 does not support 8 MiB; supported sizes: 256 MiB, 512 MiB, 1 GiB, 2 GiB, 4 GiB, 8 GiB, 16 GiB"
        in result.out
    )


@pytest.mark.parametrize(
    "profile,message",
    [
        (
            'devices: {gpu: "0000:03:00.0"}\nprepare/begin:\n  - detatch: [gpu]\n',
            ':3:5: unknown action "detatch"',
        ),
        ('devices: {gpu: "0000:3:00.0"}\n', ":1:16: '0000:3:00.0' is not a PCI address"),
        (
            'devices: {gpu: "0000:03:00.0"}\nprepare/begin:\n  - detach: [gpu0]\n',
            ':3:14: unknown device "gpu0"',
        ),
        (
            'devices: {gpu: "0000:03:00.0"}\nprepare/begin:\n  - resize_bar: {device: gpu, bar: 2, size: 7MiB}\n',
            ":3:45: '7MiB' is not a power of two",
        ),
    ],
)
def test_profile_errors_exit_2_with_one_line_and_write_nothing(demo, tmp_path, profile, message):
    profiles = write_profile(tmp_path / "p", profile)
    state = tmp_path / "state"
    state.mkdir()
    before = tree_digest(demo)
    result = program(
        "--root",
        str(demo),
        "--config-dir",
        str(profiles),
        "--state-dir",
        str(state),
        "win10",
        "prepare",
        "begin",
        "-",
    )
    assert result.code == 2
    lines = result.err.splitlines()
    assert (
        len(lines) == 1 and lines[0].startswith(f"{profiles}/win10.yaml") and message in lines[0]
    ), result.err
    assert "Traceback" not in result.err + result.out
    assert tree_digest(demo) == before and not any(state.iterdir())


def test_usage_errors_exit_2():
    result = program("win10")
    assert result.code == 2 and 'unknown command "win10"' in result.err
    assert "DOMAIN OPERATION SUB_OPERATION" in result.err
    result = program("--dry-run", "--config-dir", "config", "../win10", "prepare", "begin")
    assert result.code == 2 and "is not a plain domain name" in result.err


def test_modules_and_libvirt_refuse_a_tree_root(demo):
    """A real run with --root cannot load modules: modprobe would act on this machine's kernel."""
    result = program(
        "--root",
        str(demo),
        "--config-dir",
        "config",
        "--state-dir",
        str(demo / "run"),
        "--log-file",
        str(demo / "hook.log"),
        "win10",
        "prepare",
        "begin",
        "-",
    )
    assert result.code == 1
    assert "cannot load module vfio with --root" in result.err and "use --dry-run" in result.err


def test_validate(tmp_path):
    result = program("validate", "--config-dir", "config")
    assert result.code == 0 and "config/win10.yaml: ok (2 devices, 3 steps)" in result.out
    bad = write_profile(tmp_path / "p", "devices: {gpu: 1}\n")
    result = program("validate", str(bad / "win10.yaml"))
    assert result.code == 2 and "win10.yaml:1:16: '1' is not a PCI address" in result.err


# --- the hook file libvirt runs ---------------------------------------------------------------


def test_hook_without_profile_exits_0_silently_and_imports_nothing_heavy(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "PASSTHROUGH_HOOK_CONFIG_DIR": str(tmp_path)}
    result = hook_process("other", "prepare", "begin", "-", config=tmp_path)
    assert (result.code, result.out, result.err) == (0, "", "")
    # -X importtime lists every module imported after the interpreter's own start.
    probe = subprocess.run(
        [*HOOK_COMMAND, "-X", "importtime", str(HOOK), "other", "prepare", "begin", "-"],
        input="<domain/>",
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    imported = [
        line.rsplit("|", 1)[-1].strip()
        for line in probe.stderr.splitlines()
        if line.startswith("import time:") and "|" in line and "imported package" not in line
    ]
    assert probe.returncode == 0 and imported, probe
    heavy = ("yaml", "libvirt", "passthrough", "json", "os", "site")
    assert [m for m in imported if m.split(".")[0] in heavy] == [], imported


def test_hook_runs_the_profile_for_a_domain_that_has_one(tmp_path):
    profiles = write_profile(
        tmp_path / "p", 'devices: {gpu: "0000:03:00.0"}\nprepare/begin:\n  - detach: [gpuu]\n'
    )
    result = hook_process("win10", "prepare", "begin", "-", config=profiles)
    assert result.code == 2
    assert result.err.startswith(f'{profiles}/win10.yaml:3:14: unknown device "gpuu"')


def test_hook_starts_without_site_and_its_copies_of_the_program_constants_agree():
    from passthrough import profile

    assert HOOK_COMMAND == ["/usr/bin/python3", "-IS"]
    namespace: dict = {}
    exec(compile(HOOK.read_text(), str(HOOK), "exec"), namespace)
    assert namespace["EVENTS"] == profile.EVENTS
    assert namespace["MAX_BYTES"] == profile.MAX_BYTES


HOOK_PROFILE = (
    '# a comment\ndevices:\n  gpu: "0000:03:00.0"\nprepare/begin:  # start\n  - detach: [gpuu]\n'
)


@pytest.mark.parametrize(
    "text, event, work",
    [
        (HOOK_PROFILE, "prepare/begin", True),
        (HOOK_PROFILE, "started/begin", False),
        (HOOK_PROFILE, "release/end", False),  # no journal: nothing to undo
        ("---\n" + HOOK_PROFILE.replace("prepare/begin", '"started/begin"'), "started/begin", True),
        (HOOK_PROFILE + "started/begn:\n  - undo: prepare/begin\n", "started/begin", True),  # typo
        ('devices: {gpu: "0000:03:00.0"}\n"prepare/\\x62egin": []\n', "started/begin", True),
        ("{devices: {}, started/begin: []}\n", "started/begin", True),
        ("devices: {}\nstarted/begin: [\n]\n", "started/begin", True),
        ("devices:\n\tgpu: x\n", "started/begin", True),
        (b"\xff\xfe".decode("latin-1") + HOOK_PROFILE, "started/begin", True),
    ],
)
def test_hook_skips_the_program_only_when_the_profile_surely_has_no_steps(
    tmp_path, text, event, work
):
    """The scan of the profile's top-level keys may say "no work" only when the program
    would do nothing; any doubt (flow style, escapes, an unknown key) runs the program."""
    namespace: dict = {}
    exec(compile(HOOK.read_text(), str(HOOK), "exec"), namespace)
    profiles = tmp_path / "p"
    profiles.mkdir()
    (profiles / "win10.yaml").write_bytes(text.encode("latin-1" if "\xff" in text else "utf-8"))
    namespace["CONFIG_DIR"] = str(profiles)
    namespace["STATE_DIR"] = str(tmp_path / "run")
    operation, sub = event.split("/")
    assert namespace["has_work"](["qemu", "win10", operation, sub, "-"]) is work


def test_hook_release_with_a_journal_runs_even_when_the_profile_has_no_release_steps(tmp_path):
    namespace: dict = {}
    exec(compile(HOOK.read_text(), str(HOOK), "exec"), namespace)
    profiles = write_profile(tmp_path / "p", HOOK_PROFILE)
    namespace["CONFIG_DIR"] = str(profiles)
    namespace["STATE_DIR"] = str(tmp_path / "run")
    argv = ["qemu", "win10", "release", "end", "-"]
    assert namespace["has_work"](argv) is False
    (tmp_path / "run").mkdir()
    (tmp_path / "run/win10.json").write_text("{}")
    assert namespace["has_work"](argv) is True
    (profiles / "win10.yaml").unlink()  # removed while the domain ran: the journal still counts
    assert namespace["has_work"](argv) is True


def test_hook_with_a_profile_but_no_steps_for_the_event_exits_0_silently(tmp_path):
    profiles = write_profile(tmp_path / "p", HOOK_PROFILE)
    result = hook_process("win10", "started", "begin", "-", config=profiles)
    assert (result.code, result.out, result.err) == (0, "", "")
    # The same profile's prepare/begin runs the program (which finds the unknown device).
    result = hook_process("win10", "prepare", "begin", "-", config=profiles)
    assert result.code == 2 and 'unknown device "gpuu"' in result.err
