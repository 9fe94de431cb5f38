"""A small declarative schema for profile values, checked against composed YAML nodes.

Actions declare their arguments as data (`Args` of `Field`s); the same declarations
validate a profile with `FILE:LINE:COL:` messages and produce the JSON Schema shipped
for editors. Values are converted to plain Python (str, int, bool, list, dict) and handed
to the action as one frozen `ArgValues` instance with a typed attribute per field.
"""

from __future__ import annotations

from .record import field, record
from .units import parse_bar_size, parse_pci_address

TYPE_CHECKING = False  # typing's constant, without importing typing (the hook's imports)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, ClassVar

    import yaml
    from typing_extensions import dataclass_transform
else:

    def dataclass_transform(**kwargs: Any) -> Callable[[type], type]:
        return lambda cls: cls  # only for type checkers: they read ArgValues as a dataclass


class Invalid(Exception):
    """A problem with one node; `node` gives its position."""

    def __init__(self, node: Any, message: str):
        self.node = node
        super().__init__(message)


def kind_of(node: Any) -> str:
    """How a node looks to a person: 'a mapping', 'a list', 'the string "x"', 'the number 3'."""
    import yaml

    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    tag = node.tag.rsplit(":", 1)[-1]
    if tag == "null":
        return "nothing"
    if tag in ("int", "float"):
        return f"the number {node.value}"
    if tag == "bool":
        return f"the boolean {node.value}"
    return f'the string "{node.value}"'


def closest(word: str, choices: list[str] | tuple[str, ...]) -> str:
    """' (did you mean "x"?)' or ''."""
    import difflib  # only for a misspelt word: not on every event's import path

    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f' (did you mean "{match[0]}"?)' if match else ""


def mapping_items(node: Any, what: str) -> list[tuple[str, Any, Any]]:
    """(key, key_node, value_node) of a mapping node with string keys, duplicates rejected.

    PyYAML keeps the last of duplicate keys silently; in a root hook that hides a mistake.
    """
    import yaml

    if not isinstance(node, yaml.MappingNode):
        raise Invalid(node, f"{what} must be a mapping, got {kind_of(node)}")
    seen: dict[str, Any] = {}
    items = []
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":null"):
            raise Invalid(key_node, f"keys of {what} must be names, got {kind_of(key_node)}")
        key = key_node.value
        if key in seen:
            line = seen[key].start_mark.line + 1
            raise Invalid(key_node, f'duplicate key "{key}" in {what} (first at line {line})')
        seen[key] = key_node
        items.append((key, key_node, value_node))
    return items


def scalar(node: Any) -> Any:
    """The Python value of a scalar node, with YAML's own typing (int, bool, null, str)."""
    import yaml

    if not isinstance(node, yaml.ScalarNode):
        return None
    return _constructor().construct_object(node)


_CONSTRUCTOR: yaml.SafeLoader | None = None


def _constructor() -> yaml.SafeLoader:
    global _CONSTRUCTOR
    if _CONSTRUCTOR is None:
        import yaml

        _CONSTRUCTOR = yaml.SafeLoader("")
    return _CONSTRUCTOR


# --- value types -------------------------------------------------------------------------


@record(frozen=True)
class Context:
    """What value types may look up while checking: the profile's device names."""

    devices: dict[str, str]
    events: tuple[str, ...]


class Type:
    description = "a value"

    def check(self, node: Any, ctx: Context) -> Any:
        raise NotImplementedError

    def json_schema(self) -> dict:
        raise NotImplementedError


class Str(Type):
    def __init__(
        self,
        description: str = "a string",
        pattern: str | None = None,
        choices: tuple[str, ...] = (),
    ):
        self.description = description
        self.pattern = pattern
        self.choices = choices

    def check(self, node: Any, ctx: Context) -> str:
        import yaml

        if not isinstance(node, yaml.ScalarNode) or node.tag.rsplit(":", 1)[-1] in ("null", "bool"):
            raise Invalid(node, f"expected {self.description}, got {kind_of(node)}")
        value = str(node.value)
        if self.choices and value not in self.choices:
            options = ", ".join(self.choices)
            raise Invalid(node, f'"{value}" is not one of {options}{closest(value, self.choices)}')
        if self.pattern and not _fullmatch(self.pattern, value):
            raise Invalid(node, f'"{value}" is not {self.description}')
        return value

    def json_schema(self) -> dict:
        schema: dict = {"type": "string", "description": self.description}
        if self.choices:
            schema["enum"] = list(self.choices)
        if self.pattern:
            schema["pattern"] = f"^(?:{self.pattern})$"
        return schema


