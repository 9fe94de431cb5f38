"""The benchmark: what the hook costs libvirt, printed as a table and written as JSON.

    tools/bench                 everything (about 3 minutes on 2 vCPUs, one QEMU boot)
    tools/bench --no-guest      without the real-kernel figures (no QEMU)
    tools/bench --quick         fewer repetitions, to check the bench itself works

Figures (see docs/benchmarks.md):
  1. the no-profile hook call against `python3 -I -c pass` and bash dispatchers
  2. the seed profile's dry run on the demo host: wall time and peak memory
  3. prepare + release overhead on a simulated kernel, 2 to 32 devices
  4. prepare + release in a real kernel (QEMU guest) against a minimal script and
     against the fixed sleeps of tutorial scripts
  5. 1 against 1,000 profiles in the config dir, and `validate` over 1,000 profiles
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .measure import BenchError, Figure

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "latest.json"
PYTHON = "/usr/bin/python3"  # what install.sh puts in the hook's #! line
BUSY = 0.5  # 1-minute load average above which other work skews the figures


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tools/bench", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="few repetitions: checks the bench, not the program"
    )
    parser.add_argument(
        "--no-guest", action="store_true", help="skip the real-kernel (QEMU) figures"
    )
    parser.add_argument(
        "--python", default=PYTHON, help=f"interpreter the hook runs with (default {PYTHON})"
    )
    parser.add_argument(
        "--json", type=Path, default=RESULTS, help=f"where to write the results (default {RESULTS})"
    )
    return parser.parse_args(argv)


def work_dir() -> tempfile.TemporaryDirectory:
    """Scratch space on tmpfs when there is one, like /run where the hook keeps its journals."""
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    return tempfile.TemporaryDirectory(prefix="passthrough-bench-", dir=base)


def machine(python: str) -> dict:
    info = {
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": _python_version(python),
        "cpu_model": _proc_field("/proc/cpuinfo", "model name"),
        "memory": _proc_field("/proc/meminfo", "MemTotal"),
        "os": _os_release(),
    }
    info["kvm"] = "no (QEMU guest runs with TCG)"  # the guest harness always uses TCG
    return info


def _python_version(python: str) -> str:
    return subprocess.run(
        [python, "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def _proc_field(path: str, key: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def _os_release() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.platform()


def print_section(title: str, figures: list[Figure]) -> None:
    print(f"\n{title}")
    width = max(len(f.name) for f in figures)
    print(f"  {'figure':<{width}}  {'min':>9}  {'median':>9}  {'max':>9}  unit  target")
    for f in figures:
        verdict = "" if f.met is None else ("  met" if f.met else "  MISSED")
        print(
            f"  {f.name:<{width}}  {_number(f.min):>9}  {_number(f.median):>9}  {_number(f.max):>9}  "
            f"{f.unit:<4}  {f.target}{verdict}"
        )
        if f.note:
            print(f"  {'':<{width}}  {f.note}")
    sys.stdout.flush()


def _number(value: float) -> str:
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"


# The four ratios the hook is held to (issue 14), by section and figure name.
RATIOS = (
    ("no_profile", "no-profile hook / python floor"),
    ("no_profile", "profile without steps for the event / python floor"),
    ("real_kernel", "hook's steps / minimal script"),
    ("real_kernel", "hook / minimal script"),
)


def print_targets(results: dict) -> None:
    print(
        f"\nThe four ratios (median of paired runs; load average before/after "
        f"{results['load_before']:.2f}/{results['load_after']:.2f})"
    )
    for section, name in RATIOS:
        figure = results["sections"].get(section, {}).get("figures", {}).get(name)
        if figure is None:
            print(f"  {name:<52}  not measured (--no-guest)")
            continue
        verdict = "met" if figure["met"] else "MISSED"
        print(f"  {name:<52}  {figure['median']:6.2f} x  target {figure['target']}  {verdict}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.chdir(REPO)  # the dry run is measured as tools/demo runs it, with paths relative to the repo
    os.umask(0o022)  # as root the program refuses profiles that others can write
    rounds = {"hook": 200, "dry": 30, "validate": 5, "kernel": 20}
    if args.quick:
        rounds = {"hook": 10, "dry": 3, "validate": 1, "kernel": 2}
    from . import kernel_overhead, startup

    results: dict = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(args.python),
        "command": "tools/bench" + (" --quick" if args.quick else ""),
        "rounds": rounds,
        "sections": {},
    }
    results["load_before"] = os.getloadavg()[0]
    print(f"passthrough-hook benchmark, {results['when']}")
    if results["load_before"] > BUSY:
        print(
            f"warning: load average {results['load_before']:.1f}: the machine is busy, figures will be noisy"
        )
    print("machine: " + ", ".join(f"{k} {v}" for k, v in results["machine"].items()))

    def section(key: str, title: str, figures: list[Figure], details: dict | None = None) -> None:
        print_section(title, figures)
        results["sections"][key] = {
            "title": title,
            "figures": {f.name: f.to_json() for f in figures},
            "details": details or {},
        }

    try:
        with work_dir() as tmp:
            work = Path(tmp)
            config_1, config_1000 = startup.config_dirs(work)
            startup.check_commands(args.python, config_1000)
            section(
                "no_profile",
                "1. No-profile call (every domain, every event) + 5. with 1,000 profiles",
                startup.no_profile(args.python, config_1, config_1000, rounds["hook"]),
            )
            section(
                "dry_run",
                "2. Dry run of the seed profile on the demo host + 5. with 1,000 profiles",
                startup.dry_run(args.python, config_1000, rounds["dry"]),
            )
            section(
                "validate",
                "5. validate over 1,000 profiles",
                startup.validate(args.python, config_1, config_1000, rounds["validate"]),
            )
            figures, details = kernel_overhead.measure(work / "kernel", rounds["kernel"])
            section(
                "kernel_overhead",
                "3. Prepare + release overhead on the simulated kernel "
                "(in-process; simulated kernel time excluded)",
                figures,
                details,
            )
            if not args.no_guest:
                from . import guest

                figures, details = guest.measure(quick=args.quick)
                section(
                    "real_kernel",
                    "4. Real kernel (QEMU guest, TCG): prepare + release",
                    figures,
                    details,
                )
    except BenchError as exc:
        print(f"tools/bench: {exc}", file=sys.stderr)
        return 1
    results["load_after"] = os.getloadavg()[0]
    print_targets(results)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1) + "\n")
    missed = [
        name
        for s in results["sections"].values()
        for name, f in s["figures"].items()
        if f["met"] is False
    ]
    print(
        f"\nresults: {args.json}"
        + (f"\nmissed targets: {'; '.join(missed)}" if missed else "\nall targets met")
    )
    return 0
