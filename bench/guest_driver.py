"""The real-kernel benchmark, run inside the QEMU guest (tests/guest/harness.py).

    cd /project && python3 -B -m bench.guest_driver --rounds N --out FILE

Installs the hook in the guest's tmpfs (so its .pyc are written once, as an install
has them) with a seed-like profile: load vfio_pci, detach the GPU-like card's video
and audio functions to vfio-pci through sysfs, resize BAR 4 of the ReBAR device to
64 MiB. Then, in rounds that alternate which goes first, times as libvirt runs them:

  hook      hooks/qemu win10 prepare begin -, then release end -
  minimal   bench/guest_minimal.sh: the same writes with no checks
  floor     python3 -I -c pass (the interpreter's start under TCG)

and once the tutorial variant (guest_minimal.sh with `sleep 2` after each rebinding).
After every run the devices are checked: a run that did not do its job is an error,
not a figure. Writes the raw figures as JSON; bench/guest.py turns them into rows.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import time
from pathlib import Path

from .measure import HOOK_ENV, BenchError, ChildRun, Command, check_exit, run_child

PROJECT = Path(__file__).resolve().parent.parent
INSTALL = Path("/tmp/passthrough-hook")  # the guest's tmpfs
CONFIG = Path("/tmp/passthrough-config")
PYTHON = "/usr/bin/python3"
SYS = Path("/sys/bus/pci/devices")
NAP_SECONDS = 2  # the tutorials' fixed sleep after a rebinding
REBINDINGS = 6  # per prepare + release in guest_minimal.sh: 3 each way
STEP_LINE = re.compile(r": (?:done|undone) \((\d+) ms\)$")
# passthrough-hook: win10 prepare/begin: 2. detach gpu, gpu-audio ...: done (812 ms)
STEP_TITLE = re.compile(r"^passthrough-hook: \S+ \S+: (.+): (?:done|undone) \((\d+) ms\)$")

PROFILE = """\
# The benchmark's seed-like profile (bench/guest_driver.py)
devices:
  gpu: "{video}"
  gpu-audio: "{audio}"
  rebar: "{rebar}"
prepare/begin:
  - modprobe: [vfio_pci]
  - detach: {{devices: [gpu, gpu-audio], via: sysfs}}
  - resize_bar: {{device: rebar, bar: {bar}, size: 64MiB}}
"""


def env(name: str) -> str:
    return os.environ[name]


def install() -> None:
    """Copy the hook and the package to tmpfs and write the profile, owned by root, 0644."""
    shutil.rmtree(INSTALL, ignore_errors=True)
    for part in ("hooks", "passthrough"):
        shutil.copytree(
            PROJECT / part, INSTALL / part, ignore=shutil.ignore_patterns("__pycache__")
        )
    CONFIG.mkdir(mode=0o755, exist_ok=True)
    (CONFIG / "win10.yaml").write_text(
        PROFILE.format(
            video=env("GPU_VIDEO"),
            audio=env("GPU_AUDIO"),
            rebar=env("REBAR_DEVICE"),
            bar=env("REBAR_BAR"),
        )
    )


def driver(address: str) -> str | None:
    try:
        return os.path.basename(os.readlink(SYS / address / "driver"))
    except OSError:
        return None


def bar_mib(address: str, bar: int) -> int:
    start, end, _flags = (
        int(part, 16) for part in (SYS / address / "resource").read_text().splitlines()[bar].split()
    )
    return (end - start + 1) >> 20


def state() -> dict:
    return {
        "video": driver(env("GPU_VIDEO")),
        "audio": driver(env("GPU_AUDIO")),
        "rebar": driver(env("REBAR_DEVICE")),
        "bar_mib": bar_mib(env("REBAR_DEVICE"), int(env("REBAR_BAR"))),
        "vfio_pci_loaded": Path("/sys/module/vfio_pci").exists(),
    }


def expected(phase: str, initial: dict) -> dict:
    if phase == "release":
        return initial
    return {
        **initial,
        "video": "vfio-pci",
        "audio": "vfio-pci",
        "bar_mib": 64,
        "vfio_pci_loaded": True,
    }


def settle(phase: str, initial: dict, who: str) -> float:
    """Seconds until the devices are as the phase should leave them (0 if they already are);
    a run whose result never shows is an error."""
    wanted = expected(phase, initial)
    started = time.perf_counter()
    if state() == wanted:
        return 0.0
    while state() != wanted:
        if time.perf_counter() - started > 10:
            raise BenchError(f"{who} {phase}: devices are {state()}, expected {wanted}")
        time.sleep(0.001)
    return time.perf_counter() - started


def hook_command(phase: str, *python_options: str) -> Command:
    """The hook as libvirt runs it: its #! line's interpreter options (-I -S), as installed."""
    sub = "begin" if phase == "prepare" else "end"
    hook = INSTALL / "hooks" / "qemu"
    options = hook.read_text().split("\n", 1)[0].split()[1:]
    return Command(
        (PYTHON, *options, *python_options, str(hook), "win10", phase, sub, "-"),
        env={**HOOK_ENV, "PASSTHROUGH_HOOK_CONFIG_DIR": str(CONFIG)},
        stdin=(PROJECT / "bench" / "domain.xml").read_bytes(),
        keep_output=True,
    )


