"""One event for one domain, in three parts: `resolve` (which profile, journal and steps,
or that there is nothing to do), `run` (the runner on a host, under the domain's lock) and
the `Reporter` (the log, and for a person the plan, the progress and the failure text).

Both entries use it: a person's command line (passthrough.cli, strict) builds a `Request`
from the words typed, libvirt's call (passthrough.hook, tolerant and silent) from its fixed
argv. Nothing here imports the command line's parser, so libvirt's call does not pay for it.
"""

from __future__ import annotations

import os

from .constants import CONFIG_DIR, CONFIG_DIR_ENV, LOG_FILE, PROG, STATE_DIR
from .errors import EXIT_FAILED, EXIT_OK, PassthroughError, UsageError
from .record import record, replace

TYPE_CHECKING = False  # typing's constant, without importing typing (the hook's imports)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TextIO

    from .host import Host
    from .log import Log
    from .profile import Profile, Step
    from .runner import EventResult, Outcome, Runner

    # Builds the Host for a root (tests pass a fake kernel's).
    HostFactory = Callable[[str], Host]


@record(frozen=True)
class Paths:
    """Where the host, the profiles, the journals and the log are (strings: the hook's
    path imports no pathlib, see docs/benchmarks.md)."""

    root: str
    config_dir: str
    state_dir: str
    log_file: str

    @classmethod
    def resolve(
        cls,
        root: str | None = None,
        config_dir: str | None = None,
        state_dir: str | None = None,
        log_file: str | None = None,
    ) -> Paths:
        """The given paths, else the defaults: the config dir from the environment or
        /etc/libvirt/hooks/passthrough, the state dir and log file under the root."""
        base = os.fspath(root or "/")
        return cls(
            root=base,
            config_dir=os.fspath(config_dir or os.environ.get(CONFIG_DIR_ENV) or CONFIG_DIR),
            state_dir=os.fspath(state_dir) if state_dir else os.path.join(base, STATE_DIR),
            log_file=os.fspath(log_file) if log_file else os.path.join(base, LOG_FILE),
        )


@record(frozen=True)
class Request:
    """What to do: one event of one domain (or `recover`: undo its journal)."""

    domain: str
    event: str  # "prepare/begin"
    paths: Paths
    person: bool = True  # typed by a person (strict); False: libvirt's call (tolerant, silent)
    recover: bool = False  # undo the journal whatever the profile says now
    dry_run: bool = False
    json: bool = False
    debug: bool = False  # log and print every operation

    @property
    def command(self) -> str:
        """The name of the command in --json documents."""
        return "recover" if self.recover else "event"

    @property
    def journal_path(self) -> str:
        return os.path.join(self.paths.state_dir, f"{self.domain}.json")


@record
class Work:
    """What resolve found to run: the profile (None when release/end undoes a journal
    alone) and the event's steps."""

    request: Request
    profile: Profile | None
    steps: tuple[Step, ...]
    # Why the profile was not used (it broke while the domain ran): release/end then
    # undoes the journal alone, and says so.
    profile_problem: str | None = None

    def addresses(self) -> list[str]:
        return [address for step in self.steps for address in step.action.addresses()]


@record(frozen=True)
class NoWork:
    """Nothing to run; `message` is what a person is told (None: say nothing)."""

    request: Request
    message: str | None = None


def resolve(request: Request) -> Work | NoWork:
    """The profile, journal and steps for the request; raises UsageError or ProfileError
    for what a person must fix (libvirt's call gets NoWork where a person gets an error)."""
    from .errors import ProfileError
    from .profile import check_trusted, find_profile, is_plain_name, load_profile

    releasing = request.event == "release/end" and os.path.exists(request.journal_path)
    if request.recover:
        if not is_plain_name(request.domain):
            raise UsageError(f"{request.domain!r} is not a plain domain name")
        if not os.path.exists(request.journal_path):
            return NoWork(
                request,
                f"nothing to recover: {request.domain} has no journal in {request.paths.state_dir}",
            )
        return Work(request, None, ())
    path = find_profile(request.paths.config_dir, request.domain)
    if path is None and not releasing:
        if request.person:
            raise UsageError(
                f"{request.domain} has no profile in {request.paths.config_dir} (no "
                f"{request.domain}.yaml), so the hook does nothing for it; write one with "
                f"`{PROG} init {request.domain}`"
            )
        return NoWork(request)
    profile, problem = None, None
    try:
        if path is not None:
            check_trusted(path)
            if request.person:
                profile = load_profile(path)
            else:  # libvirt's call: the copy an earlier call validated, if it is the file's
                from .profile_cache import load_or_parse

                profile = load_or_parse(request.paths.state_dir, request.domain, path)
    except (ProfileError, UsageError) as exc:
        # A profile broken while the VM ran must not strand its devices: release undoes
        # the journal alone, which needs nothing from the profile.
        if not releasing:
            raise
        problem = str(exc)
    steps = profile.events.get(request.event, ()) if profile else ()
    if not request.person and not steps and request.event != "release/end":
        return NoWork(request)  # libvirt's call for an event without work (or a new one)
    return Work(request, profile, steps, problem)


