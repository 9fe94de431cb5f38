"""What one hook call costs as a process: the no-profile call every domain pays on every
event, the dry run of the seed profile, and how both behave with 1,000 profiles around.

Each figure is a fresh process, timed from spawn to exit (measure.run_child), in rounds
that interleave the commands compared, so ratios come from runs made at the same moment.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from .measure import (
    HOOK_ENV,
    BenchError,
    Command,
    Figure,
    check_exit,
    interleaved,
    mb,
    ms,
    paired_ratios,
    run_child,
)
from .profiles import make_config_dir

REPO = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
DOMAIN_XML = (BENCH / "domain.xml").read_bytes()
HOOK = REPO / "hooks" / "qemu"
# The interpreter options of the hook's #! line, which install.sh keeps: -I -S.
HOOK_OPTIONS = tuple(HOOK.read_text().split("\n", 1)[0].split()[1:])
HOOK_RATIO_TARGET = 0.9  # the no-profile call against the interpreter's own start
NO_STEPS_RATIO_TARGET = 2.0  # a profile without steps for the event, against the same
NO_GROWTH = 1.05  # "must not grow": 1,000 profiles against 1, within noise
DRY_RUN_MS = 150
DRY_RUN_MB = 40


def hook_env(config_dir: Path) -> dict:
    return {**HOOK_ENV, "PASSTHROUGH_HOOK_CONFIG_DIR": str(config_dir)}


def no_profile(python: str, config_1: Path, config_1000: Path, rounds: int) -> list[Figure]:
    """hooks/qemu for a domain without a profile, and for the seed's domain on an event its
    profile has no steps for, against `python -I -c pass` and bash."""
    args = ("other", "prepare", "begin", "-")
    hook = (python, *HOOK_OPTIONS, str(HOOK), *args)
    no_steps = (python, *HOOK_OPTIONS, str(HOOK), "win10", "started", "begin", "-")
    commands = {
        "floor": Command((python, "-I", "-c", "pass"), stdin=DOMAIN_XML),
        "hook": Command(hook, env=hook_env(config_1), stdin=DOMAIN_XML),
        "no-steps": Command(no_steps, env=hook_env(config_1), stdin=DOMAIN_XML),
        "hook-1000": Command(hook, env=hook_env(config_1000), stdin=DOMAIN_XML),
        "bash": Command(
            (str(BENCH / "bash_dispatcher.sh"), *args), env=hook_env(config_1), stdin=DOMAIN_XML
        ),
        "helper": Command(
            (str(BENCH / "helper_dispatcher.sh"), *args), env=hook_env(config_1), stdin=DOMAIN_XML
        ),
    }
    runs = interleaved(commands, rounds)
    to_floor = paired_ratios(runs["hook"], runs["floor"])
    no_steps_to_floor = paired_ratios(runs["no-steps"], runs["floor"])
    growth = paired_ratios(runs["hook-1000"], runs["hook"])
    return [
        Figure("no-profile hook call (hooks/qemu, 1 profile in dir)", "ms", ms(runs["hook"])),
        Figure(
            "profile without steps for the event (win10 started/begin)", "ms", ms(runs["no-steps"])
        ),
        Figure("python floor (python3 -I -c pass)", "ms", ms(runs["floor"])),
        Figure("bash dispatcher ([ -f profile ] || exit 0)", "ms", ms(runs["bash"])),
        Figure("bash hook helper (VFIO-Tools shape, $(dirname $0))", "ms", ms(runs["helper"])),
        Figure(
            "no-profile hook / python floor",
            "x",
            to_floor,
            target=f"≤ {HOOK_RATIO_TARGET}",
            met=statistics.median(to_floor) <= HOOK_RATIO_TARGET,
        ),
        Figure(
            "profile without steps for the event / python floor",
            "x",
            no_steps_to_floor,
            target=f"≤ {NO_STEPS_RATIO_TARGET}",
            met=statistics.median(no_steps_to_floor) <= NO_STEPS_RATIO_TARGET,
        ),
        Figure("no-profile hook / bash dispatcher", "x", paired_ratios(runs["hook"], runs["bash"])),
        Figure(
            "no-profile hook / bash hook helper", "x", paired_ratios(runs["hook"], runs["helper"])
        ),
        Figure("no-profile hook peak memory", "MB", mb(runs["hook"])),
        Figure("no-profile hook call, 1,000 profiles in dir", "ms", ms(runs["hook-1000"])),
        Figure(
            "no-profile hook: 1,000 profiles / 1 profile",
            "x",
            growth,
            target=f"≤ {NO_GROWTH} (no growth)",
            met=statistics.median(growth) <= NO_GROWTH,
        ),
    ]


def dry_run(python: str, config_1000: Path, rounds: int) -> list[Figure]:
    """The seed profile's dry run on the demo host (tools/demo), with its config dir and
    with a config dir of 1,000 profiles."""
    base = (python, "-m", "passthrough", "--dry-run", "--root", "config/demo-host")
    event = ("win10", "prepare", "begin")
    commands = {
        "dry-run": Command((*base, "--config-dir", "config", *event)),
        "dry-run-1000": Command((*base, "--config-dir", str(config_1000), *event)),
    }
    runs = interleaved(commands, rounds)
    growth = paired_ratios(runs["dry-run-1000"], runs["dry-run"])
    return [
        Figure(
            "dry run of the seed profile (tools/demo)",
            "ms",
            ms(runs["dry-run"]),
            target=f"< {DRY_RUN_MS}",
            met=statistics.median(ms(runs["dry-run"])) < DRY_RUN_MS,
        ),
        Figure(
            "dry run peak memory",
            "MB",
            mb(runs["dry-run"]),
            target=f"< {DRY_RUN_MB}",
            met=max(mb(runs["dry-run"])) < DRY_RUN_MB,
        ),
        Figure("dry run, 1,000 profiles in dir", "ms", ms(runs["dry-run-1000"])),
        Figure(
            "dry run: 1,000 profiles / 1 profile",
            "x",
            growth,
            target=f"≤ {NO_GROWTH} (no growth)",
            met=statistics.median(growth) <= NO_GROWTH,
        ),
    ]


def validate(python: str, config_1: Path, config_1000: Path, rounds: int) -> list[Figure]:
    """`passthrough-hook validate` over every profile of a directory."""
    base = (python, "-m", "passthrough", "validate", "--config-dir")
    commands = {
        "one": Command((*base, str(config_1))),
        "thousand": Command((*base, str(config_1000))),
    }
    runs = interleaved(commands, rounds, warmup=1)
    per_profile = tuple(
        (big.seconds - small.seconds) * 1000 / 999
        for big, small in zip(runs["thousand"], runs["one"], strict=True)
    )
    return [
        Figure("validate, 1 profile", "ms", ms(runs["one"])),
        Figure("validate, 1,000 profiles", "ms", ms(runs["thousand"])),
        Figure("validate: time per extra profile", "ms", per_profile),
        Figure("validate, 1,000 profiles: peak memory", "MB", mb(runs["thousand"])),
    ]


def check_commands(python: str, config_1000: Path) -> None:
    """The commands measured must do what they claim before they are timed: the hook must
    find no profile and exit 0, validate must accept all 1,000 profiles."""
    command = Command(
        (python, "-m", "passthrough", "validate", "--config-dir", str(config_1000)),
        keep_output=True,
    )
    run = run_child(command)
    check_exit(command, run)
    if run.output.count(": ok (") != 1000:
        raise BenchError(f"validate did not accept 1,000 profiles:\n{run.output[-2000:]}")
    # -X importtime lists every module imported: the fast paths (no profile; a profile
    # without steps for the event) must not import the program, nor even os or site.
    for event in (("other", "prepare", "begin", "-"), ("win10", "started", "begin", "-")):
        command = Command(
            (python, *HOOK_OPTIONS, "-X", "importtime", str(HOOK), *event),
            env=hook_env(config_1000),
            stdin=DOMAIN_XML,
            keep_output=True,
        )
        run = run_child(command)
        check_exit(command, run)
        imported = [
            line.rsplit("|", 1)[-1].strip()
            for line in run.output.splitlines()
            if line.startswith("import time:")
        ]
        if any(name.startswith(("passthrough", "yaml", "os", "site")) for name in imported):
            raise BenchError(
                f"the hook call for {' '.join(event)} imported more than the interpreter "
                f"loads by itself:\n{run.output}"
            )


def config_dirs(work: Path) -> tuple[Path, Path]:
    return make_config_dir(work / "config-1", 1), make_config_dir(work / "config-1000", 1000)