class Int(Type):
    def __init__(self, description: str, minimum: int, maximum: int):
        self.description = description
        self.minimum = minimum
        self.maximum = maximum

    def check(self, node: Any, ctx: Context) -> int:
        value = scalar(node)
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(node, f"expected {self.description}, got {kind_of(node)}")
        if not self.minimum <= value <= self.maximum:
            raise Invalid(
                node,
                f"{value} is out of range; expected {self.description} ({self.minimum}..{self.maximum})",
            )
        return value

    def json_schema(self) -> dict:
        return {
            "type": "integer",
            "minimum": self.minimum,
            "maximum": self.maximum,
            "description": self.description,
        }


class Seconds(Type):
    description = "a number of seconds"

    def check(self, node: Any, ctx: Context) -> float:
        value = scalar(node)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 3600:
            raise Invalid(
                node, f"expected a number of seconds between 0 and 3600, got {kind_of(node)}"
            )
        return float(value)

    def json_schema(self) -> dict:
        return {
            "type": "number",
            "exclusiveMinimum": 0,
            "maximum": 3600,
            "description": self.description,
        }


class Bool(Type):
    description = "true or false"

    def check(self, node: Any, ctx: Context) -> bool:
        value = scalar(node)
        if not isinstance(value, bool):
            raise Invalid(node, f"expected true or false, got {kind_of(node)}")
        return value

    def json_schema(self) -> dict:
        return {"type": "boolean"}


class Device(Type):
    """A name from the profile's `devices:` section; checks to its PCI address."""

    description = "a device name from `devices:`"

    def check(self, node: Any, ctx: Context) -> str:
        name = Str("a device name").check(node, ctx)
        if name not in ctx.devices:
            known = ", ".join(sorted(ctx.devices)) or "none are defined"
            raise Invalid(
                node,
                f'unknown device "{name}"{closest(name, tuple(ctx.devices))}; devices: {known}',
            )
        return ctx.devices[name]

    def json_schema(self) -> dict:
        return {"type": "string", "description": self.description}


class PciAddress(Type):
    description = "a PCI address DDDD:BB:DD.F"

    def check(self, node: Any, ctx: Context) -> str:
        text = Str(self.description).check(node, ctx)
        try:
            return parse_pci_address(text)
        except ValueError as exc:
            raise Invalid(node, str(exc)) from None

    def json_schema(self) -> dict:
        return {
            "type": "string",
            "pattern": r"^([0-9a-fA-F]{4}:)?[0-9a-fA-F]{2}:[01][0-9a-fA-F]\.[0-7]$",
            "description": self.description,
        }


class BarSize(Type):
    description = "a BAR size such as 8MiB, 256M, 1GiB, or the exponent n of 2^n MiB"

    def check(self, node: Any, ctx: Context) -> int:
        value = scalar(node)
        if value is None or isinstance(value, (bool, float)):
            raise Invalid(node, f"expected {self.description}, got {kind_of(node)}")
        try:
            return parse_bar_size(value)
        except ValueError as exc:
            raise Invalid(node, str(exc)) from None

    def json_schema(self) -> dict:
        return {
            "anyOf": [
                {"type": "integer", "minimum": 0, "maximum": 63},
                {"type": "string", "pattern": r"^\s*\d+\s*[MGTmgt]?(i?[Bb]?)\s*$"},
            ],
            "description": self.description,
        }


class Event(Type):
    description = "a libvirt event such as prepare/begin"

    def check(self, node: Any, ctx: Context) -> str:
        name = Str(self.description).check(node, ctx)
        if name not in ctx.events:
            raise Invalid(
                node,
                f'unknown event "{name}"{closest(name, ctx.events)}; expected one of {", ".join(ctx.events)}',
            )
        return name

    def json_schema(self) -> dict:
        return {"type": "string", "description": self.description}


class ListOf(Type):
    """A list of items; a single item is accepted where a list of one is meant."""

    def __init__(self, item: Type, description: str | None = None):
        self.item = item
        self.description = description or f"a list of {item.description}"

    def check(self, node: Any, ctx: Context) -> list:
        import yaml

        if isinstance(node, yaml.SequenceNode):
            if not node.value:
                raise Invalid(node, f"expected {self.description}, got an empty list")
            return [self.item.check(child, ctx) for child in node.value]
        return [self.item.check(node, ctx)]

    def json_schema(self) -> dict:
        item = self.item.json_schema()
        return {
            "anyOf": [item, {"type": "array", "items": item, "minItems": 1}],
            "description": self.description,
        }


