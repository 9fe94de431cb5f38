"""Command line: `passthrough-hook [OPTIONS] COMMAND ...` and the hook form
`passthrough-hook [OPTIONS] DOMAIN OPERATION SUB_OPERATION [EXTRA]`, as a person types them
(strict: unknown words are errors), and hook_main, the form libvirt calls (tolerant, silent).
The global options (GLOBAL_OPTIONS) go anywhere on the line.

One error boundary: expected errors print one message and exit 1 (an action failed) or
2 (profile or usage); anything unexpected exits 3 and leaves the traceback in the log;
Ctrl-C exits 130. No traceback reaches a user.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from . import __version__, tools
from .constants import CONFIG_DIR, CONFIG_DIR_ENV, PROG
from .errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    PassthroughError,
    ProfileError,
    UsageError,
)
from .event import NoWork, Paths, Request
from .log import internal_error
from .output import emit, error_body
from .profile import EVENTS

if TYPE_CHECKING:
    from .event import HostFactory, Work
    from .profile import Step


@dataclass(frozen=True)
class GlobalOption:
    flag: str
    metavar: str | None  # None for a flag without a value
    help: str

    @property
    def dest(self) -> str:
        return self.flag[2:].replace("-", "_")


# Accepted anywhere on the line, before or after the command: `passthrough-hook --root X
# iommu` is `passthrough-hook iommu --root X`. A command that has no use for one says so.
GLOBAL_OPTIONS = (
    GlobalOption(
        "--root",
        "DIR",
        "prefix for every host path read or written (sysfs, /proc, /dev, /run): a tree written "
        "by `snapshot` instead of the host; default /",
    ),
    GlobalOption("--config-dir", "DIR", f"where profiles live (default {CONFIG_DIR})"),
    GlobalOption("--state-dir", "DIR", "where journals live (default <root>/run/passthrough-hook)"),
    GlobalOption(
        "--log-file", "FILE", "log file (default <root>/var/log/libvirt/passthrough-hook.log)"
    ),
    GlobalOption(
        "--xml",
        "FILE",
        "the domain XML from FILE (`-`: from stdin) instead of reading it from libvirt "
        "(read-only, and only when a step needs it)",
    ),
    GlobalOption("--json", None, "print exactly one JSON document on stdout (see the README)"),
    GlobalOption("--dry-run", None, "show the plan; change nothing"),
    GlobalOption(
        "--debug",
        None,
        "log (and print) every operation of each step, as `log_level: debug` in the profile "
        "does for libvirt's calls",
    ),
    GlobalOption(
        "--yes",
        None,
        "do not ask before stopping the display manager or taking a GPU from the host",
    ),
)
GLOBALS_BY_FLAG = {option.flag: option for option in GLOBAL_OPTIONS}
# Directories that must exist when given: a typo must not read as an empty host.
MUST_EXIST = ("--root", "--config-dir", "--state-dir")


def _add_global_options(parser: argparse.ArgumentParser, flags: tuple[str, ...]) -> None:
    for flag in flags:
        option = GLOBALS_BY_FLAG[flag]
        if option.metavar is None:
            parser.add_argument(flag, action="store_true", help=option.help)
        else:
            default = "/" if flag == "--root" else None
            parser.add_argument(flag, metavar=option.metavar, default=default, help=option.help)


def hook_parser() -> argparse.ArgumentParser:
    """The hook form as a parser: for `help`, completion and the man page (the line itself
    is read by _typed_event, which knows the events)."""
    from .tools.common import Parser

    parser = Parser(
        prog=PROG,
        description="Run a domain's profile for one libvirt event, as libvirt's qemu hook does: "
        "from a terminal, to try a profile (`--dry-run`) or to run it by hand.",
        epilog=f"example: {PROG} --dry-run win10 prepare begin",
    )
    _add_global_options(parser, tuple(GLOBALS_BY_FLAG))
    parser.add_argument("domain", help="a domain with a profile in the config dir")
    parser.add_argument("operation", help=", ".join(dict.fromkeys(e.split("/")[0] for e in EVENTS)))
    parser.add_argument("sub_operation", help="begin or end, as the event has")
    parser.add_argument("extra", nargs="?", default="-", help="libvirt's extra argument (ignored)")
    return parser


def _read_xml_file(name: str) -> str:
    try:
        return Path(name).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{name}: cannot read the domain XML: {exc.strerror}") from None


def _typed_xml(
    domain: str, xml_option: str | None, steps: tuple[Step, ...], stdin: TextIO | None
) -> tuple[str, list[str]]:
    """The domain XML for a command typed by a person, and warnings. Never waits on stdin
    unless told to (`--xml -`): a person's stdin is not libvirt's pipe and may never end."""
    if xml_option == "-":
        from .hook import read_domain_xml

        return read_domain_xml(stdin if stdin is not None else sys.stdin), []
    if xml_option:
        return _read_xml_file(xml_option), []
    needing = [step for step in steps if step.action.needs_domain_xml()]
    if not needing:
        return "", []
    from .tools.libvirt_domain import LOOKUP_TIMEOUT, DomainXmlError, from_libvirt

    try:
        return from_libvirt(domain, "qemu:///system", LOOKUP_TIMEOUT), []
    except DomainXmlError as exc:
        where = ", ".join(f"step {s.number} ({s.action.describe()}, {s.where})" for s in needing)
        return "", [f"{where} needs the domain XML and had none: {exc.reason}; {exc.fix}"]


def run_typed(
    request: Request,
    xml_option: str | None,
    stdin: TextIO | None,
    host_factory: HostFactory | None,
    out: TextIO,
    err: TextIO,
    ask: bool = True,
) -> int:
    """An event (or recover) a person typed: resolve it, get the domain XML it needs, ask
    before a real run at a terminal takes the display (unless `ask` is False: --yes,
    recover), run it and report."""
    from .event import report_no_work, resolve, run

    work = resolve(request)
    if isinstance(work, NoWork):
        return report_no_work(work, out)
    xml, warnings = _typed_xml(request.domain, xml_option, work.steps, stdin)
    if ask and not request.dry_run and not _confirmed(work, xml, stdin, err):
        print(f"{PROG}: nothing was changed", file=err)
        return EXIT_FAILED
    return run(work, host_factory, out, err, xml, tuple(warnings))


# --- asking first ----------------------------------------------------------------------------


def _takes_display(work: Work) -> list[str]:
    """What the steps take from the person at the screen: the display manager, GPUs."""
    from .tools.facts import HostFacts

    facts = HostFacts(work.request.paths.root)
    taken = []
    for step in work.steps:
        if not step.action.asks_first():
            continue
        if step.action.name == "display_manager":
            taken.append("stops the display manager (your desktop session ends)")
            continue
        for address in step.action.addresses():
            fn = facts.function(address)
            if fn is not None and fn.is_gpu:
                taken.append(f"takes the GPU {address} from the host ({step.action.describe()})")
    return list(dict.fromkeys(taken))


def _confirmed(work: Work, xml: str, stdin: TextIO | None, err: TextIO) -> bool:
    """A real run typed at a terminal shows its plan and asks before it takes the display
    away. libvirt's calls (not typed), non-terminals and --yes never ask."""
    from .event import dry_run_plan

    stream = stdin if stdin is not None else sys.stdin
    if stream is None or not stream.isatty() or not err.isatty():
        return True
    taken = _takes_display(work)
    if not taken:
        return True
    err.write(
        dry_run_plan(work, xml)
        .replace("Dry run of", "Plan for", 1)
        .replace("Nothing is changed; this is what would happen:", "This is what will happen:", 1)
    )
    err.write("".join(f"This {what}.\n" for what in taken))
    err.write("Go ahead? [y/N] ")
    err.flush()
    answer = stream.readline().strip().lower()
    return answer in ("y", "yes")


