"""`passthrough-hook status`: which domains hold which devices now, from the journals in
the state directory, and what a crash or a failed undo left behind.

A journal holds the changes in effect for its domain (passthrough/journal.py): entries
`done` are in place as planned; `running` means a hook stopped in the middle of a step
(killed, or the machine lost power) unless that process still runs; `failed` and
`undo-failed` mean a rollback or release could not restore something. Those need
`passthrough-hook recover DOMAIN`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TextIO

from ..constants import LOG_FILE, STATE_DIR
from ..errors import EXIT_FAILED, EXIT_OK, UsageError
from ..output import emit
from ..pci import is_vfio_driver
from ..units import format_bytes
from .common import PROG, add_json, add_root, parser_for, wrap
from .facts import HostFacts


def build_parser() -> argparse.ArgumentParser:
    parser = parser_for(
        "status",
        "Show which domains hold which devices now (from the journals) and anything "
        "a crash or a failed undo left behind. Exits 1 when something needs recovery.",
    )
    add_root(parser)
    parser.add_argument(
        "--state-dir",
        metavar="DIR",
        help="where journals live (default <root>/run/passthrough-hook)",
    )
    add_json(parser)
    return parser


def main(argv: list[str], out: TextIO, err: TextIO) -> int:
    args = build_parser().parse_args(argv)
    facts = HostFacts(args.root)
    state_dir = Path(args.state_dir) if args.state_dir else facts.root / STATE_DIR
    domains = [domain_status(path, facts) for path in journal_files(state_dir)]
    held = {d["address"] for status in domains for d in status["devices"]}
    loose = [
        fn.short()
        for fn in facts.functions().values()
        if is_vfio_driver(fn.driver) and fn.address not in held
    ]
    if args.json:
        emit(
            out,
            "status",
            {"state_dir": str(state_dir), "domains": domains, "vfio_without_journal": loose},
        )
    else:
        print(status_text(state_dir, domains, loose), end="", file=out)
    return EXIT_FAILED if any(status["problems"] for status in domains) else EXIT_OK


def journal_files(state_dir: Path) -> list[Path]:
    try:
        return sorted(
            p for p in state_dir.iterdir() if p.suffix == ".json" and not p.name.startswith(".")
        )
    except FileNotFoundError:
        return []
    except PermissionError:
        raise UsageError(
            f"cannot read {state_dir}: permission denied; journals are root's, run as root"
        ) from None
    except OSError as exc:
        raise UsageError(f"cannot read {state_dir}: {exc.strerror}") from None


def domain_status(path: Path, facts: HostFacts) -> dict:
    """What one journal says: devices held, BARs and modules changed, and problems."""
    from ..journal import Journal, JournalError

    domain = path.stem
    status: dict = {
        "domain": domain,
        "journal": str(path),
        "readable": True,
        "since": None,
        "devices": [],
        "bars": [],
        "modules": [],
        "other": [],
        "problems": [],
    }
    try:
        journal = Journal.load(path.parent, domain)
    except JournalError as exc:
        status["readable"] = False
        status["problems"].append(
            {
                "kind": "unreadable",
                "message": str(exc),
                "fix": f"restore its devices by hand (`{PROG} iommu` shows their drivers), "
                f"then move {path} aside",
            }
        )
        return status
    status["since"] = min((e.get("time", "") for e in journal.entries), default=None)
    for entry in journal.entries:
        _add_changes(status, entry, facts)
        problem = _problem(domain, entry, facts)
        if problem:
            status["problems"].append(problem)
    for record in journal.stuck.values():
        status["problems"].append(_stuck_problem(domain, record, facts))
    return status


def _stuck_problem(domain: str, record: dict, facts: HostFacts) -> dict:
    """A write the kernel has not returned from (passthrough/host/detached.py), as long as
    its helper process waits there; once it is gone, what is left is recover's to undo."""
    from ..host.detached import process_state, subject

    pid = record.get("pid")
    state = process_state(_read(facts.root / "proc" / str(pid) / "stat"), record.get("started"))
    write = f"`{record.get('write', 'a write')}`"
    since = record.get("since", "?")
    module = record.get("module")
    what = subject(record)
    shape = {"kind": "stuck", "address": record.get("address")}
    if module:
        shape = {"kind": "stuck", "address": None, "module": module}
    if state == "gone":
        return {
            **shape,
            "helper": None,
            "message": f"{what}: {write}, stuck in the kernel since {since}, "
            f"has returned since (its helper pid {pid} is gone)",
            "fix": f"run `{PROG} recover {domain}`: it puts the "
            + ("module" if module else "device")
            + " back",
        }
    if module:
        devices = record.get("devices") or []
        return {
            **shape,
            "helper": pid,
            "message": f"{what}: {write} is stuck in the kernel since {since} (helper pid "
            f"{pid}, state {state}): unloading it unbinds "
            + (", ".join(devices) if devices else "its devices")
            + ", and the kernel waits until the process holding one lets go",
            "fix": f"end the process holding its devices (the hook's message named it; `fuser "
            f"-v /dev/vfio/*` shows it), then run `{PROG} recover {domain}`",
        }
    return {
        **shape,
        "helper": pid,
        "message": f"{what}: {write} is stuck in the kernel since {since} "
        f"(helper pid {pid}, state {state}): a process still holds the device, and the "
        f"kernel holds the device's lock until it lets go",
        "fix": f"end the process holding it (the hook's message named it; `fuser -v "
        f"/dev/vfio/*` shows it), then run `{PROG} recover {domain}`",
    }


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return None


