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


# As hooks/qemu starts (-I -S, then the site directories without running site.main()), so
# what the machine's site-packages import at start-up is not counted; json only after.
REAL_EVENT = """
import os, site, sys
sys.path += [d for d in site.getsitepackages() if os.path.isdir(d)]
sys.path.insert(0, os.environ["REPO"])
from passthrough.event import Paths
from passthrough.hook import hook_main
root, config = sys.argv[1:3]
paths = Paths.resolve(root=root, config_dir=config)
code = hook_main(sys.argv[3:], paths=paths)
modules = sorted(sys.modules)
import json
print(json.dumps({"code": code, "modules": modules}))
"""


def test_an_event_with_steps_on_the_real_host_imports_no_dry_run_and_no_archives(tmp_path):
    """A governor step on a host tree on disk (the real host, rooted, so nothing of this
    machine is touched): its runner, journal and log, and not the dry run's kernel model,
    nor shutil (with bz2 and lzma)."""
    root, config = tmp_path / "root", tmp_path / "config"
    cpufreq = root / "sys/devices/system/cpu/cpu0/cpufreq"
    cpufreq.mkdir(parents=True)
    (root / "sys/devices/system/cpu/online").write_text("0\n")
    (cpufreq / "scaling_governor").write_text("schedutil\n")
    (cpufreq / "scaling_available_governors").write_text("schedutil performance\n")
    config.mkdir()
    (config / "win10.yaml").write_text("prepare/begin:\n  - governor: performance\n")
    os.chmod(config / "win10.yaml", 0o644)
    # A host where the hook ran before: the state directory is there, and the first call
    # keeps the validated profile in it (PyYAML, with re, is imported by that call only).
    (root / "run/passthrough-hook").mkdir(parents=True, mode=0o700)
    env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "REPO": str(REPO)}
    argv = (str(root), str(config), "win10", "prepare", "begin", "-")
    first = probe(REAL_EVENT, *argv, env=env, stdin="<domain/>", flags=("-I", "-S"))
    assert first["code"] == 0 and "yaml" in first["modules"]
    (cpufreq / "scaling_governor").write_text("schedutil\n")
    result = probe(REAL_EVENT, *argv, env=env, stdin="<domain/>", flags=("-I", "-S"))
    modules = set(result["modules"])
    assert result["code"] == 0
    assert (cpufreq / "scaling_governor").read_text().strip() == "performance"  # it ran
    assert "yaml" not in modules
    assert "passthrough.runner" in modules and "passthrough.journal" in modules
    # typing: the program's modules take typing's names only for type checkers.
    for name in ("passthrough.host.dryrun", "passthrough.host.kernel_model", "shutil", "bz2"):
        assert name not in modules, name
    for name in ("typing", "subprocess"):
        assert name not in modules, name
    # Under QEMU each of these (with what it imports) cost an event 0.1 to 0.4 s: paths are
    # strings, the journal's JSON is _json's, the step scope and the lock are classes, the
    # bounded call a _thread, and no pattern is needed by a governor step.
    for name in ("pathlib", "json", "re", "enum", "functools", "collections", "contextlib"):
        assert name not in modules, name
    assert "threading" not in modules


def test_libvirts_next_call_for_a_domain_does_not_import_yaml(tmp_path):
    """The first call keeps the validated profile beside the journals; the next one reads
    that copy (passthrough/profile_cache.py) and leaves PyYAML out."""
    root, config = tmp_path / "root", tmp_path / "config"
    (root / "run/passthrough-hook").mkdir(parents=True, mode=0o700)
    config.mkdir()
    (config / "win10.yaml").write_bytes((REPO / "config/win10.yaml").read_bytes())
    os.chmod(config / "win10.yaml", 0o644)
    env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "REPO": str(REPO)}
    argv = (str(root), str(config), "win10", "started", "begin", "-")
    first = probe(REAL_EVENT, *argv, env=env, stdin="<domain/>", flags=("-I", "-S"))
    second = probe(REAL_EVENT, *argv, env=env, stdin="<domain/>", flags=("-I", "-S"))
    assert first["code"] == second["code"] == 0
    assert "yaml" in first["modules"]
    assert "yaml" not in second["modules"]
    assert "passthrough.profile" in second["modules"]  # the profile's classes, not its parser
