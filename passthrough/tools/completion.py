"""`passthrough-hook completion bash|zsh`: a completion script for the shell, generated
from the commands' own argument parsers, so it lists exactly the options they accept.

It completes subcommands, options, option values that are files or directories, domain
names (the profiles in the config dir: $PASSTHROUGH_HOOK_CONFIG_DIR, --config-dir on the
line, or the default) and, in the hook form `DOMAIN OPERATION SUB_OPERATION`, the events.
Install: `passthrough-hook completion bash > /etc/bash_completion.d/passthrough-hook`, or
for zsh a file `_passthrough-hook` in a directory of $fpath.
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn, TextIO

from ..errors import EXIT_OK
from .common import CONFIG_DIR, PROG, parser_for

# What each positional argument (by argparse dest) completes to.
POSITIONAL_KINDS = {
    "domain": "domain",
    "profiles": "domain_or_file",
    "operation": "operation",
    "sub_operation": "sub_operation",
    "directory": "dir",
    "shell": "shell",
}


@dataclass(frozen=True)
class CommandSpec:
    name: str  # "" for the hook form
    flags: tuple[str, ...]  # options without a value
    valued: tuple[tuple[str, str], ...]  # (option, dir|file|none)
    positionals: tuple[str, ...]  # kinds, in order; a kind ending in "*" repeats


def build_parser() -> argparse.ArgumentParser:
    parser = parser_for(
        "completion",
        "Print a completion script: "
        "`source <(passthrough-hook completion bash)` in ~/.bashrc, or "
        "`passthrough-hook completion zsh > ~/.zfunc/_passthrough-hook`.",
    )
    parser.add_argument("shell", choices=("bash", "zsh"))
    return parser


def main(argv: list[str], out: TextIO, err: TextIO) -> int:
    args = build_parser().parse_args(argv)
    specs = command_specs()
    out.write(bash_script(specs) if args.shell == "bash" else zsh_script(specs))
    return EXIT_OK


# --- what to complete, from the parsers ---------------------------------------------------------


def command_specs() -> list[CommandSpec]:
    from ..cli import SUBCOMMANDS, hook_parser

    specs = [spec_of("", hook_parser())]
    for name, command in SUBCOMMANDS.items():
        parser = parser_of(command)
        if parser is not None:
            specs.append(spec_of(name, parser))
    specs.append(CommandSpec("help", ("--man",), (), ("command",)))  # help [COMMAND]
    return specs


class _Captured(Exception):
    def __init__(self, parser: argparse.ArgumentParser):
        self.parser = parser


def parser_of(command: Callable) -> argparse.ArgumentParser | None:
    """A subcommand's parser: its module's build_parser() when it has one; otherwise the
    parser it builds, caught at its parse_args() call, before it does anything."""
    build = getattr(command, "build_parser", None)
    if build is not None:
        return build()
    original = argparse.ArgumentParser.parse_args

    def capture(self: argparse.ArgumentParser, *args: object, **kwargs: object) -> NoReturn:
        raise _Captured(self)

    setattr(argparse.ArgumentParser, "parse_args", capture)  # noqa: B010 - a method, patched
    try:
        command([], io.StringIO(), io.StringIO())
    except _Captured as caught:
        return caught.parser
    except Exception:
        return None
    finally:
        setattr(argparse.ArgumentParser, "parse_args", original)  # noqa: B010
    return None


def spec_of(name: str, parser: argparse.ArgumentParser) -> CommandSpec:
    flags: list[str] = []
    valued: list[tuple[str, str]] = []
    positionals: list[str] = []
    for action in parser._actions:  # argparse has no public list of its arguments
        if action.option_strings:
            if action.nargs == 0:
                flags += action.option_strings
            else:
                kind = {"DIR": "dir", "FILE": "file"}.get(str(action.metavar or ""), "none")
                valued += [(option, kind) for option in action.option_strings]
        else:
            kind = POSITIONAL_KINDS.get(action.dest, "none")
            positionals.append(kind + ("*" if action.nargs in ("*", "+") else ""))
    return CommandSpec(name, tuple(flags), tuple(valued), tuple(positionals))


def events() -> dict[str, list[str]]:
    """operation -> its sub-operations, as libvirt calls the hook."""
    from ..profile import EVENTS

    table: dict[str, list[str]] = {}
    for event in EVENTS:
        operation, sub_operation = event.split("/")
        table.setdefault(operation, []).append(sub_operation)
    return table


# --- the scripts ----------------------------------------------------------------------------


def _valued_by_kind(specs: list[CommandSpec]) -> dict[str, list[str]]:
    by_kind: dict[str, list[str]] = {"dir": [], "file": [], "none": []}
    for spec in specs:
        for option, kind in spec.valued:
            if option not in by_kind[kind]:
                by_kind[kind].append(option)
    return by_kind


def _command_cases(specs: list[CommandSpec], indent: str) -> str:
    """One `case` branch per subcommand; the hook form (`*)`) goes last, as it matches all."""
    lines = []
    for spec in sorted(specs, key=lambda s: not s.name):
        options = " ".join([*spec.flags, *(option for option, _ in spec.valued)])
        pattern = spec.name or "*"
        lines.append(f'{indent}{pattern}) opts="{options}"; kinds="{" ".join(spec.positionals)}";;')
    return "\n".join(lines)


def _sub_operation_cases(indent: str) -> str:
    return "\n".join(
        f'{indent}{operation}) subs="{" ".join(subs)}";;' for operation, subs in events().items()
    )


def _skip(valued: dict[str, list[str]]) -> str:
    """The options whose value is the next word, as a case pattern."""
    return "|".join(valued["dir"] + valued["file"] + valued["none"]) or "--no-such-option"


def bash_script(specs: list[CommandSpec]) -> str:
    valued = _valued_by_kind(specs)
    skip = _skip(valued)
    subcommands = " ".join(spec.name for spec in specs if spec.name)
    return f"""# bash completion for {PROG} (generated by `{PROG} completion bash`)

