"""The benchmark table of docs/benchmarks.md from a results file:

python3 -m bench.report [bench/results/latest.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .run import RESULTS


def number(value: float, unit: str) -> str:
    if unit == "x":
        return f"{value:.2f}"
    if abs(value) < 1:
        return f"{value:.3f}"
    return f"{value:.1f}" if abs(value) < 100 else f"{value:.0f}"


def markdown(results: dict) -> str:
    machine = results["machine"]
    lines = [
        f"Measured {results['when'][:10]} on {machine['os']}, {machine['cpus']} vCPU {machine['cpu_model']} "
        f"(a VM), Python {machine['python']}, kernel {machine['kernel']}; the QEMU guest runs with TCG "
        f"(no KVM). Load average before/after: {results['load_before']:.2f}/{results['load_after']:.2f}.",
        "",
        "| figure | min | median | max | unit | target | note |",
        "|---|---:|---:|---:|---|---|---|",
    ]
    for section in results["sections"].values():
        lines.append(f"| **{section['title']}** | | | | | | |")
        for name, fig in section["figures"].items():
            target = fig["target"] or ""
            if fig["met"] is not None:
                target += " ✓" if fig["met"] else " ✗ missed"
            name = name.replace("|", "\\|")
            lines.append(
                f"| {name} | {number(fig['min'], fig['unit'])} | {number(fig['median'], fig['unit'])} | "
                f"{number(fig['max'], fig['unit'])} | {fig['unit']} | {target.strip()} | {fig['note'] or ''} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else RESULTS
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        print(f"bench.report: cannot read {path}: {exc}; run tools/bench first", file=sys.stderr)
        return 1
    sys.stdout.write(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
