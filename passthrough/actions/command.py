from __future__ import annotations

import shlex

from ..schema import Args, Argv, ArgValues, Field
from .base import Action, StepContext


class CommandArgs(ArgValues):
    argv: list[str]
    undo_argv: list[str] | None


class Command(Action):
    """Run a command (`command: [systemctl, stop, nvidia-persistenced]`), the escape hatch for
    what no action covers. It is an argv list, never a shell line; the program is an absolute
    path or is looked up in a fixed system PATH, not the caller's. A non-zero exit fails the
    step. Undo runs `undo_argv` when given (`{argv: [...], undo_argv: [...]}`); without it
    the step is not undone, as the plan says."""

    name = "command"
    args = Args(
        values=CommandArgs,
        fields=(
            Field("argv", Argv(), required=True, doc="the command, as a list"),
            Field("undo_argv", Argv(), doc="the command that undoes it (default: not undone)"),
        ),
        shorthand="argv",
    )
    params: CommandArgs
    default_timeout = 60.0

    def describe(self) -> str:
        text = f"run {shlex.join(self.params.argv)}"
        if self.params.undo_argv:
            return f"{text} (undone by {shlex.join(self.params.undo_argv)})"
        return text + " (not undone)"

    def apply(self, ctx: StepContext) -> dict:
        record = {"argv": self.params.argv, "undo_argv": self.params.undo_argv}
        if record["undo_argv"]:
            ctx.note(record)  # before it runs: a command that fails half way is undone too
        ctx.host.commands.run(self.params.argv)
        return record

    @classmethod
    def changed(cls, record: dict) -> bool:
        return bool(record.get("undo_argv"))

    @classmethod
    def undo(cls, ctx: StepContext, record: dict) -> None:
        ctx.host.commands.run(record["undo_argv"])

    @classmethod
    def describe_undo(cls, record: dict) -> str:
        if not record.get("undo_argv"):
            return "nothing (the command has no undo_argv)"
        return f"run {shlex.join(record['undo_argv'])}"
