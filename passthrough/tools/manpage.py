"""`passthrough-hook help --man`: the manual page passthrough-hook(8), in roff, generated
from the parsers (the global options, every command's arguments, the events), so it says
what the program accepts. docs/passthrough-hook.8 is its output; a test keeps it current."""

from __future__ import annotations

import argparse

from .. import __version__
from .common import CONFIG_DIR, PROG


def _roff(text: str) -> str:
    text = " ".join(text.split()).replace("\\", "\\\\").replace("-", "\\-")
    return text if not text.startswith((".", "'")) else "\\&" + text


def _options(parser: argparse.ArgumentParser, skip: set[str]) -> list[str]:
    lines = []
    for action in parser._actions:  # argparse has no public list of its arguments
        if not action.option_strings or action.help == argparse.SUPPRESS:
            continue
        if set(action.option_strings) & skip:
            continue
        names = ", ".join(f"\\fB{_roff(flag)}\\fR" for flag in action.option_strings)
        if action.nargs != 0:
            names += f" \\fI{action.metavar or action.dest.upper()}\\fR"
        lines += [".TP", names, _roff(action.help or "")]
    return lines


def _usage(parser: argparse.ArgumentParser) -> str:
    formatter = argparse.HelpFormatter(parser.prog, width=10_000)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups, "")
    return " ".join(formatter.format_help().split())


def man_page() -> str:
    from ..cli import GLOBALS_BY_FLAG, SUBCOMMANDS, hook_parser
    from ..profile import EVENTS

    global_flags = {*GLOBALS_BY_FLAG, "-h", "--help", "--version"}
    lines = [
        f'.TH PASSTHROUGH\\-HOOK 8 "" "{PROG} {__version__}" "System Administration"',
        ".SH NAME",
        f"{PROG} \\- libvirt QEMU hook for PCI passthrough, from one YAML profile per domain",
        ".SH SYNOPSIS",
        f"\\fB{PROG}\\fR [\\fIOPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGUMENTS\\fR]",
        ".br",
        f"\\fB{PROG}\\fR [\\fIOPTIONS\\fR] \\fIDOMAIN OPERATION SUB_OPERATION\\fR [\\fIEXTRA\\fR]",
        ".br",
        f"\\fB{PROG} help\\fR [\\fICOMMAND\\fR]",
        ".SH DESCRIPTION",
        _roff(
            f"{PROG} prepares PCI passthrough devices (a GPU and its audio function, and any "
            f"other function) when a libvirt domain starts and puts everything back when it "
            f"stops, from the profile {CONFIG_DIR}/DOMAIN.yaml. libvirt runs it through "
            f"/etc/libvirt/hooks/qemu; the commands below help write and check profiles."
        ),
        ".PP",
        _roff(
            "The hook form runs a domain's profile for one event, as libvirt does. Typed by a "
            "person it is strict: the event must be one libvirt calls and the domain must have "
            "a profile. At a terminal, a real run shows its plan and asks before it stops the "
            "display manager or takes a GPU from the host (--yes skips the question). Called "
            "by libvirt it is silent for domains without a profile and exits 0 for any event "
            "the profile has no steps for."
        ),
        ".PP",
        "Events: " + _roff(", ".join(e.replace("/", " ") for e in EVENTS)) + ".",
        ".SH OPTIONS",
        _roff(
            "These options are accepted before or after the command; a command that has "
            "no use for one says it ignores it."
        ),
    ]
    lines += _options(hook_parser(), {"-h", "--help"})
    lines += [".SH COMMANDS"]
    for command in SUBCOMMANDS.values():
        parser = command.build_parser()
        lines += [".SS " + _roff(_usage(parser)), _roff(parser.description or "")]
        lines += _options(parser, global_flags)
        own_positionals = [a for a in parser._actions if not a.option_strings and a.help]
        for action in own_positionals:
            lines += [".TP", f"\\fI{_roff(action.metavar or action.dest)}\\fR", _roff(action.help)]
    lines += [
        ".SS help [COMMAND]",
        _roff("Lists the commands, or shows one command's arguments; help --man prints this page."),
        ".SH JSON",
        _roff(
            "With --json every command prints exactly one JSON document on stdout, errors "
            'included, with "format" (its version) and "command"; the exit status is the '
            "same as without it. The shapes are described by output.schema.json, shipped "
            "with the package."
        ),
        ".SH EXIT STATUS",
        ".TP",
        "0",
        "done",
        ".TP",
        "1",
        _roff("a step failed (and was rolled back), or a check found an error"),
        ".TP",
        "2",
        _roff("a profile or usage error; nothing was touched"),
        ".TP",
        "3",
        _roff("an internal error; the traceback is in the log"),
        ".TP",
        "130",
        "interrupted",
        ".SH FILES",
        ".TP",
        f"{CONFIG_DIR}/DOMAIN.yaml",
        _roff("a domain's profile (owned by root, not writable by group or others)"),
        ".TP",
        "/run/passthrough\\-hook/DOMAIN.json",
        _roff("the journal of what a domain's hook changed"),
        ".TP",
        "/var/log/libvirt/passthrough\\-hook.log",
        "the log",
        ".SH SEE ALSO",
        "\\fBvirsh\\fR(1), \\fBlibvirtd\\fR(8)",
    ]
    return "\n".join(lines) + "\n"
