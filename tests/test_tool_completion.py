"""`passthrough-hook completion bash|zsh`: the scripts, run by the shells themselves."""

import os
import shutil
import subprocess

import pytest
from runs import command

from passthrough.cli import SUBCOMMANDS

SUBCOMMAND_LIST = sorted([*SUBCOMMANDS, "help"])


@pytest.fixture(scope="module")
def profiles(tmp_path_factory):
    directory = tmp_path_factory.mktemp("profiles")
    for name in ("win10.yaml", "gaming.yml", "notes.txt"):
        (directory / name).write_text("")
    return directory


def need(shell: str) -> str:
    found = shutil.which(shell)
    if found is None:
        outcome = pytest.fail if os.environ.get("PASSTHROUGH_ALL_TIERS") == "1" else pytest.skip
        outcome(f"{shell} is not installed (tools/test installs it)")
    return found


def bash_complete(profiles, *words: str) -> list[str]:
    code, script, _ = command("completion", "bash")
    assert code == 0
    line = " ".join(f"'{w}'" for w in words)
    program = (
        f"{script}\nCOMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; _passthrough_hook\n"
        f"printf '%s\\n' \"${{COMPREPLY[@]}}\""
    )
    result = subprocess.run(
        [need("bash"), "--norc", "-c", program],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": os.environ["PATH"], "PASSTHROUGH_HOOK_CONFIG_DIR": str(profiles)},
        cwd=profiles,
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return sorted(result.stdout.split())


def zsh_complete(profiles, *words: str) -> list[str]:
    """The zsh function with compadd and _files replaced by printers (no interactive shell)."""
    code, script, _ = command("completion", "zsh")
    assert code == 0
    line = " ".join(f"'{w}'" for w in words)
    program = (
        'compadd() { [[ $1 == -- ]] && shift; print -rl -- "$@" }\n'
        '_files() { print -r -- "<files $*>" }\ncompdef() { }\n'
        f"{script}\nwords=({line}); CURRENT={len(words)}; _passthrough_hook\n"
    )
    result = subprocess.run(
        [need("zsh"), "-f", "-c", program],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": os.environ["PATH"], "PASSTHROUGH_HOOK_CONFIG_DIR": str(profiles)},
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return sorted(result.stdout.split("\n")[:-1])


@pytest.mark.parametrize("complete", [bash_complete, zsh_complete], ids=["bash", "zsh"])
def test_completion(profiles, complete):
    assert complete(profiles, "passthrough-hook", "") == sorted(
        ["gaming", "win10", *SUBCOMMAND_LIST]
    )
    assert complete(profiles, "passthrough-hook", "ch") == (
        ["check"] if complete is bash_complete else sorted(["gaming", "win10", *SUBCOMMAND_LIST])
    )
    assert complete(profiles, "passthrough-hook", "check", "") == ["gaming", "win10"]
    assert complete(profiles, "passthrough-hook", "check", "--") == sorted(
        ["--help", "--json", "--root", "--config-dir", "--xml", "--connect"]
        + (["-h"] if complete is zsh_complete else [])
    )
    assert complete(profiles, "passthrough-hook", "win10", "") == [
        "attach",
        "migrate",
        "prepare",
        "reconnect",
        "release",
        "restore",
        "start",
        "started",
        "stopped",
    ]
    assert complete(profiles, "passthrough-hook", "--dry-run", "win10", "prepare", "") == ["begin"]
    assert complete(profiles, "passthrough-hook", "win10", "release", "") == ["end"]
    assert complete(profiles, "passthrough-hook", "completion", "") == ["bash", "zsh"]
    assert complete(profiles, "passthrough-hook", "iommu", "--") == sorted(
        ["--help", "--json", "--root"] + (["-h"] if complete is zsh_complete else [])
    )


def test_domains_follow_config_dir_on_the_line(profiles, tmp_path):
    (tmp_path / "other.yaml").write_text("")
    for complete in (bash_complete, zsh_complete):
        assert complete(
            profiles, "passthrough-hook", "edit", "--config-dir", str(tmp_path), ""
        ) == ["other"]


def test_option_values_complete_files_and_directories(profiles):
    assert (
        bash_complete(profiles, "passthrough-hook", "iommu", "--root", "") == []
    )  # no directories in there
    assert bash_complete(profiles, "passthrough-hook", "check", "--xml", "no") == ["notes.txt"]
    assert zsh_complete(profiles, "passthrough-hook", "check", "--xml", "") == ["<files >"]
    assert zsh_complete(profiles, "passthrough-hook", "snapshot", "") == ["<files -/>"]


def test_every_option_of_every_command_is_in_the_scripts():
    from passthrough.tools.completion import command_specs

    specs = {spec.name: spec for spec in command_specs()}
    assert set(specs) == {"", "help", *SUBCOMMANDS}
    assert "--state-dir" in specs["status"].flags + tuple(o for o, _ in specs["status"].valued)
    assert specs["recover"].positionals == ("domain",)  # found by catching its parser
    for shell in ("bash", "zsh"):
        script = command("completion", shell)[1]
        for spec in specs.values():
            for option in spec.flags + tuple(o for o, _ in spec.valued):
                assert option in script, (shell, spec.name, option)


@pytest.mark.parametrize("complete", [bash_complete, zsh_complete], ids=["bash", "zsh"])
def test_commands_only_where_the_grammar_takes_them(profiles, complete):
    """The command is the first word that is not an option: after global options too, and
    never after a domain or a command."""
    everything = sorted(["gaming", "win10", *SUBCOMMAND_LIST])
    assert complete(profiles, "passthrough-hook", "--root", "/", "") == everything
    assert complete(profiles, "passthrough-hook", "--json", "--dry-run", "") == everything
    assert complete(profiles, "passthrough-hook", "--root", "/", "check", "") == ["gaming", "win10"]
    assert complete(profiles, "passthrough-hook", "--dry-run", "win10", "") == [
        "attach",
        "migrate",
        "prepare",
        "reconnect",
        "release",
        "restore",
        "start",
        "started",
        "stopped",
    ]
    assert complete(profiles, "passthrough-hook", "status", "") == []
    assert complete(profiles, "passthrough-hook", "help", "") == sorted(SUBCOMMAND_LIST)
    assert complete(profiles, "passthrough-hook", "--root", "/", "iommu", "--") == sorted(
        ["--help", "--json", "--root"] + (["-h"] if complete is zsh_complete else [])
    )