class CpuList(Type):
    """A CPU list in the kernel's syntax (`0-3,8-11`, or one number); checks to sorted CPU numbers."""

    description = "a CPU list such as 0-3,8-11"

    def check(self, node: Any, ctx: Context) -> list[int]:
        import yaml

        from .cpulist import parse_cpu_list

        if not isinstance(node, yaml.ScalarNode) or node.tag.rsplit(":", 1)[-1] in (
            "null",
            "bool",
            "float",
        ):
            raise Invalid(node, f"expected {self.description}, got {kind_of(node)}")
        try:
            cpus = parse_cpu_list(
                str(node.value)
            )  # the text as written: YAML would read 1:30 as a number
        except ValueError as exc:
            raise Invalid(node, str(exc)) from None
        if not cpus:
            raise Invalid(node, f"expected {self.description}, got an empty list")
        return cpus

    def json_schema(self) -> dict:
        return {
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": r"^\s*\d+(-\d+)?(\s*,\s*\d+(-\d+)?)*\s*$"},
            ],
            "description": self.description,
        }


class Text(Str):
    """A scalar taken as written, numbers included (`value: 10` writes "10")."""

    def json_schema(self) -> dict:
        return {"type": ["string", "number"], "description": self.description}


class AbsolutePath(Type):
    """An absolute, normalised path (no `..`), optionally confined below some prefixes."""

    def __init__(self, description: str = "an absolute path", under: tuple[str, ...] = ()):
        self.description = description
        self.under = under

    def check(self, node: Any, ctx: Context) -> str:
        import posixpath

        path = Str(self.description).check(node, ctx)
        if not path.startswith("/") or "\0" in path:
            raise Invalid(node, f'"{path}" is not {self.description}; write it from / on')
        if ".." in path.split("/") or posixpath.normpath(path) != path.rstrip("/"):
            raise Invalid(node, f'"{path}" is not a plain path; write it without "..", "." or "//"')
        if self.under and not any(path.startswith(prefix) for prefix in self.under):
            raise Invalid(
                node, f'"{path}" is outside {" and ".join(self.under)}; expected {self.description}'
            )
        return path.rstrip("/")

    def json_schema(self) -> dict:
        pattern = "^(?:" + "|".join(self.under) + ")" if self.under else "^/"
        return {"type": "string", "pattern": pattern, "description": self.description}


class Argv(Type):
    """A command as an argv list: `[systemctl, stop, foo]`. The program is an absolute path or
    a bare name looked up in the fixed system PATH; commands never go through a shell."""

    description = "a command as a list: [program, argument, ...]"

    def check(self, node: Any, ctx: Context) -> list[str]:
        import yaml

        items = node.value if isinstance(node, yaml.SequenceNode) else [node]
        if not items:
            raise Invalid(node, f"expected {self.description}, got an empty list")
        argv = []
        for item in items:
            if not isinstance(item, yaml.ScalarNode) or item.tag.endswith(":null"):
                raise Invalid(
                    item,
                    f"expected {self.description}; each item is one argument, got {kind_of(item)}",
                )
            argv.append(str(item.value))
        program = argv[0]
        if any(ch.isspace() for ch in program):
            raise Invalid(
                items[0],
                f'"{program}" is not a program name; commands are argv lists, not shell '
                f"lines: write [{', '.join(program.split())}]",
            )
        if "/" in program and not program.startswith("/"):
            raise Invalid(
                items[0],
                f'"{program}" is a relative path; give an absolute path or a bare program name',
            )
        return argv

    def json_schema(self) -> dict:
        return {
            "anyOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "string"}, "minItems": 1},
            ],
            "description": self.description,
        }


# --- action arguments ----------------------------------------------------------------------