def minimal_command(phase: str, nap: int | None = None) -> Command:
    names = ("GPU_VIDEO", "GPU_AUDIO", "REBAR_DEVICE", "REBAR_BAR")
    variables = {name: env(name) for name in names}
    if nap:
        variables["NAP"] = str(nap)
    return Command(
        ("/usr/bin/bash", str(PROJECT / "bench" / "guest_minimal.sh"), phase),
        env={**HOOK_ENV, **variables},
        keep_output=True,
    )


def steps_ms(run: ChildRun) -> float:
    """The hook's own time for its steps, from the lines it prints per step."""
    return sum(int(m.group(1)) for line in run.output.splitlines() if (m := STEP_LINE.search(line)))


def imports_ms(run: ChildRun) -> float:
    """Total import time from `-X importtime` output (top-level imports, cumulative)."""
    return sum(ms for _name, ms in importtime_lines(run, top_level=True)) / 1000


def importtime_lines(run: ChildRun, top_level: bool) -> list[tuple[str, int]]:
    """(module, µs) from `-X importtime` output: each top-level import's cumulative time
    (nested ones are inside their parent's), or every module's own time."""
    found = []
    for line in run.output.splitlines():
        if line.startswith("import time:") and not line.startswith("import time: self"):
            own, cumulative, name = line[len("import time:") :].split("|")
            if not top_level:
                found.append((name.strip(), int(own)))
            elif not name.startswith("  "):  # nested imports are inside their parent's figure
                found.append((name.strip(), int(cumulative)))
    return found


def import_cost(initial: dict) -> dict:
    """One prepare + release with -X importtime: how much of each event is importing, and
    the modules that cost most (their own time, summed over both events)."""
    figures: dict = {}
    heaviest: dict[str, int] = {}
    for phase in ("prepare", "release"):
        command = hook_command(phase, "-X", "importtime")
        run = run_child(command)
        check_exit(command, run)
        settle(phase, initial, "hook")
        figures[phase] = imports_ms(run)
        for name, us in importtime_lines(run, top_level=False):
            heaviest[name] = heaviest.get(name, 0) + us
    ranked = sorted(heaviest.items(), key=lambda item: -item[1])
    figures["modules"] = len(heaviest)
    figures["heaviest"] = [[name, round(us / 1000, 1)] for name, us in ranked[:25]]
    return figures


def cycle(who: str, initial: dict, nap: int | None = None) -> dict:
    """prepare then release; wall ms of each, and how long the devices took to show the result."""
    figures: dict = {}
    for phase in ("prepare", "release"):
        command = hook_command(phase) if who == "hook" else minimal_command(phase, nap)
        run = run_child(command)
        check_exit(command, run)
        figures[phase] = run.seconds * 1000
        figures[f"{phase}_settle"] = settle(phase, initial, who) * 1000
        if who == "hook":
            figures[f"{phase}_steps"] = steps_ms(run)
            figures[f"{phase}_each"] = [
                [m.group(1), int(m.group(2))]
                for line in run.output.splitlines()
                if (m := STEP_TITLE.match(line))
            ]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    install()
    initial = state()
    if (
        initial["vfio_pci_loaded"]
        or initial["video"] in (None, "vfio-pci")
        or initial["audio"] in (None, "vfio-pci")
    ):
        raise BenchError(f"the guest does not start as the benchmark expects: {initial}")
    results: dict = {"initial": initial, "hook": [], "minimal": [], "floor": []}
    cycle("hook", initial)  # warm-up: .pyc written, page cache filled
    cycle("minimal", initial)
    floor = Command((PYTHON, "-I", "-c", "pass"))
    for number in range(args.rounds):
        order = ("hook", "minimal") if number % 2 == 0 else ("minimal", "hook")
        for who in order:
            results[who].append(cycle(who, initial))
        results["floor"].append(run_child(floor).seconds * 1000)
    results["imports"] = import_cost(initial)
    results["tutorial"] = cycle("tutorial", initial, nap=NAP_SECONDS)
    results["nap_seconds"] = NAP_SECONDS
    results["rebindings"] = REBINDINGS
    results["profile"] = (CONFIG / "win10.yaml").read_text()
    args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
