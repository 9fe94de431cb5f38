"""--json: every command prints exactly one JSON document on stdout, valid against the
schema shipped in the package (passthrough/output.schema.json), for good and bad input,
with the exit code it has without --json."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import jsonschema
import pytest
from hosts import SEED_PROFILE
from runs import command, hook
from tool_trees import REPO, host_tree, write_profile

from passthrough.output import FORMAT, SCHEMA

VALIDATOR = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
XML = REPO / "config" / "win10.xml"


def one_document(out: str) -> dict:
    """stdout holds exactly one JSON document, and it is valid."""
    document, end = json.JSONDecoder().raw_decode(out)
    assert out[end:].strip() == "", f"more than one document on stdout: {out!r}"
    errors = sorted(VALIDATOR.iter_errors(document), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)
    assert document["format"] == FORMAT
    return document


@pytest.fixture
def setup(tmp_path):
    root = host_tree(tmp_path, "demo")
    profiles = tmp_path / "profiles"
    write_profile(profiles, "win10", SEED_PROFILE)
    os.chmod(profiles / "win10.yaml", 0o644)
    os.chmod(profiles, 0o755)
    state = root / "run" / "passthrough-hook"
    state.mkdir(parents=True)
    return root, profiles, state


def cases(root: Path, profiles: Path, state: Path, tmp: Path) -> list[tuple[list, int, str]]:
    """(argv, exit code, command) for every command, good and bad."""
    r, c, s = str(root), str(profiles), str(state)
    bad_profiles = tmp / "bad"
    write_profile(
        bad_profiles,
        "win10",
        'devices: {gpu: "0000:03:00.0"}\nprepare/begin:\n  - detatch: [gpu]\n',
    )
    os.chmod(bad_profiles / "win10.yaml", 0o644)
    os.chmod(bad_profiles, 0o755)
    no_iommu = host_tree(tmp, "mixed", "no-iommu", iommu=False)
    existing = tmp / "existing"
    existing.mkdir()
    (existing / "x").write_text("")
    return [
        # the hook form: dry run, its errors
        (["--dry-run", "--root", r, "--config-dir", c, "win10", "prepare", "begin"], 0, "event"),
        (["--dry-run", "--root", r, "--config-dir", c, "win10", "release", "end"], 0, "event"),
        (["--dry-run", "--root", r, "--config-dir", c, "win10", "preapre", "begin"], 2, "event"),
        (["--dry-run", "--root", r, "--config-dir", c, "win11", "prepare", "begin"], 2, "event"),
        (
            [
                "--dry-run",
                "--root",
                r,
                "--config-dir",
                str(bad_profiles),
                "win10",
                "prepare",
                "begin",
            ],
            2,
            "event",
        ),
        (["--dry-run", "--root", "/no/such", "win10", "prepare", "begin"], 2, "event"),
        (["chekc", "win10", "prepare", "begin"], 2, "event"),
        # a real run on a tree: refused (modprobe would act on this machine's kernel)
        (
            [
                "--root",
                r,
                "--config-dir",
                c,
                "--state-dir",
                s,
                "--log-file",
                str(tmp / "log"),
                "win10",
                "prepare",
                "begin",
            ],
            1,
            "event",
        ),
        # recover
        (["recover", "--root", r, "--state-dir", s, "win10"], 0, "recover"),
        (["recover", "--root", r, "--state-dir", "/no/such", "win10"], 2, "recover"),
        # check
        (["check", "--root", r, "--config-dir", c, "--xml", str(XML), "win10"], 0, "check"),
        (
            ["check", "--root", str(no_iommu), "--config-dir", c, "--xml", str(XML), "win10"],
            1,
            "check",
        ),
        (["check", "--root", r, "--config-dir", c, "win11"], 2, "check"),
        # iommu
        (["iommu", "--root", r], 0, "iommu"),
        (["iommu", "--root", str(no_iommu)], 1, "iommu"),
        (["--root", "/no/such", "iommu"], 2, "iommu"),
        # status
        (["status", "--root", r], 0, "status"),
        (["status", "--root", r, "--state-dir", "/no/such"], 2, "status"),
        # validate
        (["validate", "--config-dir", c], 0, "validate"),
        (["validate", "--config-dir", str(bad_profiles)], 2, "validate"),
        (["validate", "--config-dir", c, "win11"], 2, "validate"),
        # snapshot
        (["snapshot", "--root", r, str(tmp / "copy")], 0, "snapshot"),
        (["snapshot", "--root", r, str(existing)], 2, "snapshot"),
        # init
        (
            ["init", "--root", r, "--config-dir", str(tmp / "new"), "--xml", str(XML), "win10"],
            0,
            "init",
        ),
        (["init", "--root", r, "--config-dir", c, "--xml", str(XML), "win10"], 2, "init"),
        # help's own errors
        (["help", "chekc"], 2, "help"),
    ]


def test_every_command_prints_one_valid_document(setup, tmp_path):
    root, profiles, state = setup
    for argv, code, name in cases(root, profiles, state, tmp_path):
        got, out, err = command("--json", *argv) if name != "help" else command(*argv, "--json")
        assert got == code, (argv, out, err)
        document = one_document(out)
        assert document["command"] == name, (argv, document)
        if "error" in document:
            assert document["error"]["exit_code"] == code and not document["ok"], argv
        if argv[0] not in ("snapshot", "init"):  # those wrote their result the first time
            assert command(*argv)[0] == code, argv  # the same exit code without --json


def test_a_dry_run_step_is_planned_not_done(setup):
    root, profiles, _ = setup
    code, out, _ = command(
        "--dry-run", "--json", "--root", root, "--config-dir", profiles, "win10", "prepare", "begin"
    )
    document = one_document(out)
    assert code == 0 and document["dry_run"] and document["steps"]
    assert {step["status"] for step in document["steps"]} == {"planned"}


def test_nothing_to_recover_is_a_document(setup):
    root, _, state = setup
    code, out, _ = command("recover", "--json", "--root", root, "--state-dir", state, "win10")
    document = one_document(out)
    assert code == 0 and document["ok"] and document["note"].startswith("nothing to recover")


def test_a_real_run_prints_one_document(kernel):
    """On the fake kernel: the run's result, with the steps done."""
    os.makedirs("/profiles", exist_ok=True)
    Path("/profiles/win10.yaml").write_text(SEED_PROFILE)
    os.chmod("/profiles/win10.yaml", 0o644)
    code, out, err = hook(kernel, "prepare", "begin", json=True)
    document = one_document(out)
    assert code == 0 and document["ok"] and not document["dry_run"], err
    assert {step["status"] for step in document["steps"]} == {"done"}


def test_the_schema_is_package_data():
    """install.sh copies passthrough/*.json, pyproject's package-data is passthrough/*.json."""
    assert SCHEMA.parent == REPO / "passthrough" and SCHEMA.suffix == ".json"
    assert '"*.json"' in (REPO / "pyproject.toml").read_text()
    assert shutil.which("true")  # nothing else needed