def run(
    work: Work,
    host_factory: HostFactory | None,
    out: TextIO,
    err: TextIO,
    domain_xml: str = "",
    warnings: tuple[str, ...] = (),
) -> int:
    """Run the work on the host (a dry-run host for a dry run) and report it; the exit
    status: 0 done, 1 a step failed (what was rolled back is reported)."""
    from .journal import Journal
    from .log import DEBUG, INFO, setup
    from .runner import Runner
    from .state import StateDir, check_ownership

    request, paths = work.request, work.request.paths
    if host_factory is None and request.dry_run:
        from .host.dryrun import make_dry_run_host

        host_factory = make_dry_run_host
    elif host_factory is None:
        from .host import make_host  # not the dry-run host, its kernel model and its patterns

        host_factory = make_host
    host = host_factory(paths.root)
    debug = request.debug or (work.profile is not None and work.profile.log_level == "debug")
    logger = setup(
        None if request.dry_run else paths.log_file,
        use_syslog=not request.dry_run and str(paths.root) == "/",
        level=DEBUG if debug else INFO,
    )
    reporter = Reporter(request, logger, out, err)
    state = StateDir(paths.state_dir)

    def runner(journal: Journal) -> Runner:
        return Runner(
            host,
            journal,
            work.profile,
            request.domain,
            domain_xml=domain_xml,
            on_outcome=reporter.outcome,
        )

    if request.dry_run:
        check_ownership(state, request.domain, work.addresses())
        journal = Journal.in_memory(Journal.load(paths.state_dir, request.domain))
        result = runner(journal).run(request.event)
    else:
        with state.lock(request.domain, request.event):
            check_ownership(state, request.domain, work.addresses())
            real = runner(Journal.load(paths.state_dir, request.domain))
            if request.recover:
                refuse_while_stuck(real, request.domain)
            result = real.run(request.event)
    result.warnings[:0] = warnings
    if work.profile_problem:
        result.warnings.insert(
            0,
            f"the profile did not load, so its release/end steps were not used and the "
            f"journal was undone instead: {work.profile_problem}",
        )
    return reporter.finished(result, bool(work.profile_problem))


def dry_run_plan(work: Work, domain_xml: str) -> str:
    """The plan text of the work as a dry run (what a person is shown before being asked)."""
    import io

    plan = io.StringIO()
    request = replace(work.request, dry_run=True, json=False)
    try:
        run(replace(work, request=request), None, plan, io.StringIO(), domain_xml)
    except PassthroughError as exc:
        plan.write(f"(no plan: {exc})\n")
    return plan.getvalue()


def refuse_while_stuck(runner: Runner, domain: str) -> None:
    """recover changes nothing while a write it would retry still waits in the kernel."""
    stuck = runner.stuck_devices()
    if not stuck:
        return
    from .host.detached import since, subject

    parts = [
        f"{subject(record)} is still stuck in the kernel ({record.get('write', 'a write')} "
        f"since {since(record)}; helper pid {record.get('pid', '?')} "
        f"still waits there)"
        + runner.holders_note(
            list(record.get("devices") or ())
            or ([record["address"]] if "address" in record else [])
        )
        for record in stuck
    ]
    raise PassthroughError(
        f"not recovering {domain} yet: " + "; ".join(parts) + ". End the processes holding "
        f"it: the kernel then finishes that write, and `{PROG} recover {domain}` puts "
        f"everything back."
    )


@record
class Reporter:
    """What a run says: each step's outcome to the log (and to a person's stderr), then the
    plan (dry run), the JSON document (--json) or the failure text."""

    request: Request
    logger: Log
    out: TextIO
    err: TextIO

    def outcome(self, outcome: Outcome) -> None:
        request = self.request
        level = "info" if outcome.status in ("done", "undone") else "error"
        getattr(self.logger, level)(
            "%s %s: %s: %s in %.0f ms%s",
            request.domain,
            request.event,
            outcome.title,
            outcome.status,
            outcome.seconds * 1000,
            f": {outcome.error}" if outcome.error else "",
        )
        for op in outcome.operations:
            self.logger.debug("    %s", op)
        if not request.dry_run and not request.json:
            print(
                f"{PROG}: {request.domain} {request.event}: {outcome.title}: {outcome.status} "
                f"({outcome.seconds * 1000:.0f} ms)",
                file=self.err,
            )
            if request.debug:
                for op in outcome.operations:
                    print(f"    {op}", file=self.err)

    def finished(self, result: EventResult, profile_problem: bool) -> int:
        from .render import failure_text, plan_text, result_json

        request, root = self.request, str(self.request.paths.root)
        if request.json:
            from .output import emit

            emit(self.out, request.command, result_json(result, root))
        elif request.dry_run:
            print(plan_text(result, root), end="", file=self.out)
        if not result.ok and not request.dry_run:
            print(failure_text(result, self.logger.path), end="", file=self.err)
        elif request.recover and not request.dry_run and not request.json:
            print(
                f"{request.domain}: undid {len(result.rollback)} journaled change(s); "
                f"nothing is left",
                file=self.out,
            )
        if profile_problem:
            print(f"{PROG}: warning: {result.warnings[0]}", file=self.err)
        for warning in result.warnings:
            self.logger.warning("%s %s: %s", request.domain, request.event, warning)
        return EXIT_OK if result.ok else EXIT_FAILED


def report_no_work(nothing: NoWork, out: TextIO) -> int:
    """Say there was nothing to do (to a person; libvirt's call has no message)."""
    request = nothing.request
    if nothing.message is None:
        return EXIT_OK
    if request.json:
        from .output import emit

        emit(out, request.command, empty_result(request, nothing.message))
    else:
        print(nothing.message, file=out)
    return EXIT_OK


def empty_result(request: Request, note: str) -> dict[str, Any]:
    return {
        "domain": request.domain,
        "event": request.event,
        "profile": None,
        "root": str(request.paths.root),
        "dry_run": request.dry_run,
        "ok": True,
        "note": note,
        "steps": [],
        "rollback": [],
        "failed_at": None,
        "warnings": [],
    }
