"""command: an argv run through the Host's commands; undo_argv on undo, or not undone."""

import pytest
from fakecommands import install_fake_commands
from runs import hook

from passthrough.host.commands import CommandError


@pytest.fixture
def book(kernel):
    book = install_fake_commands(kernel)
    book.handlers["nvidia-smi"] = lambda argv, stdin: ""
    return book


def test_runs_the_argv_and_its_undo(kernel, book):
    code, _, err = hook(
        kernel,
        "prepare",
        "begin",
        profile="prepare/begin:\n  - command: {argv: [nvidia-smi, -pm, 0], "
        "undo_argv: [nvidia-smi, -pm, 1]}\n",
    )
    assert code == 0, err
    assert book.calls == [["nvidia-smi", "-pm", "0"]]
    assert hook(kernel, "release", "end")[0] == 0
    assert book.calls == [["nvidia-smi", "-pm", "0"], ["nvidia-smi", "-pm", "1"]]


def test_without_undo_argv_it_is_not_undone(kernel, book):
    code, out, _ = hook(
        kernel,
        "prepare",
        "begin",
        profile="prepare/begin:\n  - command: [nvidia-smi, -pm, 0]\n",
        dry_run=True,
    )
    assert code == 0 and "1. run nvidia-smi -pm 0 (not undone)" in out and book.calls == []
    assert hook(kernel, "prepare", "begin")[0] == 0
    assert hook(kernel, "release", "end")[0] == 0
    assert book.calls == [["nvidia-smi", "-pm", "0"]]


def test_a_failing_command_fails_the_step_and_its_undo_runs(kernel, book):
    def fails(argv, stdin):
        if argv[2] == "0":
            raise CommandError(
                argv, 9, "NVIDIA-SMI has failed because it couldn't communicate with the driver"
            )
        return ""

    book.handlers["nvidia-smi"] = fails
    code, _, err = hook(
        kernel,
        "prepare",
        "begin",
        profile="prepare/begin:\n  - command: {argv: [nvidia-smi, -pm, 0], "
        "undo_argv: [nvidia-smi, -pm, 1]}\n",
    )
    assert code == 1
    assert "`nvidia-smi -pm 0` exited with status 9: NVIDIA-SMI has failed" in err
    assert book.calls[-1] == ["nvidia-smi", "-pm", "1"]
    assert "Rolled back, newest first: run nvidia-smi -pm 1." in err


def test_dry_run_shows_the_command_and_runs_nothing(kernel, book):
    code, out, _ = hook(
        kernel,
        "prepare",
        "begin",
        profile="prepare/begin:\n  - command: {argv: [nvidia-smi, -pm, 0], "
        "undo_argv: [nvidia-smi, -pm, 1]}\n",
        dry_run=True,
    )
    assert code == 0, out
    assert "1. run nvidia-smi -pm 0 (undone by nvidia-smi -pm 1)" in out
    assert "      nvidia-smi -pm 0" in out
    assert book.calls == []


@pytest.mark.parametrize(
    "text,message",
    [
        (
            '"systemctl stop gdm"',
            "commands are argv lists, not shell lines: write [systemctl, stop, gdm]",
        ),
        ("[bin/prep.sh]", '"bin/prep.sh" is a relative path'),
        ("[]", "got an empty list"),
        ("{argv: [true], undo: [false]}", 'command has no argument "undo"'),
    ],
)
def test_argv_is_validated(kernel, text, message):
    code, _, err = hook(
        kernel, "prepare", "begin", profile=f"prepare/begin:\n  - command: {text}\n"
    )
    assert code == 2 and message in err, err
