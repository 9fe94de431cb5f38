"""libvirt's entry imports what an event needs and no more: every event of every domain
pays for each import (issue #14's cost targets, measured in tools/bench)."""

from __future__ import annotations

import os
from pathlib import Path

from runs import REPO, probe

PROBE = """
import json, sys
from passthrough.hook import hook_main
code = hook_main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def imported(tmp_path: Path, *argv: str) -> tuple[int, set[str]]:
    env = {
        "PATH": "/usr/bin:/bin",
        "LC_ALL": "C",
        "PASSTHROUGH_HOOK_CONFIG_DIR": str(tmp_path),
        "PYTHONPATH": str(REPO),
    }
    result = probe(PROBE, *argv, env=env, stdin="<domain/>")
    return result["code"], set(result["modules"])


def test_an_event_without_steps_loads_the_profile_but_not_the_command_line(tmp_path):
    profile = (REPO / "config/win10.yaml").read_text()
    (tmp_path / "win10.yaml").write_text(profile)
    os.chmod(tmp_path / "win10.yaml", 0o644)
    code, modules = imported(tmp_path, "win10", "started", "begin", "-")
    assert code == 0
    assert "passthrough.profile" in modules  # it did read the profile
    # dataclasses pulls in inspect, ast, dis: the hook's classes are passthrough.record's.
    for name in ("argparse", "passthrough.cli", "passthrough.output", "difflib", "dataclasses"):
        assert name not in modules, name
    assert not [m for m in modules if m.startswith("passthrough.tools")]
    # No step ran, so the runner, the journal and the log were not imported.
    for name in ("passthrough.runner", "passthrough.journal", "passthrough.log"):
        assert name not in modules, name
