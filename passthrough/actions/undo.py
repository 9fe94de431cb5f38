from __future__ import annotations

from ..errors import HostError
from ..schema import Args, ArgValues, Event, Field
from .base import NotUndoable, StepContext


class UndoArgs(ArgValues):
    event: str


class Undo(NotUndoable):
    """Undo what an earlier event did, from its journal, in reverse order
    (`- undo: prepare/begin`). It is what release/end does when it has no steps of its
    own; write it to add steps before or after the undo."""

    name = "undo"
    args = Args(
        values=UndoArgs,
        fields=(Field("event", Event(), required=True, doc="the event whose changes to undo"),),
        shorthand="event",
    )
    params: UndoArgs
    undo_note = "nothing (an undo is not redone)"

    def describe(self) -> str:
        return f"undo what {self.params.event} changed, in reverse order"

    def apply(self, ctx: StepContext) -> dict:
        if ctx.undo_event is None:
            raise HostError("undo can only run inside an event")
        problems = ctx.undo_event(self.params.event)
        if problems:
            raise HostError("could not restore everything: " + "; ".join(problems))
        return {}