# --- subcommands ---------------------------------------------------------------------------


def validate_parser() -> argparse.ArgumentParser:
    from .tools.common import parser_for

    parser = parser_for(
        "validate",
        "Check profiles without running anything (all of them by default): their syntax, and "
        "that the hook will trust them (owned by root, not writable by group or others).",
    )
    _add_global_options(parser, ("--config-dir", "--json"))
    parser.add_argument("profiles", nargs="*", metavar="DOMAIN|FILE")
    return parser


def cmd_validate(argv: list[str], out: TextIO, err: TextIO) -> int:
    from .profile import find_profile

    args = validate_parser().parse_args(argv)
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
            targets.append(Path(found))
    if not args.profiles:
        targets = sorted(p for p in config_dir.glob("*.y*ml") if p.suffix in (".yaml", ".yml"))
        if not targets:
            if not config_dir.is_dir():
                raise UsageError(f"{config_dir} does not exist (install.sh creates it)")
            if args.json:
                emit(out, "validate", {"ok": True, "config_dir": str(config_dir), "profiles": []})
            else:
                print(f"no profiles in {config_dir}", file=out)
            return EXIT_OK
    reports = [_validate_one(target) for target in targets]
    status = EXIT_USAGE if any(r["errors"] for r in reports) else EXIT_OK
    if args.json:
        body = {"ok": status == EXIT_OK, "config_dir": str(config_dir), "profiles": reports}
        emit(out, "validate", body)
        return status
    for report in reports:
        for line in report["errors"]:
            print(line, file=err)
        for line in report["warnings"]:
            print(f"{report['path']}: warning: {line}", file=err)
        if not report["errors"]:
            print(
                f"{report['path']}: ok ({report['devices']} devices, {report['steps']} steps)"
                + (", with warnings" if report["warnings"] else ""),
                file=out,
            )
    return status


