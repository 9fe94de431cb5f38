"""The contract every action follows, and the context it runs in.

An action is built from its validated arguments (`params`, an instance of the `ArgValues`
class its `args` schema names, with a typed attribute per argument). `describe()` is its plan line;
`apply(ctx)` changes the host and returns a JSON-able record of what it changed,
handing partial records to `ctx.note()` as it goes so a crash leaves them journaled;
the class method `undo(ctx, record)` reverses exactly that record. Undo works from the
record alone: the profile may have been edited since the change was made.
"""

from __future__ import annotations

from ..record import field, record
from ..schema import Args, ArgValues

TYPE_CHECKING = False  # typing's constant, without importing typing (the hook's imports)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import ClassVar

    from ..host import Host


@record
class StepContext:
    host: Host
    names: dict[str, str]  # PCI address -> device name from the profile
    note: Callable[[dict], None] = lambda record: None
    force: bool = False
    undo_event: Callable[[str], list[str]] | None = None  # for the `undo` action
    warnings: list[str] = field(default_factory=list)
    domain: str = (
        ""  # the libvirt domain and event the step runs for (the `scripts` action passes them on)
    )
    event: str = ""  # "prepare/begin"
    domain_xml: str = ""  # what libvirt wrote on the hook's stdin (hugepages, scripts read it)

    def label(self, address: str) -> str:
        name = self.names.get(address)
        return f"{name} ({address})" if name else address


class Action:
    name: ClassVar[str]
    args: ClassVar[Args]
    # Seconds a whole step may take unless the profile says `timeout:`.
    default_timeout: ClassVar[float] = 60.0
    # False for actions whose record cannot be reversed (shown as such in the plan).
    undoable: ClassVar[bool] = True
    # The validated arguments; each action narrows the type to its own `args.values` class.
    params: ArgValues

    def __init__(self, params: ArgValues, devices: dict[str, str]):
        self.params = params
        self.names = {address: name for name, address in devices.items()}

    def label(self, address: str) -> str:
        name = self.names.get(address)
        return f"{name} ({address})" if name else address

    def addresses(self) -> list[str]:
        """The PCI functions this step touches (for ownership checks and the host guard)."""
        return []

    def needs_domain_xml(self) -> bool:
        """Whether the step reads the domain XML (a dry run typed by a person has none unless
        it is given or read from libvirt, and says so)."""
        return False

    def asks_first(self) -> bool:
        """Whether a person at a terminal is asked before a real run of this step: it takes
        the host's display away (stops the desktop, takes a GPU)."""
        return False

    def describe(self) -> str:
        raise NotImplementedError

    def apply(self, ctx: StepContext) -> dict:
        raise NotImplementedError

    @classmethod
    def changed(cls, record: dict) -> bool:
        """Whether a record holds any change to undo."""
        return bool(record)

    @classmethod
    def undo(cls, ctx: StepContext, record: dict) -> None:
        raise NotImplementedError

    @classmethod
    def describe_undo(cls, record: dict) -> str:
        raise NotImplementedError

    @classmethod
    def undo_waits_for_devices(cls, record: dict) -> bool:
        """True when undoing this record would take away what devices need while a newer
        change to them is not undone (unloading vfio-pci): then it waits for the next try."""
        return False

    # --- reading its own journal records (journal, state and status ask through here) -------

    @classmethod
    def held_addresses(cls, record: dict) -> list[str]:
        """The PCI functions this record holds changed: another domain may not take them
        until it is undone."""
        return []

    @classmethod
    def held_changes(cls, record: dict) -> dict[str, list]:
        """What `status` shows of this record: {"devices": [{address, name, was}],
        "bars": [{address, name, bar, was, set}], "modules": [names loaded], "other":
        [what undoing it will do]}; keys with nothing are left out."""
        return {"other": [cls.describe_undo(record)]} if cls.changed(record) else {}


class OneDeviceAction(Action):
    """An action whose record is about one function: {"address", "changed", ...}."""

    @classmethod
    def changed(cls, record: dict) -> bool:
        return bool(record.get("changed"))

    @classmethod
    def held_addresses(cls, record: dict) -> list[str]:
        return [record["address"]] if cls.changed(record) else []


class UnknownAction(Action):
    """Stands for a journal entry of an action this version does not know (a newer one
    wrote it): it names nothing it holds; status reports the entry as a problem."""

    name = "unknown"

    @classmethod
    def held_changes(cls, record: dict) -> dict[str, list]:
        return {}


class NotUndoable(Action):
    """An action whose effect is not reversed (ended processes, scripts run, an undo):
    the runner drops its journal entry, and the plan says why in `undo_note`."""

    undoable = False
    undo_note: ClassVar[str] = "nothing"

    @classmethod
    def changed(cls, record: dict) -> bool:
        return False

    @classmethod
    def undo(cls, ctx: StepContext, record: dict) -> None:
        return None

    @classmethod
    def describe_undo(cls, record: dict) -> str:
        return cls.undo_note