@dataclass_transform(kw_only_default=True, frozen_default=True)
class ArgValues:
    """An action's validated arguments: one typed, read-only attribute per field, e.g.

        class ResizeBarArgs(ArgValues):
            device: str
            bar: int
            size: int

    The schema builds one instance per step (`Args.check`), every field given (optional
    ones get their default). Not a @record: the hook imports every class on an event and
    a dataclass costs a generated-code exec() each; this one base does the same for all.
    """

    __slots__ = ()
    _names: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = tuple(name for name in cls.__annotations__ if not name.startswith("_"))
        cls._names = cls._names + tuple(n for n in own if n not in cls._names)

    def __init__(self, **values: Any) -> None:
        if values.keys() != set(self._names):
            missing = [n for n in self._names if n not in values]
            extra = [n for n in values if n not in self._names]
            raise TypeError(f"{type(self).__name__}: missing {missing}, unexpected {extra}")
        for name in self._names:
            object.__setattr__(self, name, values[name])

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only: cannot set {name}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only: cannot delete {name}")

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._names}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ArgValues) or type(other) is not type(self):
            return NotImplemented
        return self.as_dict() == other.as_dict()

    __hash__ = None  # type: ignore[assignment]  # values hold lists

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._names)
        return f"{type(self).__name__}({shown})"


@record(frozen=True)
class Field:
    name: str
    type: Type
    required: bool = False
    default: Any = None
    doc: str = ""


def _comma_hint(mapping: Any, value: Any) -> str:
    """`{host: 0-3,8-11}` reads as {host: 0-3, "8-11": null}: in {...} a comma ends a value."""
    if getattr(mapping, "flow_style", False) and getattr(value, "tag", "").endswith(":null"):
        return ' (inside {...} a comma starts the next argument: quote values that contain commas, "0-3,8-11")'
    return ""


@record(frozen=True)
class Args:
    """An action's arguments: a mapping of fields, optionally written in a short form.

    `shorthand` names the field that a bare value stands for, so `detach: [gpu, gpu-audio]`
    means `detach: {devices: [gpu, gpu-audio]}`. `values` is the `ArgValues` class the
    checked values are built into; its annotations must name exactly the fields (checked
    here, when the action's module is imported). `check_all` checks the values together
    and may normalise them (keeping every field).
    """

    fields: tuple[Field, ...]
    values: type[ArgValues]
    shorthand: str | None = None
    check_all: Callable[[dict, Any], None] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        names = [f.name for f in self.fields]
        if sorted(names) != sorted(self.values._names):
            raise TypeError(
                f"{self.values.__name__} declares {', '.join(self.values._names) or 'nothing'}; "
                f"its fields are {', '.join(names)}"
            )

    def check(self, node: Any, ctx: Context, action: str) -> ArgValues:
        import yaml

        by_name = {f.name: f for f in self.fields}
        values: dict[str, Any] = {}
        if isinstance(node, yaml.MappingNode):
            for key, key_node, value_node in mapping_items(node, f"the arguments of {action}"):
                if key not in by_name:
                    raise Invalid(
                        key_node,
                        f'{action} has no argument "{key}"{closest(key, tuple(by_name))}; '
                        f"expected {', '.join(by_name)}{_comma_hint(node, value_node)}",
                    )
                values[key] = by_name[key].type.check(value_node, ctx)
        elif self.shorthand is not None:
            values[self.shorthand] = by_name[self.shorthand].type.check(node, ctx)
        else:
            raise Invalid(
                node, f"{action} takes a mapping with {', '.join(by_name)}, got {kind_of(node)}"
            )
        for f in self.fields:
            if f.name not in values:
                if f.required:
                    raise Invalid(node, f'{action} needs "{f.name}" ({f.type.description})')
                values[f.name] = f.default
        if self.check_all:
            self.check_all(values, node)
        return self.values(**values)

    def json_schema(self) -> dict:
        props = {}
        for f in self.fields:
            prop = dict(f.type.json_schema())
            if f.doc:
                prop["description"] = f.doc
            if f.default is not None:
                prop["default"] = f.default
            props[f.name] = prop
        mapping = {
            "type": "object",
            "properties": props,
            "additionalProperties": False,
            "required": [f.name for f in self.fields if f.required],
        }
        if self.shorthand is None:
            return mapping
        return {"anyOf": [props[self.shorthand], mapping]}


class OperationArgs(ArgValues):
    operation: str


# `vtconsoles: unbind`, `framebuffer: unbind`: actions with one operation, undone by binding.
UNBIND_ONLY = Args(
    values=OperationArgs,
    fields=(
        Field(
            "operation",
            Str("unbind", choices=("unbind",)),
            required=True,
            doc="unbind (the only operation; undo binds them again)",
        ),
    ),
    shorthand="operation",
)


def _fullmatch(pattern: str, value: str) -> bool:
    import re  # only while a profile is parsed: libvirt's calls read the validated copy

    return re.fullmatch(pattern, value) is not None
