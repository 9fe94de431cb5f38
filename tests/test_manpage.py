"""docs/passthrough-hook.8 is what `passthrough-hook help --man` generates from the parsers,
and LICENSE is the license pyproject declares."""

import os
import shutil
import subprocess

import pytest
from runs import command
from tool_trees import REPO

from passthrough.cli import GLOBAL_OPTIONS, SUBCOMMANDS

PAGE = REPO / "docs" / "passthrough-hook.8"


def test_the_committed_man_page_is_current():
    code, out, _ = command("help", "--man")
    assert code == 0
    assert PAGE.read_text() == out, (
        "run `python3 -m passthrough help --man > docs/passthrough-hook.8`"
    )


def test_the_man_page_names_every_command_and_option():
    text = PAGE.read_text()
    for name in SUBCOMMANDS:
        assert f".SS passthrough\\-hook {name}" in text
    for option in GLOBAL_OPTIONS:
        assert option.flag.replace("-", "\\-") in text


def test_groff_renders_it_without_warnings():
    if shutil.which("groff") is None:
        outcome = pytest.fail if os.environ.get("PASSTHROUGH_ALL_TIERS") == "1" else pytest.skip
        outcome("groff is not installed (tools/test installs groff-base)")
    result = subprocess.run(
        ["groff", "-man", "-Tutf8", "-ww", "-z", str(PAGE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_license_matches_pyproject():
    assert 'license = {text = "MIT"}' in (REPO / "pyproject.toml").read_text()
    assert (REPO / "LICENSE").read_text().startswith("MIT License\n")