def _validate_one(target: Path) -> dict[str, Any]:
    """A profile's problems: syntax (errors), and the hook's trust rule (an error as root,
    where the hook would refuse it; a warning otherwise, as it will refuse it as root)."""
    from .profile import load_profile
    from .trust import profile_problems

    report: dict[str, Any] = {
        "path": str(target),
        "ok": False,
        "devices": 0,
        "steps": 0,
        "errors": [],
        "warnings": [],
    }
    try:
        profile = load_profile(target)
    except ProfileError as exc:
        report["errors"] = list(exc.problems)
        return report
    except UsageError as exc:
        report["errors"] = [f"{PROG}: {exc}"]
        return report
    report["devices"] = len(profile.devices)
    report["steps"] = sum(len(s) for s in profile.events.values())
    trust = [
        f"the hook will refuse it: {problem} ({fix})"
        for problem, fix in profile_problems(target, runs_as=0)
    ]
    if os.geteuid() == 0:
        report["errors"] = [f"{target}: {line}" for line in trust]
    else:
        report["warnings"] = trust
    report["ok"] = not report["errors"]
    return report


def recover_parser() -> argparse.ArgumentParser:
    from .tools.common import parser_for

    parser = parser_for(
        "recover",
        "Undo everything a domain's journal holds, whatever its profile says now: after a "
        "hook was killed, or when an undo failed and the cause has been fixed.",
    )
    _add_global_options(
        parser, ("--dry-run", "--root", "--config-dir", "--state-dir", "--log-file", "--json")
    )
    parser.add_argument("domain")
    return parser


def cmd_recover(
    argv: list[str], out: TextIO, err: TextIO, host_factory: HostFactory | None = None
) -> int:
    args = recover_parser().parse_args(argv)
    request = Request(
        domain=args.domain,
        event="release/end",
        paths=Paths.resolve(args.root, args.config_dir, args.state_dir, args.log_file),
        recover=True,
        dry_run=args.dry_run,
        json=args.json,
    )
    # recover gives devices back; it takes nothing from the person, so it never asks.
    return run_typed(request, None, io.StringIO(), host_factory, out, err, ask=False)


