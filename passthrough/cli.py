"""Command line: `passthrough-hook [options] DOMAIN OPERATION SUB_OPERATION [EXTRA]` (the form
libvirt calls the hook with) and subcommands (`validate`, ...).

One error boundary: expected errors print one message and exit 1 (an action failed) or
2 (profile or usage); anything unexpected exits 3 and leaves the traceback in the log;
Ctrl-C exits 130. No traceback reaches a user.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from . import __version__, tools
from .constants import CONFIG_DIR, CONFIG_DIR_ENV, LOG_FILE, PROG, STATE_DIR
from .errors import (
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    PassthroughError,
    ProfileError,
    UsageError,
)

if TYPE_CHECKING:
    from .host import Host
    from .runner import Outcome

    # Builds the Host for a root (tests pass a fake kernel's).
    HostFactory = Callable[[Path], Host]


def _common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--root",
        default="/",
        metavar="DIR",
        help="prefix for every host path read or written (sysfs, /proc, /dev, /run); default /",
    )
    parser.add_argument(
        "--config-dir", metavar="DIR", help=f"where profiles live (default {CONFIG_DIR})"
    )
    parser.add_argument(
        "--state-dir",
        metavar="DIR",
        help="where journals live (default <root>/run/passthrough-hook)",
    )
    parser.add_argument(
        "--log-file",
        metavar="FILE",
        help="log file (default <root>/var/log/libvirt/passthrough-hook.log)",
    )
    parser.add_argument("--json", action="store_true", help="print results as JSON")


def hook_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run a domain's passthrough profile for one libvirt event, as libvirt's qemu hook does. "
        f"Subcommands: {', '.join(SUBCOMMANDS)} (`{PROG} SUBCOMMAND --help`).",
        epilog=f"example: {PROG} --dry-run win10 prepare begin",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("--dry-run", action="store_true", help="show the plan; change nothing")
    parser.add_argument(
        "--xml", metavar="FILE", help="read the domain XML from FILE instead of stdin"
    )
    _common_options(parser)
    parser.add_argument("domain")
    parser.add_argument("operation", help="prepare, start, started, stopped, release, ...")
    parser.add_argument("sub_operation", help="begin or end")
    parser.add_argument("extra", nargs="?", default="-", help="libvirt's extra argument (ignored)")
    return parser


def _paths(args: argparse.Namespace) -> tuple[Path, Path, Path, Path]:
    root = Path(args.root)
    config = Path(args.config_dir or os.environ.get(CONFIG_DIR_ENV) or CONFIG_DIR)
    state = Path(args.state_dir) if args.state_dir else root / STATE_DIR
    log = Path(args.log_file) if args.log_file else root / LOG_FILE
    return root, config, state, log


def _read_xml(args: argparse.Namespace, stdin: TextIO | None) -> str:
    """The domain XML libvirt writes on stdin; always read so libvirt never blocks on the pipe."""
    if args.xml:
        try:
            return Path(args.xml).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"{args.xml}: cannot read the domain XML: {exc.strerror}") from None
    stream = stdin if stdin is not None else sys.stdin
    if stream is None or stream.isatty():
        return ""
    return stream.read()


def run_event(
    args: argparse.Namespace,
    stdin: TextIO | None,
    host_factory: HostFactory | None,
    out: TextIO,
    err: TextIO,
) -> int:
    from .journal import Journal
    from .log import log_path, setup
    from .profile import check_trusted, find_profile, load_profile
    from .render import failure_text, plan_text, result_json
    from .runner import Runner
    from .state import StateDir, check_ownership

    root, config_dir, state_dir, log_file = _paths(args)
    event = f"{args.operation}/{args.sub_operation}"
    xml = _read_xml(args, stdin)
    recovering = getattr(args, "recover", False)
    path = None if recovering else find_profile(config_dir, args.domain)
    journal_path = state_dir / f"{args.domain}.json"
    if recovering and not journal_path.exists():
        print(f"nothing to recover: {args.domain} has no journal in {state_dir}", file=out)
        return EXIT_OK
    if path is None and not (event == "release/end" and journal_path.exists()):
        if args.dry_run:
            print(
                f"{args.domain} has no profile in {config_dir}: the hook does nothing for it.",
                file=out,
            )
        return EXIT_OK
    profile, profile_problem = None, None
    try:
        if path is not None:
            check_trusted(path)
            profile = load_profile(path)
    except (ProfileError, UsageError) as exc:
        # A profile broken while the VM ran must not strand its devices: release undoes
        # the journal alone, which needs nothing from the profile.
        if not (event == "release/end" and journal_path.exists()):
            raise
        profile_problem = str(exc)

    if host_factory is None:
        from .host import make_host
        from .host.dryrun import make_dry_run_host

        host_factory = make_dry_run_host if args.dry_run else make_host
    host = host_factory(root)
    logger = setup(
        None if args.dry_run else log_file, use_syslog=not args.dry_run and str(root) == "/"
    )
    host.domain_xml = xml
    state = StateDir(state_dir)

    def report(outcome: Outcome) -> None:
        level = "info" if outcome.status in ("done", "undone") else "error"
        getattr(logger, level)(
            "%s %s: %s: %s in %.0f ms%s",
            args.domain,
            event,
            outcome.title,
            outcome.status,
            outcome.seconds * 1000,
            f": {outcome.error}" if outcome.error else "",
        )
        for op in outcome.operations:
            logger.debug("    %s", op)
        if not args.dry_run and not args.json:
            print(
                f"{PROG}: {args.domain} {event}: {outcome.title}: {outcome.status} "
                f"({outcome.seconds * 1000:.0f} ms)",
                file=err,
            )

    steps = profile.events.get(event, ()) if profile else ()
    addresses = [address for step in steps for address in step.action.addresses()]
    if args.dry_run:
        check_ownership(state, args.domain, addresses)
        journal = Journal.in_memory(Journal.load(state_dir, args.domain))
        result = Runner(host, journal, profile, args.domain, on_outcome=report).run(event)
    else:
        with state.lock(args.domain, event):
            check_ownership(state, args.domain, addresses)
            journal = Journal.load(state_dir, args.domain)
            result = Runner(host, journal, profile, args.domain, on_outcome=report).run(event)
    if args.json:
        import json

        print(json.dumps(result_json(result, str(root)), indent=2), file=out)
    elif args.dry_run:
        print(plan_text(result, str(root)), end="", file=out)
    if not result.ok and not args.dry_run:
        print(failure_text(result, log_path(logger)), end="", file=err)
    elif recovering and not args.dry_run and not args.json:
        print(
            f"{args.domain}: undid {len(result.rollback)} journaled change(s); nothing is left",
            file=out,
        )
    if profile_problem:
        result.warnings.insert(
            0,
            f"the profile did not load, so its release/end steps were not used and the "
            f"journal was undone instead: {profile_problem}",
        )
        print(f"{PROG}: warning: {result.warnings[0]}", file=err)
    for warning in result.warnings:
        logger.warning("%s %s: %s", args.domain, event, warning)
    return EXIT_OK if result.ok else 1


# --- subcommands ---------------------------------------------------------------------------


def cmd_validate(argv: list[str], out: TextIO, err: TextIO) -> int:
    from .profile import find_profile, load_profile

    parser = argparse.ArgumentParser(
        prog=f"{PROG} validate",
        description="Check profiles without running anything (all of them by default).",
    )
    parser.add_argument(
        "--config-dir", metavar="DIR", help=f"where profiles live (default {CONFIG_DIR})"
    )
    parser.add_argument("profiles", nargs="*", metavar="DOMAIN|FILE")
    args = parser.parse_args(argv)
    config_dir = Path(args.config_dir or os.environ.get(CONFIG_DIR_ENV) or CONFIG_DIR)
    targets: list[Path] = []
    for item in args.profiles:
        candidate = Path(item)
        if candidate.suffix in (".yaml", ".yml") or "/" in item:
            targets.append(candidate)
        else:
            found = find_profile(config_dir, item)
            if found is None:
                raise UsageError(f"{item} has no profile in {config_dir}")
            targets.append(found)
    if not args.profiles:
        targets = sorted(p for p in config_dir.glob("*.y*ml") if p.suffix in (".yaml", ".yml"))
        if not targets:
            print(f"no profiles in {config_dir}", file=out)
            return EXIT_OK
    status = EXIT_OK
    for target in targets:
        try:
            profile = load_profile(target)
        except ProfileError as exc:
            print(str(exc), file=err)
            status = EXIT_USAGE
        except UsageError as exc:
            print(f"{PROG}: {exc}", file=err)
            status = EXIT_USAGE
        else:
            steps = sum(len(s) for s in profile.events.values())
            print(f"{target}: ok ({len(profile.devices)} devices, {steps} steps)", file=out)
    return status


def cmd_recover(
    argv: list[str], out: TextIO, err: TextIO, host_factory: HostFactory | None = None
) -> int:
    """Undo everything a domain's journal holds, whatever its profile says now: after a hook
    was killed, or when an undo failed and the cause has been fixed."""
    parser = argparse.ArgumentParser(prog=f"{PROG} recover", description=cmd_recover.__doc__)
    parser.add_argument(
        "--dry-run", action="store_true", help="show what would be undone; change nothing"
    )
    _common_options(parser)
    parser.add_argument("domain")
    args = parser.parse_args(argv)
    args.operation, args.sub_operation, args.xml, args.recover = "release", "end", None, True
    return run_event(args, io.StringIO(), host_factory, out, err)


SUBCOMMANDS: dict[str, Callable[..., int]] = {
    "validate": cmd_validate,
    "recover": cmd_recover,
    **tools.subcommands(),  # iommu, check, init, edit, status, snapshot, schema, completion
}
# Subcommands that act on the host get the host factory (tests pass a fake kernel's).
HOST_COMMANDS = {"recover"}


def _dispatch(
    argv: list[str],
    stdin: TextIO | None,
    host_factory: HostFactory | None,
    out: TextIO,
    err: TextIO,
) -> int:
    positionals = [a for a in argv if not a.startswith("-")]
    if positionals and positionals[0] in SUBCOMMANDS and argv and argv[0] == positionals[0]:
        if argv[0] in HOST_COMMANDS:
            return SUBCOMMANDS[argv[0]](argv[1:], out, err, host_factory=host_factory)
        return SUBCOMMANDS[argv[0]](argv[1:], out, err)
    args = hook_parser().parse_args(argv)
    return run_event(args, stdin, host_factory, out, err)


def main(
    argv: list[str] | None = None,
    *,
    stdin: TextIO | None = None,
    host_factory: HostFactory | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        return _dispatch(
            list(sys.argv[1:] if argv is None else argv), stdin, host_factory, out, err
        )
    except SystemExit as exc:  # argparse: --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    except ProfileError as exc:  # already FILE:LINE:COL: prefixed, one line per problem
        print(str(exc), file=err)
        return exc.exit_code
    except PassthroughError as exc:
        print(f"{PROG}: {exc}", file=err)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=err)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `passthrough-hook iommu | head`: the reader has all it wanted
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - kept open until exit; no "Exception ignored" message at exit
        return EXIT_OK
    except Exception:
        return _internal_error(err)


def _internal_error(err: TextIO) -> int:
    """Log the traceback where the user can send it; print a pointer, not the traceback."""
    import logging

    from .log import LOGGER, log_path

    logger = logging.getLogger(LOGGER)
    path = log_path(logger)
    logger.error("internal error:\n%s", traceback.format_exc())
    if path is None:
        import tempfile

        fd, path = tempfile.mkstemp(prefix="passthrough-hook-crash-", suffix=".log")
        with os.fdopen(fd, "w") as handle:
            handle.write(traceback.format_exc())
    print(
        f"{PROG}: internal error (a bug, not your profile); the traceback is in {path}. "
        f"Please report it with that file.",
        file=err,
    )
    return EXIT_INTERNAL


def console_main() -> None:
    sys.exit(main())


def hook_main(argv: list[str]) -> int:
    """Entry from hooks/qemu, after its fast path found a profile or a journal.

    libvirt's arguments are always DOMAIN OPERATION SUB_OPERATION EXTRA: "--" keeps a domain
    named like a subcommand (validate, status...) or starting with "-" a domain name."""
    return main(["--", *argv])
