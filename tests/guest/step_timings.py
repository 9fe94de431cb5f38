"""Summarise the timings of the seed-like cycles (run inside the guest, stdlib only).

    python3 step_timings.py OUT CYCLES BARE_RUNS

Reads what the scenario left in OUT: the hook's --json output of each run
(cycle/NN-prepare.out, cycle/NN-release.out; per-step seconds), the wall-clock
seconds of each hook run and of each run of bare_rebind.sh (OUT/facts), and the
phase times bare_rebind.sh printed (bare/NN-prepare.out ...).  Prints the duration
of every step of every run and writes OUT/timings.json with the raw figures, their
medians and the ratios hook / bare script:

    hook_wall    the hook process (interpreter start, profile, steps) / the script
    hook_steps   the hook's steps alone / the script
    rebind_step  the detach step (prepare) or its undo (release) / the script's
                 driver_override + unbind + drivers_probe writes
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from pathlib import Path

PHASES = ("prepare", "release")


def read_facts(out: Path) -> dict[str, str]:
    lines = (out / "facts").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def hook_run(out: Path, facts: dict[str, str], name: str) -> dict:
    """One hook run: its wall-clock seconds and (title, seconds) of each step and undo."""
    result = json.loads((out / f"{name}.out").read_text())
    steps = [(o["title"], o["seconds"]) for o in result["steps"] + result["rollback"]]
    return {"wall": float(facts[f"{name}.seconds"]), "steps": steps}


def rebind_seconds(steps: list[tuple[str, float]], phase: str) -> float:
    """The step that moves the GPU functions: the detach, or on release the undo restoring them."""
    marker = ". detach " if phase == "prepare" else ": restore "
    matches = [seconds for title, seconds in steps if marker in title]
    if len(matches) != 1:
        raise SystemExit(f"step_timings: expected one step with {marker!r} in {steps}")
    return matches[0]


def bare_run(out: Path, facts: dict[str, str], name: str) -> dict:
    phases = dict(line.split() for line in (out / f"{name}.out").read_text().splitlines())
    return {
        "wall": float(facts[f"{name}.seconds"]),
        "modules": float(phases["modules"]),
        "sysfs": float(phases["sysfs"]),
    }


def summarise(out: Path, cycles: int, bare_runs: int) -> dict:
    facts = read_facts(out)
    summary: dict = {
        "kernel": os.uname().release,
        "cycles": cycles,
        "bare_runs": bare_runs,
        "hook": {},
        "bare": {},
        "medians": {},
        "ratios": {},
    }
    for phase in PHASES:
        hook = [hook_run(out, facts, f"cycle/{n:02d}-{phase}") for n in range(1, cycles + 1)]
        bare = [bare_run(out, facts, f"bare/{n:02d}-{phase}") for n in range(1, bare_runs + 1)]
        summary["hook"][phase] = hook
        summary["bare"][phase] = bare
        median = {
            "hook_wall": statistics.median(run["wall"] for run in hook),
            "hook_steps": statistics.median(sum(s for _, s in run["steps"]) for run in hook),
            "rebind_step": statistics.median(rebind_seconds(run["steps"], phase) for run in hook),
            "bare_wall": statistics.median(run["wall"] for run in bare),
            "bare_sysfs": statistics.median(run["sysfs"] for run in bare),
        }
        summary["medians"][phase] = median
        summary["ratios"][phase] = {
            "hook_wall": median["hook_wall"] / median["bare_wall"],
            "hook_steps": median["hook_steps"] / median["bare_wall"],
            "rebind_step": median["rebind_step"] / median["bare_sysfs"],
        }
    return summary


def print_steps(summary: dict) -> None:
    for phase in PHASES:
        for number, run in enumerate(summary["hook"][phase], 1):
            print(f"cycle {number:2d} {phase}: {run['wall']:.3f} s wall")
            for title, seconds in run["steps"]:
                print(f"    {seconds:.3f} s  {title}")
        for number, run in enumerate(summary["bare"][phase], 1):
            print(
                f"bare script {number} {phase}: {run['wall']:.3f} s wall "
                f"(modules {run['modules']:.3f} s, sysfs writes {run['sysfs']:.3f} s)"
            )


def main(out: str, cycles: str, bare_runs: str) -> int:
    summary = summarise(Path(out), int(cycles), int(bare_runs))
    print_steps(summary)
    (Path(out) / "timings.json").write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