class Builtin:
    """A subcommand implemented in this module, shaped like tools.Tool."""

    def __init__(self, run: Callable[..., int], parser: Callable[[], argparse.ArgumentParser]):
        self.run = run
        self.build_parser = parser

    def __call__(self, argv: list[str], out: TextIO, err: TextIO, **kwargs: Any) -> int:
        return self.run(argv, out, err, **kwargs)


SUBCOMMANDS: dict[str, Any] = {
    "validate": Builtin(cmd_validate, validate_parser),
    "recover": Builtin(cmd_recover, recover_parser),
    **tools.subcommands(),  # iommu, check, init, edit, status, snapshot, schema, completion
}
# Subcommands that act on the host get the host factory (tests pass a fake kernel's).
HOST_COMMANDS = {"recover"}
# Commands for which a --config-dir need not exist yet: they create it.
CREATES_CONFIG_DIR = {"init"}


# --- the grammar ----------------------------------------------------------------------------


def split_globals(argv: list[str]) -> tuple[dict[str, str | bool], list[str]]:
    """The global options wherever they are (up to `--`), and the other words in order."""
    options: dict[str, str | bool] = {}
    rest: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == "--":
            rest += argv[i:]
            break
        flag, equals, inline = token.partition("=")
        option = GLOBALS_BY_FLAG.get(flag) if token.startswith("--") else None
        if option is None:
            rest.append(token)
        elif option.metavar is None:
            if equals:
                raise UsageError(f"{flag} takes no value")
            options[flag] = True
        elif equals:
            options[flag] = inline
        elif i + 1 < len(argv):
            options[flag] = argv[i + 1]
            i += 1
        else:
            raise UsageError(f"{flag} needs a value ({flag} {option.metavar})")
        i += 1
    return options, rest


def _unknown_command(word: str) -> UsageError:
    from .schema import closest

    names = sorted([*SUBCOMMANDS, "help"])
    hint = closest(word, names)
    if hint:
        return UsageError(f'unknown command "{word}"{hint}')
    return UsageError(
        f'unknown command "{word}"; the commands are {", ".join(names)}, and the hook form is '
        f"DOMAIN OPERATION SUB_OPERATION (`{PROG} help` explains them)"
    )


def _check_directories(options: dict[str, str | bool], command: str) -> None:
    """A directory given that does not exist is a typo, not an empty host: an error. Except
    where the command creates it (init its config dir, a real hook run its state dir)."""
    creates = {"--config-dir"} if command in CREATES_CONFIG_DIR else set()
    if command == "event" and not options.get("--dry-run"):
        creates.add("--state-dir")
    for flag in MUST_EXIST:
        value = options.get(flag)
        if not isinstance(value, str) or flag in creates:
            continue
        if not os.path.exists(value):
            raise UsageError(f"{flag} {value}: no such directory")
        if not os.path.isdir(value):
            raise UsageError(f"{flag} {value}: not a directory")


def _dispatch(
    argv: list[str],
    stdin: TextIO | None,
    host_factory: HostFactory | None,
    out: TextIO,
    err: TextIO,
    context: dict[str, str],
) -> int:
    options, rest = split_globals(argv)
    index = next((i for i, w in enumerate(rest) if w == "--" or not w.startswith("-")), len(rest))
    for word in rest[:index]:  # options before the command that are not global ones
        if word in ("-h", "--help"):
            print(help_text(), end="", file=out)
            return EXIT_OK
        if word == "--version":
            print(f"{PROG} {__version__}", file=out)
            return EXIT_OK
        from .schema import closest

        hint = closest(word, [*GLOBALS_BY_FLAG, "--help", "--version"])
        raise UsageError(
            f'unknown option "{word}"{hint}; options of a command go after it '
            f"(`{PROG} help COMMAND` lists them)"
        )
    words = rest[index:]
    if not words:
        print(help_text(), end="", file=out)
        return EXIT_OK
    name = words[0]
    if name in SUBCOMMANDS:
        context["command"] = name
        _check_directories(options, name)
        return _run_subcommand(name, words[1:], options, host_factory, out, err)
    if name == "help":
        context["command"] = "help"
        return _help(words[1:], out)
    context["command"] = "event"
    _check_directories(options, "event")
    return _typed_event(words, options, stdin, host_factory, out, err)


