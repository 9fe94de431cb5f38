"""Run a profile's steps for one event, journaling each change and rolling back on failure.

Each step gets a deadline (its `timeout:` or the action's default). Before a step runs it
is journaled as running; each partial record its action notes is saved at once. When a
step fails, every step this run completed, and the failed step's partial work, are
undone in reverse. Undo is best effort: it goes on past a failing undo and reports
what it could not restore.
"""

from __future__ import annotations

import time

from .actions import REGISTRY
from .actions.base import Action, StepContext
from .errors import PassthroughError, StepTimeout
from .host import Host, Operation
from .journal import Journal
from .profile import Profile, Step
from .record import field, record

TYPE_CHECKING = False  # typing's constant, without importing typing (the hook's imports)
if TYPE_CHECKING:
    from collections.abc import Callable


@record
class Outcome:
    """What one step (or one undo) did."""

    title: str
    where: str
    operations: list[Operation]
    seconds: float
    status: str  # done | failed | undone | not-undone
    error: str | None = None


@record
class EventResult:
    domain: str
    event: str
    profile: str
    dry_run: bool
    steps: list[Outcome] = field(default_factory=list)
    rollback: list[Outcome] = field(default_factory=list)
    failed: Outcome | None = None
    warnings: list[str] = field(default_factory=list)
    note: str = ""
    stuck: list[dict] = field(default_factory=list)  # devices left stuck in the kernel

    @property
    def ok(self) -> bool:
        return self.failed is None and not self.not_restored

    @property
    def not_restored(self) -> list[Outcome]:
        return [o for o in self.rollback if o.status == "not-undone"]