_passthrough_hook_domains() {{
    local dir=${{PASSTHROUGH_HOOK_CONFIG_DIR:-{CONFIG_DIR}}} i file
    for ((i = 1; i < COMP_CWORD; i++)); do
        [[ ${{COMP_WORDS[i]}} == --config-dir ]] && dir=${{COMP_WORDS[i+1]}}
    done
    for file in "$dir"/*.yaml "$dir"/*.yml; do
        [[ -e $file ]] || continue
        file=${{file##*/}}
        printf '%s\\n' "${{file%.*}}"
    done
}}

_passthrough_hook() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} prev=${{COMP_WORDS[COMP_CWORD-1]}}
    local subcommands="{subcommands}"
    local command="" start=1 opts kinds subs="" i n=0 word kind
    case $prev in
        {"|".join(valued["dir"]) or "--no-such-option"}) COMPREPLY=($(compgen -d -- "$cur")); return;;
        {"|".join(valued["file"]) or "--no-such-option"}) COMPREPLY=($(compgen -f -- "$cur")); return;;
        {"|".join(valued["none"]) or "--no-such-option"}) COMPREPLY=(); return;;
    esac
    # The command is the first word that is not an option (global options go before it too).
    for ((i = 1; i < COMP_CWORD; i++)); do
        word=${{COMP_WORDS[i]}}
        case $word in
            {skip}) ((i++));;
            -*) ;;
            *) if [[ " $subcommands " == *" $word "* ]]; then command=$word; start=$((i + 1)); fi; break;;
        esac
    done
    case $command in
{_command_cases(specs, " " * 8)}
    esac
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
        return
    fi
    local -a words=()
    for ((i = start; i < COMP_CWORD; i++)); do
        word=${{COMP_WORDS[i]}}
        case $word in
            {"|".join(valued["dir"] + valued["file"] + valued["none"]) or "--no-such-option"}) ((i++));;
            -*) ;;
            *) words+=("$word"); ((n++));;
        esac
    done
    local -a kindlist=($kinds)
    kind=${{kindlist[n]:-}}
    if [[ -z $kind && ${{#kindlist[@]}} -gt 0 && ${{kindlist[-1]}} == *'*' ]]; then
        kind=${{kindlist[-1]}}
    fi
    case ${{kind%'*'}} in
        domain)
            COMPREPLY=($(compgen -W "$(_passthrough_hook_domains)" -- "$cur"))
            if [[ -z $command && $n -eq 0 ]]; then COMPREPLY+=($(compgen -W "$subcommands" -- "$cur")); fi;;
        domain_or_file) COMPREPLY=($(compgen -W "$(_passthrough_hook_domains)" -- "$cur") $(compgen -f -- "$cur"));;
        operation) COMPREPLY=($(compgen -W "{" ".join(events())}" -- "$cur"));;
        sub_operation)
            case ${{words[1]}} in
{_sub_operation_cases(" " * 16)}
            esac
            COMPREPLY=($(compgen -W "$subs" -- "$cur"));;
        dir) COMPREPLY=($(compgen -d -- "$cur"));;
        shell) COMPREPLY=($(compgen -W "bash zsh" -- "$cur"));;
        command) COMPREPLY=($(compgen -W "$subcommands" -- "$cur"));;
        *) COMPREPLY=();;
    esac
}}