def _run_subcommand(
    name: str,
    words: list[str],
    options: dict[str, str | bool],
    host_factory: HostFactory | None,
    out: TextIO,
    err: TextIO,
) -> int:
    command = SUBCOMMANDS[name]
    parser = command.build_parser()
    accepted = {flag for action in parser._actions for flag in action.option_strings}
    injected: list[str] = []
    ignored = []
    for flag, value in options.items():
        if flag not in accepted:
            ignored.append(flag)
        else:
            injected += [flag] if value is True else [flag, str(value)]
    if ignored:
        print(f"{PROG}: {name} ignores {', '.join(ignored)}", file=err)
    if "--" in words:  # keep positionals after `--` after the options put back
        cut = words.index("--")
        words = [*words[:cut], *injected, *words[cut:]]
    else:
        words = [*words, *injected]
    if name in HOST_COMMANDS:
        return int(command(words, out, err, host_factory=host_factory))
    return int(command(words, out, err))


def _typed_event(
    words: list[str],
    options: dict[str, str | bool],
    stdin: TextIO | None,
    host_factory: HostFactory | None,
    out: TextIO,
    err: TextIO,
) -> int:
    """`DOMAIN OPERATION SUB_OPERATION [EXTRA]` typed by a person: a known event and a domain
    with a profile, or an error saying which word is wrong."""
    from .profile import EVENTS, find_profile
    from .schema import closest

    dashdash = bool(words) and words[0] == "--"
    positionals = words[1:] if dashdash else words
    stray = [w for w in positionals if w.startswith("-") and w != "-"] if not dashdash else []
    if stray:
        hint = closest(stray[0], [*GLOBALS_BY_FLAG])
        raise UsageError(f'unknown option "{stray[0]}"{hint} (`{PROG} help` lists the options)')
    if not positionals:
        raise UsageError(f"no domain given (`{PROG} help` explains the hook form)")

    def option(flag: str) -> str | None:
        value = options.get(flag)
        return value if isinstance(value, str) else None

    paths = Paths.resolve(
        option("--root"), option("--config-dir"), option("--state-dir"), option("--log-file")
    )
    config_dir = paths.config_dir
    domain = positionals[0]
    if len(positionals) < 3:
        raise (
            _unknown_command(domain)
            if not dashdash
            else UsageError(
                f"the hook form is DOMAIN OPERATION SUB_OPERATION [EXTRA]; got {' '.join(positionals)}"
            )
        )
    looks_like_a_command = not dashdash and closest(domain, [*SUBCOMMANDS, "help"])
    if looks_like_a_command and find_profile(config_dir, domain) is None:
        raise _unknown_command(domain)
    if len(positionals) > 4:
        raise UsageError(
            f"too many words: the hook form is DOMAIN OPERATION SUB_OPERATION [EXTRA]; "
            f"{' '.join(positionals[4:])} left over"
        )
    domain, operation, sub_operation = positionals[:3]
    event = f"{operation}/{sub_operation}"
    if event not in EVENTS:
        raise UsageError(
            f'unknown event "{event}"{closest(event, EVENTS)}; libvirt calls the qemu hook with '
            f"{', '.join(EVENTS)}"
        )
    request = Request(
        domain=domain,
        event=event,
        paths=paths,
        dry_run=bool(options.get("--dry-run")),
        json=bool(options.get("--json")),
        debug=bool(options.get("--debug")),
    )
    ask = not options.get("--yes")
    return run_typed(request, option("--xml"), stdin, host_factory, out, err, ask=ask)


# --- help and the man page -------------------------------------------------------------------


