"""Figure 4: prepare + release in a real Linux kernel, in one boot of the test suite's QEMU
guest (tests/guest/harness.py; TCG, so every time here is slower than on hardware).
The guest side is bench/guest_driver.py; this turns its raw numbers into rows."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from .measure import BenchError, Figure

WHOLE_TARGET = 3.0  # the hook's two processes against the script doing the same writes
STEPS_TARGET = 1.5  # the hook's steps (as it logs them) against the same script

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "guest"))

SCENARIO = """\
set -euo pipefail
cd /project
/usr/bin/python3 -B -m bench.guest_driver --rounds {rounds} --out "$OUT/bench.json"
"""


def run_guest(rounds: int) -> dict:
    from harness import GuestError, run_in_guest

    try:
        run = run_in_guest(SCENARIO.format(rounds=rounds), iommu=True, rebar=True, timeout=900)
    except GuestError as exc:
        raise BenchError(f"the QEMU guest did not run the benchmark: {exc}") from None
    if run.returncode != 0 or "bench.json" not in run.files:
        raise BenchError(
            f"the benchmark failed inside the guest (exit {run.returncode}):\n{run.output[-3000:]}"
        )
    data = json.loads(run.text("bench.json"))
    data["boot_and_run_seconds"] = run.duration
    return data


def _each_step(cycles: list[dict]) -> str:
    """Each step's median time over the rounds, for the note of the steps row."""
    times: dict[str, list[int]] = {}
    for cycle in cycles:
        for phase in ("prepare", "release"):
            for title, ms in cycle.get(f"{phase}_each", []):
                times.setdefault(title, []).append(ms)
    return "; ".join(f"{title} {statistics.median(ms):g}" for title, ms in times.items())


def _heaviest(imports: dict) -> str:
    """The modules whose own import time is largest, for the note of the imports row."""
    heaviest = imports.get("heaviest") or []
    if not heaviest:
        return ""
    names = ", ".join(f"{name} {ms:g}" for name, ms in heaviest[:8])
    return f"{imports.get('modules', '?')} modules; own ms, both events: {names}"


def measure(quick: bool = False) -> tuple[list[Figure], dict]:
    data = run_guest(rounds=1 if quick else 7)
    hook, minimal = data["hook"], data["minimal"]
    total = lambda cycle: cycle["prepare"] + cycle["release"]  # noqa: E731
    steps = lambda cycle: cycle["prepare_steps"] + cycle["release_steps"]  # noqa: E731
    tutorial = data["tutorial"]
    tutorial_ms = total(tutorial)
    whole = tuple(total(h) / total(m) for h, m in zip(hook, minimal, strict=True))
    own = tuple(steps(h) / total(m) for h, m in zip(hook, minimal, strict=True))
    naps_ms = data["nap_seconds"] * data["rebindings"] * 1000
    figures = [
        Figure("hook prepare/begin", "ms", tuple(c["prepare"] for c in hook)),
        Figure("hook release/end", "ms", tuple(c["release"] for c in hook)),
        Figure("hook prepare + release", "ms", tuple(total(c) for c in hook)),
        Figure(
            "  of which the steps (as the hook logs them)",
            "ms",
            tuple(steps(c) for c in hook),
            note=_each_step(hook),
        ),
        Figure(
            "  of which imports (-X importtime, one extra run)",
            "ms",
            (data["imports"]["prepare"] + data["imports"]["release"],),
            note=_heaviest(data["imports"]),
        ),
        Figure(
            "minimal script prepare + release (no checks)", "ms", tuple(total(c) for c in minimal)
        ),
        Figure("python3 -I -c pass in the guest", "ms", tuple(data["floor"])),
        Figure(
            "hook / minimal script",
            "x",
            whole,
            target=f"≤ {WHOLE_TARGET}",
            met=statistics.median(whole) <= WHOLE_TARGET,
        ),
        Figure(
            "hook's steps / minimal script",
            "x",
            own,
            target=f"≤ {STEPS_TARGET}",
            met=statistics.median(own) <= STEPS_TARGET,
        ),
        Figure(
            "hook: devices not ready when it exits",
            "ms",
            tuple(c["prepare_settle"] + c["release_settle"] for c in hook),
            note="the hook returns once the driver links show the result",
        ),
        Figure(
            "minimal script: devices not ready when it exits",
            "ms",
            tuple(c["prepare_settle"] + c["release_settle"] for c in minimal),
            note="time after the script exited until the driver links and BAR showed the result",
        ),
        Figure(
            f"tutorial script (sleep {data['nap_seconds']} after each of {data['rebindings']} rebindings)",
            "ms",
            (tutorial_ms,),
            note=f"{naps_ms / 1000:.0f} s of it is sleep; run once",
        ),
        Figure(
            "time saved by the hook vs the tutorial script",
            "ms",
            tuple(tutorial_ms - total(c) for c in hook),
        ),
    ]
    details = {
        "initial_state": data["initial"],
        "profile": data["profile"],
        "boot_and_run_seconds": data["boot_and_run_seconds"],
        "raw": {k: data[k] for k in ("hook", "minimal", "floor", "imports", "tutorial")},
    }
    return figures, details