complete -F _passthrough_hook {PROG}
"""


def zsh_script(specs: list[CommandSpec]) -> str:
    valued = _valued_by_kind(specs)
    skip = _skip(valued)
    subcommands = " ".join(spec.name for spec in specs if spec.name)
    return f"""#compdef {PROG}
# zsh completion for {PROG} (generated by `{PROG} completion zsh`)

_passthrough_hook_domains() {{
    local dir=${{PASSTHROUGH_HOOK_CONFIG_DIR:-{CONFIG_DIR}}} i file
    for ((i = 2; i < CURRENT; i++)); do
        [[ ${{words[i]}} == --config-dir ]] && dir=${{words[i+1]}}
    done
    for file in "$dir"/*.y(a|)ml(N); do
        file=${{file:t}}
        print -r -- "${{file%.*}}"
    done
}}

_passthrough_hook() {{
    local cur=${{words[CURRENT]}} prev=${{words[CURRENT-1]}}
    local -a subcommands=({subcommands}) positional
    local command="" start=2 opts kinds subs="" i word kind
    case $prev in
        {"|".join(valued["dir"]) or "--no-such-option"}) _files -/; return;;
        {"|".join(valued["file"]) or "--no-such-option"}) _files; return;;
        {"|".join(valued["none"]) or "--no-such-option"}) return;;
    esac
    # The command is the first word that is not an option (global options go before it too).
    for ((i = 2; i < CURRENT; i++)); do
        word=${{words[i]}}
        case $word in
            {skip}) ((i++));;
            -*) ;;
            *) if ((${{subcommands[(Ie)$word]}})); then command=$word; start=$((i + 1)); fi; break;;
        esac
    done
    case $command in
{_command_cases(specs, " " * 8)}
    esac
    if [[ $cur == -* ]]; then
        compadd -- ${{=opts}}
        return
    fi
    for ((i = start; i < CURRENT; i++)); do
        word=${{words[i]}}
        case $word in
            {"|".join(valued["dir"] + valued["file"] + valued["none"]) or "--no-such-option"}) ((i++));;
            -*) ;;
            *) positional+=("$word");;
        esac
    done
    local -a kindlist=(${{=kinds}})
    kind=${{kindlist[$((${{#positional}} + 1))]:-}}
    if [[ -z $kind && ${{#kindlist}} -gt 0 && ${{kindlist[-1]}} == *'*' ]]; then
        kind=${{kindlist[-1]}}
    fi
    case ${{kind%'*'}} in
        domain)
            compadd -- $(_passthrough_hook_domains)
            if [[ -z $command && ${{#positional}} -eq 0 ]]; then compadd -- $subcommands; fi;;
        domain_or_file) compadd -- $(_passthrough_hook_domains); _files;;
        operation) compadd -- {" ".join(events())};;
        sub_operation)
            case ${{positional[2]}} in
{_sub_operation_cases(" " * 16)}
            esac
            compadd -- ${{=subs}};;
        dir) _files -/;;
        shell) compadd -- bash zsh;;
        command) compadd -- $subcommands;;
    esac
}}

if [[ ${{zsh_eval_context[-1]}} == loadautofunc ]]; then
    _passthrough_hook "$@"
else
    compdef _passthrough_hook {PROG}
fi
"""
