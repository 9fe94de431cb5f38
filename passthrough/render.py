"""Turning an EventResult into what people read (the plan, the failure message) and JSON."""

from __future__ import annotations

from .runner import EventResult, Outcome


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def _outcome_lines(outcome: Outcome, timings: bool) -> list[str]:
    head = f"  {outcome.title}"
    if timings:
        head += f"  ({_ms(outcome.seconds)})"
    lines = [head, f"      at {outcome.where}"]
    for op in outcome.operations:
        lines.append(f"      {op}")
    if outcome.error:
        verb = "FAILS" if outcome.status == "failed" else "CANNOT UNDO"
        lines.append(f"      {verb}: {outcome.error}")
    return lines


def plan_text(result: EventResult, root: str) -> str:
    lines = [
        f"Dry run of {result.domain} {result.event} (profile {result.profile}, host {root}).",
        "Nothing is changed; this is what would happen:",
        "",
    ]
    if result.note:
        lines.append(f"  {result.note}")
    for outcome in result.steps:
        lines.extend(_outcome_lines(outcome, timings=False))
    if result.failed and result.rollback:
        lines += ["", "  then the completed steps would be rolled back, newest first:"]
    for outcome in result.rollback:
        lines.extend(_outcome_lines(outcome, timings=False))
    if not result.steps and not result.rollback and not result.note:
        lines.append(f"  nothing: the profile has no steps for {result.event}")
    for warning in result.warnings:
        lines.append(f"  warning: {warning}")
    lines.append("")
    if result.failed:
        lines.append(
            f"Problem: the plan fails at step {result.failed.title.split('.', 1)[0]} "
            f"({result.failed.where}): {result.failed.error}"
        )
    else:
        count = len(result.steps) or len(result.rollback)
        lines.append(f"Plan: {count} step(s), no problems seen.")
    return "\n".join(lines) + "\n"


def failure_text(result: EventResult, log_path: str | None) -> str:
    """The message libvirt shows in `virsh start`: what failed, what was rolled back, what to do."""
    lines = []
    failed = result.failed
    if failed:
        lines.append(
            f"passthrough-hook: {result.domain} {result.event} failed at step {failed.title} "
            f"({failed.where}):"
        )
        lines.append(f"  {failed.error}")
    else:
        lines.append(f"passthrough-hook: {result.domain} {result.event} could not undo everything:")
    undone = [o for o in result.rollback if o.status == "undone"]
    if failed:
        if undone:
            lines.append(
                "Rolled back, newest first: "
                + "; ".join(o.title.split(": ", 1)[-1] for o in undone)
                + "."
            )
        elif not result.not_restored:
            lines.append("Nothing had been changed, so nothing was rolled back.")
    for outcome in result.not_restored:
        lines.append(f"NOT restored: {outcome.title}: {outcome.error}")
    for stuck in result.stuck:
        if stuck.get("module"):
            lines.append(
                f"STUCK: module {stuck['module']}: `{stuck.get('write', 'modprobe -r')}` has not "
                f"returned (helper pid {stuck.get('pid', '?')} waits in the kernel"
                + (f", unbinding {', '.join(stuck['devices'])}" if stuck.get("devices") else "")
                + "); the module was not loaded or unloaded again. Once the processes holding "
                f"its devices exit, the kernel finishes the unload; then `passthrough-hook "
                f"recover {result.domain}` puts it back."
            )
            continue
        lines.append(
            f"STUCK: {stuck['address']}: `{stuck.get('write', 'a write')}` has not returned "
            f"(helper pid {stuck.get('pid', '?')} waits in the kernel); nothing more was "
            f"written to the device. Once the processes holding it exit, the kernel finishes "
            f"that write; then `passthrough-hook recover {result.domain}` puts it back."
        )
    if result.not_restored:
        lines.append(
            "The journal keeps what is left; `passthrough-hook recover "
            f"{result.domain}` retries, `passthrough-hook status` shows it."
        )
    for warning in result.warnings:
        lines.append(f"warning: {warning}")
    if log_path:
        lines.append(f"Log: {log_path}")
    return "\n".join(lines) + "\n"


def result_json(result: EventResult, root: str) -> dict:
    def outcome(o: Outcome, number: int | None = None) -> dict:
        # A dry run did nothing: its steps (and the rollback it foresees) are planned.
        planned = result.dry_run and o.status in ("done", "undone")
        return {
            "title": o.title,
            "where": o.where,
            "status": "planned" if planned else o.status,
            "error": o.error,
            "seconds": round(o.seconds, 6),
            "operations": [{"operation": op.text, "effect": op.effect} for op in o.operations],
        }

    return {
        "domain": result.domain,
        "event": result.event,
        "profile": result.profile,
        "root": root,
        "dry_run": result.dry_run,
        "ok": result.ok,
        "note": result.note,
        "steps": [outcome(o) for o in result.steps],
        "rollback": [outcome(o) for o in result.rollback],
        "failed_at": result.failed.where if result.failed else None,
        "warnings": result.warnings,
        "stuck": result.stuck,
    }