# One line each for `help`; each command's own --help has the whole description.
SUMMARIES = {
    "validate": "check profiles' syntax, and that the hook will trust them",
    "recover": "undo what a domain's journal holds (after a crash or a failed undo)",
    "iommu": "list the IOMMU groups, and whether each GPU's group can go to a VM",
    "check": "preflight: a domain's profile against this host and its domain XML",
    "init": "write a first profile from a domain's PCI <hostdev>s",
    "edit": "edit a profile on a copy, saved only when valid (like visudo)",
    "status": "which domains hold which devices now, and what needs recovery",
    "snapshot": "copy this host's PCI and IOMMU facts into a tree for --root",
    "schema": "print the JSON Schema of profiles",
    "completion": "print a bash or zsh completion script",
    "help": "list the commands, or one command's arguments (--man: the manual page)",
}


def help_text() -> str:
    lines = [
        f"usage: {PROG} [OPTIONS] COMMAND [ARGUMENTS]",
        f"       {PROG} [OPTIONS] DOMAIN OPERATION SUB_OPERATION [EXTRA]",
        "",
        "A libvirt QEMU hook for PCI passthrough: one YAML profile per domain.",
        "",
        "Commands:",
    ]
    names = [*SUBCOMMANDS, "help"]
    width = max(len(name) for name in names) + 2
    for name in names:
        lines += _wrapped(SUMMARIES.get(name, ""), f"  {name:<{width}}", " " * (width + 2))
    lines += [
        "",
        "The hook form runs a domain's profile for one event, as libvirt does",
        f"(`{PROG} --dry-run win10 prepare begin` shows the plan); events:",
    ]
    from .profile import EVENTS

    lines += _wrapped(" ".join(e.replace("/", " ") + "," for e in EVENTS).rstrip(","), "  ", "  ")
    lines += ["", "Options (before or after the command):"]
    for option in GLOBAL_OPTIONS:
        head = f"  {option.flag}" + (f" {option.metavar}" if option.metavar else "")
        lines += _wrapped(option.help, f"{head:<20}", " " * 20)
    lines += [
        "",
        "Exit status: 0 done, 1 a step failed (rolled back) or a check found an error,",
        "2 profile or usage error, 3 internal error (see the log), 130 interrupted.",
    ]
    return "\n".join(lines) + "\n"


def _wrapped(text: str, first: str, rest: str) -> list[str]:
    from .tools.common import wrap

    return wrap(text, first, rest, width=88)


def _help(words: list[str], out: TextIO) -> int:
    if not words:
        print(help_text(), end="", file=out)
        return EXIT_OK
    if words[0] == "--man":
        from .tools.manpage import man_page

        print(man_page(), end="", file=out)
        return EXIT_OK
    name = words[0]
    if name in SUBCOMMANDS:
        print(SUBCOMMANDS[name].build_parser().format_help(), end="", file=out)
        return EXIT_OK
    if name in ("hook", "event"):
        print(hook_parser().format_help(), end="", file=out)
        return EXIT_OK
    raise _unknown_command(name)


# --- the error boundary ----------------------------------------------------------------------


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
    words = list(sys.argv[1:] if argv is None else argv)
    before_dashdash = words[: words.index("--")] if "--" in words else words
    as_json = "--json" in before_dashdash
    context = {"command": "event"}

    def fail(message: str, code: int, problems: list[str] | None = None) -> int:
        print(message, file=err)
        if as_json:
            emit(out, context["command"], error_body(message, code, problems))
        return code

    try:
        return _dispatch(words, stdin, host_factory, out, err, context)
    except SystemExit as exc:  # argparse: --help, --version
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    except ProfileError as exc:  # already FILE:LINE:COL: prefixed, one line per problem
        return fail(str(exc), exc.exit_code, exc.problems)
    except PassthroughError as exc:
        return fail(f"{PROG}: {exc}", exc.exit_code)
    except KeyboardInterrupt:
        return fail(f"{PROG}: interrupted", EXIT_INTERRUPTED)
    except BrokenPipeError:  # `passthrough-hook iommu | head`: the reader has all it wanted
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - kept open until exit; no "Exception ignored" message at exit
        return EXIT_OK
    except Exception:
        code = internal_error(err)
        if as_json:
            emit(out, context["command"], error_body("internal error (a bug); see the log", code))
        return code


def console_main() -> None:
    sys.exit(main())
