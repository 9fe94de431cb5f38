from __future__ import annotations

from ..errors import HostError
from ..patterns import Lazy
from ..schema import AbsolutePath, Args, ArgValues, Bool, Field, Invalid, Text
from .base import Action, StepContext

TYPE_CHECKING = False  # typing's constant, without importing typing (the hook's imports)
if TYPE_CHECKING:
    import yaml

    from ..host import Host

KERNEL_PATH = AbsolutePath("a path under /sys or /proc/sys", under=("/sys/", "/proc/sys/"))
VALUE = Text("a value to write")
# Files offering choices show the current one in brackets: "always [madvise] never".
_CHOICE = Lazy(r"\[([^\]\s]+)\]")


def _undo_needs_restore(values: dict, node: yaml.Node) -> None:
    if values["undo_value"] is not None and not values["restore"]:
        raise Invalid(node, "sysfs takes undo_value or restore: false, not both")


def read_value(host: Host, path: str) -> str | None:
    if path.startswith("/sys/"):
        return host.sysfs.read(path[len("/sys/") :])
    text = host.procfs.read(path[len("/proc/") :])
    return None if text is None else text.strip()


def write_value(host: Host, path: str, value: str, effect: str) -> None:
    if path.startswith("/sys/"):
        host.sysfs.write(path[len("/sys/") :], value, effect=effect)
    else:
        host.procfs.write(path[len("/proc/") :], value, effect=effect)


def current_setting(text: str) -> str:
    """What to write back to restore a file: its text, or the bracketed choice of a choice file."""
    match = _CHOICE.search(text)
    return match.group(1) if match else text


class SysfsWriteArgs(ArgValues):
    path: str
    value: str
    undo_value: str | None
    restore: bool


class SysfsWrite(Action):
    """Write a value to a kernel file (`sysfs: {path: /sys/..., value: ...}`), the escape
    hatch for settings no action covers. Only paths under /sys and /proc/sys. Undo writes
    back the value read before (for choice files such as `always [madvise] never`, the
    bracketed one), or `undo_value` when given; `restore: false` leaves it changed (shown
    as not undone in the plan)."""

    name = "sysfs"
    args = Args(
        values=SysfsWriteArgs,
        fields=(
            Field("path", KERNEL_PATH, required=True, doc="the file, under /sys or /proc/sys"),
            Field("value", VALUE, required=True, doc="what to write"),
            Field("undo_value", VALUE, doc="what undo writes (default: the value read before)"),
            Field("restore", Bool(), default=True, doc="false: leave the new value after the VM"),
        ),
        check_all=_undo_needs_restore,
    )
    params: SysfsWriteArgs
    default_timeout = 20.0

    def describe(self) -> str:
        text = f"write {self.params.value} to {self.params.path}"
        return text if self.params.restore else text + " (not undone)"

    def apply(self, ctx: StepContext) -> dict:
        path, value = self.params.path, self.params.value
        before = read_value(ctx.host, path)
        restore_to = self.params.undo_value
        if self.params.restore and restore_to is None:
            if before is None:
                raise HostError(
                    f"cannot read {path} to restore it after the VM",
                    hint="give undo_value, or restore: false to leave it changed",
                )
            restore_to = current_setting(before)
        record = {
            "path": path,
            "value": value,
            "restore_to": restore_to if self.params.restore else None,
        }
        if before is not None and current_setting(before) == value:
            ctx.host.record(f"{path} is {value} already", "nothing to do")
            record["restore_to"] = None
            return record
        ctx.note(record)
        write_value(
            ctx.host,
            path,
            value,
            effect=f"{current_setting(before) if before is not None else '?'} → {value}",
        )
        return record

    @classmethod
    def changed(cls, record: dict) -> bool:
        return record.get("restore_to") is not None

    @classmethod
    def undo(cls, ctx: StepContext, record: dict) -> None:
        now = read_value(ctx.host, record["path"])
        write_value(
            ctx.host,
            record["path"],
            record["restore_to"],
            effect=f"{current_setting(now) if now is not None else '?'} → {record['restore_to']}",
        )

    @classmethod
    def describe_undo(cls, record: dict) -> str:
        if record.get("restore_to") is None:
            return f"nothing ({record.get('path')} is left as it is)"
        return f"write {record['restore_to']} back to {record['path']}"