class Runner:
    def __init__(
        self,
        host: Host,
        journal: Journal,
        profile: Profile | None,
        domain: str,
        domain_xml: str = "",
        on_outcome: Callable[[Outcome], None] | None = None,
    ):
        self.host = host
        self.domain_xml = domain_xml  # what libvirt wrote on the hook's stdin
        self.journal = journal
        self.profile = profile
        self.domain = domain
        self.on_outcome = on_outcome or (lambda outcome: None)
        self.names = dict((a, n) for n, a in (profile.devices.items() if profile else ()))

    def run(self, event: str) -> EventResult:
        result = EventResult(
            self.domain, event, self.profile.path if self.profile else "-", self.host.dry_run
        )
        try:
            return self._run(event, result)
        finally:
            result.stuck = list(self.host.stuck.values())

    def stuck_devices(self) -> list[dict]:
        """Devices the journal says a write left stuck in the kernel, whose helper process
        still waits there. Those whose helper is gone are dropped: that write returned."""
        from .host.detached import process_state

        procfs = self.host.procfs
        if not self.host.stuck:
            for key, record in self.journal.stuck.items():
                stat = procfs.read(f"{record.get('pid')}/stat")
                if process_state(stat, record.get("started")) != "gone":
                    self.host.stuck[key] = record
            self.journal.set_stuck(self.host.stuck)
        return list(self.host.stuck.values())

    def _run(self, event: str, result: EventResult) -> EventResult:
        self.stuck_devices()
        steps = self.profile.events.get(event) if self.profile else None
        if steps is None:
            if event == "release/end" and not self.journal.entries:
                result.note = "nothing is journaled for this domain; nothing to undo"
            elif event == "release/end":
                result.note = "release/end has no steps of its own: undoing everything journaled, newest first"
                result.rollback = self._undo_entries(list(self.journal.entries), result)
            return result
        inherited = len(self.journal.entries)  # journaled by earlier events
        done: list[dict] = []
        for step in steps:
            entry, outcome = self._run_step(event, step, result)
            result.steps.append(outcome)
            self.on_outcome(outcome)
            if outcome.status == "failed":
                result.failed = outcome
                # extend: a failed `undo` step has already put its own outcomes there
                result.rollback += self._undo_entries(done + [entry], result)
                return result
            done.append(entry)
        if event == "release/end" and inherited and not any(s.action.name == "undo" for s in steps):
            result.warnings.append(
                f"release/end has its own steps and no `undo`; dropping {inherited} journal "
                f"entries of earlier events without undoing them"
            )
        if event == "release/end":
            self.journal.clear()
        return result

    def _context(self, force: bool = False, result: EventResult | None = None) -> StepContext:
        ctx = StepContext(
            host=self.host,
            names=self.names,
            force=force,
            domain=self.domain,
            event=result.event if result is not None else "",
            domain_xml=self.domain_xml,
        )
        if result is not None:
            ctx.undo_event = lambda ev: self._undo_event(ev, result)
        return ctx

    def _run_step(self, event: str, step: Step, result: EventResult) -> tuple[dict, Outcome]:
        action = step.action
        title = f"{step.number}. {action.describe()}"
        timeout = step.timeout or action.default_timeout
        entry = self.journal.begin(event, step, action.describe())
        ctx = self._context(step.force, result)
        ctx.note = lambda record: self.journal.update(entry, record)
        started = time.monotonic()
        try:
            with self.host.step(timeout, step.force):
                record = action.apply(ctx)
        except PassthroughError as exc:
            self.journal.update(entry, entry["record"], status="failed")
            message = str(exc)
            if isinstance(exc, StepTimeout):
                held = [*action.addresses(), *self.host.stuck_addresses()]
                message += self.holders_note(list(dict.fromkeys(held)))
            return entry, Outcome(
                title,
                str(step.where),
                self.host.take_operations(),
                time.monotonic() - started,
                "failed",
                message,
            )
        finally:
            self.journal.set_stuck(self.host.stuck)
        result.warnings.extend(ctx.warnings)
        if action.undoable:
            self.journal.update(entry, record, status="done")
        else:
            self.journal.remove(entry)
        return entry, Outcome(
            title, str(step.where), self.host.take_operations(), time.monotonic() - started, "done"
        )

    @staticmethod
    def _waits(
        action_class: type[Action] | None, record: dict, outcomes: list[Outcome]
    ) -> str | None:
        """Why an older entry's undo must wait for the next try, or None."""
        if action_class is None:
            return None
        failed = any(o.status == "not-undone" for o in outcomes)
        if failed and action_class.undo_waits_for_devices(record):
            return (
                "not undone yet: a later change could not be undone, and the devices may still "
                "need these modules; the next release/end or recover does both"
            )
        return None

    def holders_note(self, addresses: list[str]) -> str:
        from .holders import find_holders

        self.host.step_cache.clear()  # what holds the devices now, after the wait
        found = [h.describe(a) for a in addresses for h in find_holders(self.host, a)]
        return (
            ("; still open: " + "; ".join(found)) if found else "; no process holds the device open"
        )

    def _undo_event(self, event: str, result: EventResult) -> list[str]:
        outcomes = self._undo_entries(self.journal.for_event(event), result)
        result.rollback.extend(outcomes)
        return [o.error for o in outcomes if o.status == "not-undone" and o.error]

    def _undo_entries(self, entries: list[dict], result: EventResult) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for entry in reversed(entries):
            action_class = REGISTRY.get(entry["action"])
            record = entry.get("record") or {}
            if action_class is not None and not action_class.changed(record):
                self.journal.remove(entry)  # the step changed nothing: nothing to undo or report
                continue
            title = f"undo {entry['event']} step {entry['step']}: " + (
                action_class.describe_undo(record)
                if action_class
                else f"unknown action {entry['action']}"
            )
            waits = self._waits(action_class, record, outcomes)
            if waits:
                # Best effort goes on past a failed undo, except where going on would take
                # away what the devices still need (vfio-pci unloaded under a device a newer
                # undo left on it, or left driverless): kept for the next release or recover.
                self.journal.update(entry, record, status="undo-failed")
                outcome = Outcome(title, entry["where"], [], 0.0, "not-undone", waits)
                outcomes.append(outcome)
                self.on_outcome(outcome)
                continue
            ctx = self._context()
            started = time.monotonic()
            try:
                with self.host.step(action_class.default_timeout if action_class else 1):
                    if action_class is None:
                        raise PassthroughError(f"this version has no action {entry['action']!r}")
                    action_class.undo(ctx, record)
            except PassthroughError as exc:
                message = str(exc)
                if isinstance(exc, StepTimeout):
                    message += self.holders_note(self.host.stuck_addresses())
                outcome = Outcome(
                    title,
                    entry["where"],
                    self.host.take_operations(),
                    time.monotonic() - started,
                    "not-undone",
                    message,
                )
                self.journal.update(entry, record, status="undo-failed")
            else:
                outcome = Outcome(
                    title,
                    entry["where"],
                    self.host.take_operations(),
                    time.monotonic() - started,
                    "undone",
                )
                self.journal.remove(entry)
            finally:
                self.journal.set_stuck(self.host.stuck)
            result.warnings.extend(ctx.warnings)
            outcomes.append(outcome)
            self.on_outcome(outcome)
        return outcomes
