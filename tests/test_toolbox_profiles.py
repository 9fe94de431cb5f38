"""The bundled single-GPU and tuned dual-GPU profiles: valid, planned on the demo host as the
README shows, and a full prepare/release cycle on the fake kernel that ends where it began."""

import json
import os
import shutil
from pathlib import Path

import jsonschema
import pytest
import yaml
from fakecommands import install_fake_commands
from runs import hook, program
from test_cli import tree_digest
from toolbox import system_state

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "config" / "demo-host"
DOMAIN_XML = (REPO / "config" / "tuned-dual-gpu.xml").read_text()


def test_both_profiles_validate():
    result = program("validate", "config/single-gpu.yaml", "config/tuned-dual-gpu.yaml")
    assert result.code == 0, result.err
    assert result.out.splitlines() == [
        "config/single-gpu.yaml: ok (2 devices, 7 steps)",
        "config/tuned-dual-gpu.yaml: ok (2 devices, 6 steps)",
    ]


@pytest.mark.parametrize("profile", ["single-gpu", "tuned-dual-gpu"])
def test_both_profiles_pass_the_shipped_json_schema(profile):
    schema = json.loads((REPO / "passthrough" / "profile.schema.json").read_text())
    text = (REPO / "config" / f"{profile}.yaml").read_text()
    assert (
        text.splitlines()[0] == "# yaml-language-server: $schema=../passthrough/profile.schema.json"
    )
    assert list(jsonschema.Draft7Validator(schema).iter_errors(yaml.safe_load(text))) == []


def test_single_gpu_dry_run_on_the_demo_host(tmp_path):
    demo = tmp_path / "host"
    shutil.copytree(DEMO, demo, symlinks=True)
    before = tree_digest(demo)
    result = program(
        "--dry-run", "--root", str(demo), "--config-dir", "config", "single-gpu", "prepare", "begin"
    )
    assert result.code == 0, result.out + result.err
    for line in [
        "systemctl --user --machine=1000@.host stop graphical-session.target   "
        "[1000's graphical session: stopped]",
        "systemctl stop gdm3.service   [gdm3.service: active → inactive]",
        "wait until gdm3 (pid 1021), gnome-shell (pid 1502), Xwayland (pid 1577) have exited   [up to 60 s]",
        "no process holds 0000:03:00.0, 0000:03:00.1   [nothing to do]",
        "write 0 > /sys/class/vtconsole/vtcon1/bind   [vtcon1 (M) frame buffer device: bound → unbound]",
        "write efi-framebuffer.0 > /sys/bus/platform/drivers/efi-framebuffer/unbind   "
        "[efi-framebuffer.0: efi-framebuffer → no driver]",
        "libvirt nodedev-detach pci_0000_03_00_0 --driver vfio   [amdgpu → vfio-pci]",
        "Plan: 7 step(s), no problems seen.",
    ]:
        assert line in result.out, result.out
    assert tree_digest(demo) == before


def test_tuned_dual_gpu_dry_run_on_the_demo_host(tmp_path):
    demo = tmp_path / "host"
    shutil.copytree(DEMO, demo, symlinks=True)
    before = tree_digest(demo)
    result = program(
        "--dry-run",
        "--root",
        str(demo),
        "--config-dir",
        "config",
        "--xml",
        "config/tuned-dual-gpu.xml",
        "tuned-dual-gpu",
        "prepare",
        "begin",
    )
    assert result.code == 0, result.out + result.err
    for line in [
        "write 16 > /sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages   [1G pages: 0 → 16]",
        "write performance > /sys/devices/system/cpu/cpu15/cpufreq/scaling_governor   "
        "[CPU 15: schedutil → performance]",
        "5. set the cpufreq governor of CPUs 4-7,12-15 to performance",
        "systemctl set-property --runtime init.scope AllowedCPUs=0-3,8-11   "
        "[init.scope CPUs: all (unset) → 0-3,8-11]",
        "Plan: 6 step(s), no problems seen.",
    ]:
        assert line in result.out, result.out
    assert "warning" not in result.out
    assert tree_digest(demo) == before


@pytest.mark.parametrize("profile", ["single-gpu", "tuned-dual-gpu"])
def test_prepare_then_release_puts_the_host_back(kernel, profile):
    book = install_fake_commands(kernel)
    start = system_state(kernel)
    text = (REPO / "config" / f"{profile}.yaml").read_text()
    code, _, err = hook(kernel, "prepare", "begin", profile=text, xml=DOMAIN_XML)
    assert code == 0, err
    assert system_state(kernel) != start
    code, _, err = hook(kernel, "release", "end", xml=DOMAIN_XML)
    assert code == 0, err
    assert system_state(kernel) == start
    if profile == "single-gpu":
        assert book.calls == [
            ["systemctl", "--user", "--machine=1000@.host", "stop", "graphical-session.target"],
            ["systemctl", "stop", "gdm3.service"],
            ["systemctl", "start", "gdm3.service"],
        ]


@pytest.mark.parametrize(
    "args",
    [
        ("single-gpu",),
        ("--xml", "config/tuned-dual-gpu.xml", "tuned-dual-gpu"),
    ],
)
def test_the_readme_shows_the_current_dry_runs(args):
    result = program(
        "--dry-run",
        "--root",
        "config/demo-host",
        "--config-dir",
        "config",
        *args,
        "prepare",
        "begin",
    )
    assert result.code == 0, result.out + result.err
    assert result.out in (REPO / "README.md").read_text(), (
        "README.md shows an outdated dry run; paste the new one:\n" + result.out
    )


def test_the_demo_host_has_no_empty_directory():
    """git keeps no empty directory: a clone's demo host would differ from a generated one."""
    empty = [
        str(Path(d).relative_to(DEMO)) for d, dirs, files in os.walk(DEMO) if not dirs and not files
    ]
    assert empty == []