def _add_changes(status: dict, entry: dict, facts: HostFacts) -> None:
    """Devices, BARs and modules from the records of the actions that change them; for any
    other action, what undoing it will do (its own words: describe_undo)."""
    from ..journal import action_of

    changes = action_of(entry).held_changes(entry.get("record") or {})
    for device in changes.get("devices", []):
        fn = facts.function(device["address"])
        status["devices"].append({**device, "now": fn.driver if fn else None})
    status["bars"] += changes.get("bars", [])
    status["modules"] += changes.get("modules", [])
    for undo in changes.get("other", []):
        status["other"].append(
            f"{entry.get('event')} step {entry.get('step')} ({entry.get('describe')}); undo: {undo}"
        )


def _problem(domain: str, entry: dict, facts: HostFacts) -> dict | None:
    step = (
        f"{entry.get('event')} step {entry.get('step')} ({entry.get('describe', entry.get('action'))}, "
        f"at {entry.get('where', '?')}, {entry.get('time', '?')}, pid {entry.get('pid', '?')})"
    )
    recover = f"run `{PROG} recover {domain}`: it undoes everything journaled for {domain}"
    state = entry.get("status")
    if state == "running":
        if _alive(facts, entry.get("pid")):
            return None  # a hook is running this step right now
        return {
            "kind": "crashed",
            "message": f"{step} was running when the hook stopped (killed, or the host "
            f"went down): the host may be half changed",
            "fix": recover,
        }
    if state in ("failed", "undo-failed"):
        return {
            "kind": state,
            "message": f"{step} could not be undone",
            "fix": f"find why in the log ({facts.root / LOG_FILE}), fix that, then run "
            f"`{PROG} recover {domain}`",
        }
    return None


def _alive(facts: HostFacts, pid: object) -> bool:
    return isinstance(pid, int) and (facts.root / "proc" / str(pid)).is_dir()


def status_text(state_dir: Path, domains: list[dict], loose: list[str]) -> str:
    if not domains:
        lines = [f"No domain holds devices (no journals in {state_dir})."]
    else:
        lines = []
        for status in domains:
            lines += _domain_lines(status)
    if loose:
        lines.append(
            f"On vfio-pci but in no journal (bound at boot by vfio-pci.ids, by another tool, or left by a "
            f"lost journal): {', '.join(loose)}"
        )
    return "\n".join(lines) + "\n"


def _domain_lines(status: dict) -> list[str]:
    held = len(status["devices"])
    if not status["readable"]:
        lines = [f"{status['domain']}: its journal cannot be read"]
    else:
        lines = [
            f"{status['domain']}: holds {held} device{'s' if held != 1 else ''}"
            + (f" since {status['since']}" if status["since"] else "")
            + f" (journal {status['journal']})"
        ]
    for device in status["devices"]:
        label = f"{device['name']} ({device['address']})" if device["name"] else device["address"]
        now, was = device["now"] or "no driver", device["was"] or "no driver"
        lines.append(
            f"  {label}: now {now}, was {was}" if now != was else f"  {label}: on {now}, as before"
        )
    for bar in status["bars"]:
        label = f"{bar['name']} ({bar['address']})" if bar["name"] else bar["address"]
        lines.append(
            f"  BAR {bar['bar']} of {label}: set to {format_bytes(bar['set'] or 0)}, "
            f"was {format_bytes(bar['was'] or 0)}"
        )
    if status["modules"]:
        lines.append(f"  modules it loaded: {' '.join(status['modules'])}")
    for other in status["other"]:
        lines += wrap(other, "  ", "    ")
    for problem in status["problems"]:
        lines += wrap(f"PROBLEM ({problem['kind']}): {problem['message']}", "  ", "    ")
        lines += wrap(f"fix: {problem['fix']}", "    ", "         ")
    return lines
