"""The collection in ansible/ against three throwaway Debian systems (see conftest.py).

One fleet, in order: the README's inventory and playbook as written (first install, the
profile placed, the fleet report with lab1 holding its card and lab3 failing `check`), a
second run that changes nothing, `--check --diff`, a bad profile rejected with its
file:line:col and nothing placed, and the README's removal playbook leaving the hosts'
hooks as they were. Plus `ansible-galaxy collection build` and `ansible-lint`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ansible_fleet import COLLECTION, REPO, Fleet, ansible, ansible_env, extract, lay_over

sys.path.insert(0, str(REPO / "tests"))
from hosts import demo_host, mixed_group_host, write_tree  # noqa: E402

pytestmark = pytest.mark.ansible

FOREIGN_HOOK = "#!/bin/sh\n# the site's own qemu hook, which must survive\nexit 0\n"
# What the removal must leave as it found it.
WATCHED = ("etc/libvirt", "usr/local", "var/lib/passthrough-hook", "var/cache/passthrough-hook")


def readme_section() -> str:
    text = (REPO / "README.md").read_text()
    start = text.index("\n## Many hosts\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def readme_block(first_line: str) -> str:
    """The README block (```yaml) of the Many hosts section that starts with first_line."""
    for block in re.findall(r"```yaml\n(.*?)```", readme_section(), re.S):
        if block.startswith(first_line):
            return block
    raise AssertionError(f"README's Many hosts section has no yaml block starting {first_line!r}")


def moved_card(spec, old: str, new: str):
    """The same host with its card (all functions of slot `old`) at slot `new`."""

    def move(address):
        return address.replace(old, new) if address and address.startswith(old) else address

    functions = [
        dataclasses.replace(fn, address=move(fn.address), bridge=move(fn.bridge))
        for fn in spec.functions
    ]
    system = dataclasses.replace(
        spec.system,
        drm={move(a): v for a, v in spec.system.drm.items()},
        sound={move(a): v for a, v in spec.system.sound.items()},
    )
    return dataclasses.replace(spec, functions=functions, system=system)


def tree_digest(root: Path) -> dict[str, str]:
    """path -> mode/owner and content (or link target) of everything under WATCHED."""
    found = {}
    for top in WATCHED:
        base = root / top
        if not os.path.lexists(base):
            continue
        for dirpath, dirs, files in os.walk(base):
            for name in [".", *dirs, *files]:
                path = Path(dirpath) / name if name != "." else Path(dirpath)
                st = path.lstat()
                rel = str(path.relative_to(root))
                if path.is_symlink():
                    found[rel] = f"link {os.readlink(path)}"
                elif path.is_dir():
                    found[rel] = f"dir {st.st_mode:o} {st.st_uid}:{st.st_gid}"
                else:
                    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
                    found[rel] = f"file {st.st_mode:o} {st.st_uid}:{st.st_gid} {digest}"
    return found


LAB1_PROFILE = """\
devices:
  gpu: 0000:03:00.0
  gpu-audio: 0000:03:00.1
prepare/begin:
- modprobe:
  - vfio
  - vfio_iommu_type1
  - vfio_pci
- detach:
  - gpu
  - gpu-audio
"""


@pytest.fixture(scope="module")
def fleet(ansible_bin, collections_path, debian_tarball, tmp_path_factory):
    """lab1: the demo host with win10 running (its journal written by the program on the
    fake kernel); lab2: the same host with the card in another slot and a qemu hook of its
    own; lab3: the mixed host, whose card shares an IOMMU group with a USB controller."""
    work = tmp_path_factory.mktemp("fleet")
    trees = work / "trees"
    targets = {}
    for name in ("lab1", "lab2", "lab3"):
        targets[name] = extract(debian_tarball, work / "targets" / name)

    profile = work / "lab1-win10.yaml"
    profile.write_text(LAB1_PROFILE)
    held = trees / "lab1"
    subprocess.run(
        [
            sys.executable,
            str(Path(__file__).with_name("record_hold.py")),
            "demo",
            str(profile),
            "win10",
            str(held),
        ],
        check=True,
    )
    lay_over(targets["lab1"], held)
    write_tree(moved_card(demo_host(), "0000:03:00", "0000:0a:00"), trees / "lab2")
    lay_over(targets["lab2"], trees / "lab2")
    hooks = targets["lab2"] / "etc/libvirt/hooks"
    hooks.mkdir(parents=True)
    (hooks / "qemu").write_text(FOREIGN_HOOK)
    os.chmod(hooks / "qemu", 0o755)
    write_tree(mixed_group_host(), trees / "lab3")
    lay_over(targets["lab3"], trees / "lab3")

    fleet = Fleet(ansible_bin, collections_path, work, targets)
    fleet.before = {name: tree_digest(root) for name, root in targets.items()}
    fleet.runs = {}
    yield fleet
    # rm(1) is much quicker than shutil.rmtree on these trees (nothing is mounted in them).
    subprocess.run(["rm", "-rf", "--one-file-system", *map(str, targets.values())], check=True)


def write_readme_files(fleet: Fleet) -> tuple[Path, Path]:
    inventory = fleet.workdir / "inventory.yml"
    inventory.write_text(readme_block("# inventory.yml"))
    playbook = fleet.workdir / "site.yml"
    playbook.write_text(readme_block("# site.yml"))
    return inventory, playbook


def test_the_collection_builds_and_passes_ansible_lint(ansible_bin, collections_path, tmp_path):
    installed = collections_path / "ansible_collections/passthrough/passthrough_hook"
    assert (installed / "roles/hook/tasks/main.yml").is_file()
    assert (installed / "plugins/modules/preflight.py").is_file()
    galaxy = yaml.safe_load((COLLECTION / "galaxy.yml").read_text())
    version = re.search(r'^version = "(.*)"', (REPO / "pyproject.toml").read_text(), re.M)[1]
    assert galaxy["version"] == version, "ansible/galaxy.yml and pyproject.toml name one version"
    copy = tmp_path / "passthrough_hook"
    shutil.copytree(COLLECTION, copy, ignore=shutil.ignore_patterns(".ansible"))
    result = ansible(
        ansible_bin,
        "ansible-lint",
        "--offline",
        "--nocolor",
        cwd=copy,
        env={**ansible_env(collections_path, tmp_path / "home"), "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Passed: 0 failure(s), 0 warning(s)" in result.stdout + result.stderr


def test_first_run_of_the_readme_playbook(fleet):
    inventory, playbook = write_readme_files(fleet)
    run = fleet.playbook(playbook, inventory=inventory)
    fleet.runs["first"] = run
    # lab3's check fails: that host fails at the end, the others do not.
    assert run.returncode == 2, run.output
    assert run.failed() == {"lab1": 0, "lab2": 0, "lab3": 1}, run.output
    assert all(count > 0 for count in run.changed().values()), run.output
    assert "fatal: [lab3]: FAILED! => " in run.output
    assert "passthrough-hook check failed for win10: IOMMU group 7 of gpu" in run.output

    for name, root in fleet.targets.items():
        assert os.access(root / "usr/local/bin/passthrough-hook", os.X_OK)
        profile = root / "etc/libvirt/hooks/passthrough/win10.yaml"
        st = profile.stat()
        assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o600, 0, 0)
        data = yaml.safe_load(profile.read_text())
        bus = "0a" if name == "lab2" else "03"
        assert data["devices"] == {"gpu": f"0000:{bus}:00.0", "gpu-audio": f"0000:{bus}:00.1"}
        assert data["prepare/begin"] == [
            {"modprobe": ["vfio", "vfio_iommu_type1", "vfio_pci"]},
            {"detach": ["gpu", "gpu-audio"]},
        ]
    # install.sh keeps a hook of the site's own and goes to qemu.d beside it.
    lab2_hooks = fleet.targets["lab2"] / "etc/libvirt/hooks"
    assert (lab2_hooks / "qemu").read_text() == FOREIGN_HOOK
    assert (lab2_hooks / "qemu.d/passthrough-hook").is_file()
    assert (
        "installed by passthrough-hook"
        in (fleet.targets["lab1"] / "etc/libvirt/hooks/qemu").read_text()
    )
    assert "libvirt is not running; it will find the hook when it starts" in run.output

    report = json.loads((fleet.workdir / "passthrough-fleet.json").read_text())
    assert report["format"] == 1
    assert report["devices"] == [
        {
            "host": "lab1",
            "domain": "win10",
            "name": "gpu",
            "address": "0000:03:00.0",
            "driver": "vfio-pci",
            "was": "amdgpu",
            "since": report["devices"][0]["since"],
        },
        {
            "host": "lab1",
            "domain": "win10",
            "name": "gpu-audio",
            "address": "0000:03:00.1",
            "driver": "vfio-pci",
            "was": "snd_hda_intel",
            "since": report["devices"][0]["since"],
        },
    ]
    assert report["stuck"] == []
    [failed] = report["failed_checks"]
    assert (failed["host"], failed["domain"]) == ("lab3", "win10")
    assert "also holds 0000:02:00.0 (USB controller, xhci_hcd)" in failed["errors"][0]
    assert report["hosts"]["lab2"]["checks"]["win10"]["ok"] is True
    assert report["hosts"]["lab2"]["holds"] == []

    # The README shows this run's table.
    shown = re.search(r"```\n(HOST .*?)```", readme_section(), re.S)
    assert shown, "README's Many hosts section shows the fleet table"
    table = re.search(
        r'"msg": \[\n(.*?)\n\s*\]', run.output.split("Show the fleet report")[1], re.S
    )
    real = [json.loads(line.strip().rstrip(",")) for line in table[1].splitlines()]
    assert shown[1].splitlines() == real


def test_second_run_changes_nothing(fleet):
    inventory, playbook = write_readme_files(fleet)
    run = fleet.playbook(playbook, inventory=inventory)
    fleet.runs["second"] = run
    assert run.changed() == {"lab1": 0, "lab2": 0, "lab3": 0}, run.output
    assert run.failed() == {"lab1": 0, "lab2": 0, "lab3": 1}, run.output


def test_check_diff_shows_the_change_and_makes_none(fleet):
    inventory, playbook = write_readme_files(fleet)
    more = fleet.workdir / "resize.yml"
    profile = yaml.safe_load(readme_block("# inventory.yml"))["passthrough_hosts"]["vars"][
        "passthrough_hook_profiles"
    ]
    profile[0]["profile"]["prepare/begin"].append(
        {"resize_bar": {"device": "gpu", "bar": 2, "size": "8MiB"}}
    )
    more.write_text(yaml.safe_dump({"passthrough_hook_profiles": profile}, sort_keys=False))
    before = {name: tree_digest(root) for name, root in fleet.targets.items()}
    run = fleet.playbook(playbook, "--check", "--diff", "-e", f"@{more}", inventory=inventory)
    assert run.changed() == {"lab1": 1, "lab2": 1, "lab3": 1}, run.output
    assert "+- resize_bar:" in run.output and "+    size: 8MiB" in run.output, run.output
    assert "/etc/libvirt/hooks/passthrough/win10.yaml" in run.output
    assert {name: tree_digest(root) for name, root in fleet.targets.items()} == before


def test_a_bad_profile_is_rejected_with_its_position_and_nothing_is_placed(fleet):
    inventory, _ = write_readme_files(fleet)
    playbook = fleet.workdir / "profiles.yml"
    playbook.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "Profiles",
                    "hosts": "passthrough_hosts",
                    "gather_facts": False,
                    "roles": ["passthrough.passthrough_hook.profiles"],
                }
            ]
        )
    )
    bad = fleet.workdir / "bad.yml"
    good = yaml.safe_load(readme_block("# inventory.yml"))["passthrough_hosts"]["vars"][
        "passthrough_hook_profiles"
    ][0]
    changed_good = {
        "domain": "win10",
        "profile": {
            **good["profile"],
            "prepare/begin": [{"modprobe": ["vfio_pci"]}, {"detach": ["gpu", "gpu-audio"]}],
        },
    }
    typo = {
        "domain": "win11",
        "profile": {"devices": {"gpu": "{{ gpu }}"}, "prepare/begin": [{"detatch": ["gpu"]}]},
    }
    bad.write_text(yaml.safe_dump({"passthrough_hook_profiles": [changed_good, typo]}))
    before = {name: tree_digest(root) for name, root in fleet.targets.items()}
    run = fleet.playbook(playbook, "-e", f"@{bad}", inventory=inventory)
    assert run.returncode == 2
    assert run.failed() == {"lab1": 1, "lab2": 1, "lab3": 1}, run.output
    for host in ("lab1", "lab2", "lab3"):
        assert (
            f'fatal: [{host}]: FAILED! => {{"changed": false, "msg": "no profile was placed: '
            '/etc/libvirt/hooks/passthrough/win11.yaml:6:3: unknown action \\"detatch\\" (did you '
            'mean \\"detach\\"?); expected one of modprobe, detach, '
        ) in run.output, run.output
        assert f"(line 6 as rendered for {host}: `- detatch:`)" in run.output
    # The README shows lab1's failure as it is.
    shown = re.search(r"```\n(fatal: \[lab1\].*?)\n```", readme_section(), re.S)
    assert shown, "README's Many hosts section shows the rejected profile"
    assert shown[1] in run.output.splitlines()
    # Neither the bad profile nor the good change next to it landed.
    assert {name: tree_digest(root) for name, root in fleet.targets.items()} == before
    fleet.bad_profile_output = run.output


def test_the_readme_removal_leaves_the_hooks_as_they_were(fleet):
    inventory, _ = write_readme_files(fleet)
    block = re.search(r"```yaml\n(- name: Remove passthrough-hook\n.*?)```", readme_section(), re.S)
    playbook = fleet.workdir / "remove.yml"
    playbook.write_text(block[1])
    # lab1's win10 still holds its GPU (its journal): install.sh refuses to take the hook away
    # there, naming the domain; the other hosts are done.
    refused = fleet.playbook(playbook, inventory=inventory)
    assert refused.returncode != 0
    assert refused.failed() == {"lab1": 1, "lab2": 0, "lab3": 0}, refused.output
    assert "win10 still has devices set up by its profile" in refused.output
    assert refused.changed()["lab2"] > 0 and refused.changed()["lab3"] > 0, refused.output
    # win10 stops: its release/end gives the devices back and the journal goes.
    (fleet.targets["lab1"] / "run/passthrough-hook/win10.json").unlink()
    run = fleet.playbook(playbook, inventory=inventory)
    assert run.returncode == 0, run.output
    assert run.changed()["lab1"] > 0, run.output
    after = {name: tree_digest(root) for name, root in fleet.targets.items()}
    assert after == fleet.before
    assert (fleet.targets["lab2"] / "etc/libvirt/hooks/qemu").read_text() == FOREIGN_HOOK
    again = fleet.playbook(playbook, inventory=inventory)
    assert again.changed() == {"lab1": 0, "lab2": 0, "lab3": 0}, again.output
