"""`@record`: the part of `@dataclass` the hook's own classes use, without its cost.

libvirt runs the hook on every event, and each `@dataclass` costs a compile of generated
code at import (and `dataclasses` itself imports inspect, ast, dis and tokenize): about
0.5 ms a class on a desktop, 30 ms under QEMU's TCG, some 25 classes on the hook's path.
A record class gets generic methods instead, shared by all records:

- `__init__` taking the fields in order, positionally or by name; a field's default, or
  `field(default_factory=...)` called per instance; `field(init=False)` fields get their
  default and are not parameters; `__post_init__` runs after, when defined;
- `__eq__` (same class, equal compared fields), `__repr__`;
- `frozen=True`: assignments raise `FrozenInstanceError`, and instances hash by their
  compared fields; otherwise they are unhashable, as dataclasses with `eq` are;
- `replace(obj, **changes)`.

A field is an annotated class attribute; `ClassVar[...]` annotations are not fields.
mypy reads records as dataclasses (`dataclass_transform`); tests/test_record.py holds
each behaviour above against `dataclasses` itself.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing's constant, without importing typing (the hook's imports)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar, overload

    from typing_extensions import dataclass_transform

    T = TypeVar("T")
else:

    def dataclass_transform(**kwargs: Any) -> Callable[[Any], Any]:
        return lambda decorated: decorated

    def overload(function: Callable) -> Callable:
        """typing.overload at run time: the last definition is the one kept. (ruff does not
        know it for typing's, hence the noqa on record's definitions.)"""
        return function


_MISSING: Any = object()


class FrozenInstanceError(AttributeError):
    """An assignment to a field of a frozen record."""


class Field:
    __slots__ = ("name", "default", "factory", "init", "repr", "compare")

    def __init__(
        self,
        default: Any = _MISSING,
        factory: Callable[[], Any] | None = None,
        init: bool = True,
        repr: bool = True,
        compare: bool = True,
    ):
        self.name = ""
        self.default, self.factory = default, factory
        self.init, self.repr, self.compare = init, repr, compare

    def value(self) -> Any:
        return self.factory() if self.factory is not None else self.default

    @property
    def required(self) -> bool:
        return self.default is _MISSING and self.factory is None


def field(
    *,
    default: Any = _MISSING,
    default_factory: Callable[[], Any] | None = None,
    init: bool = True,
    repr: bool = True,
    compare: bool = True,
) -> Any:
    """A field's default made per instance (`default_factory`), or a field left out of
    `__init__`, `__repr__` or `__eq__`."""
    return Field(default, default_factory, init, repr, compare)


def _is_classvar(annotation: Any) -> bool:
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    return text.startswith(("ClassVar", "typing.ClassVar"))


def _init(self: Any, *args: Any, **kwargs: Any) -> None:
    params = type(self).__record_params__
    if len(args) > len(params):
        raise TypeError(
            f"{type(self).__name__}() takes {len(params)} positional arguments "
            f"but {len(args)} were given"
        )
    values = dict(zip((f.name for f in params), args, strict=False))  # fewer args: defaults
    for name, value in kwargs.items():
        if name in values:
            raise TypeError(f"{type(self).__name__}() got multiple values for {name!r}")
        values[name] = value
    setter = object.__setattr__
    for spec in type(self).__record_fields__:
        if spec.init and spec.name in values:
            setter(self, spec.name, values.pop(spec.name))
        elif spec.init and spec.required:
            raise TypeError(f"{type(self).__name__}() missing argument {spec.name!r}")
        else:
            setter(self, spec.name, spec.value())
    if values:
        raise TypeError(f"{type(self).__name__}() got unexpected arguments {sorted(values)}")
    post_init = getattr(self, "__post_init__", None)
    if post_init is not None:
        post_init()


def _compared(self: Any) -> tuple:
    return tuple(getattr(self, f.name) for f in type(self).__record_fields__ if f.compare)


def _eq(self: Any, other: Any) -> Any:
    if other.__class__ is not self.__class__:
        return NotImplemented
    return _compared(self) == _compared(other)


def _repr(self: Any) -> str:
    shown = ", ".join(
        f"{f.name}={getattr(self, f.name)!r}" for f in type(self).__record_fields__ if f.repr
    )
    return f"{type(self).__qualname__}({shown})"


def _frozen_setattr(self: Any, name: str, value: Any) -> None:
    raise FrozenInstanceError(f"cannot assign to field {name!r}")


def _frozen_delattr(self: Any, name: str) -> None:
    raise FrozenInstanceError(f"cannot delete field {name!r}")


def _hash(self: Any) -> int:
    return hash(_compared(self))


def _make(cls: type[T], frozen: bool) -> type[T]:
    fields: dict[str, Field] = {}
    for base in reversed(cls.__mro__[1:]):
        for spec in getattr(base, "__record_fields__", ()):
            fields[spec.name] = spec
    for name, annotation in cls.__dict__.get("__annotations__", {}).items():
        if _is_classvar(annotation):
            continue
        given = cls.__dict__.get(name, _MISSING)
        spec = given if isinstance(given, Field) else Field(default=given)
        spec.name = name
        if isinstance(given, Field):
            if spec.default is _MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, spec.default)
        fields[name] = spec
    specs = tuple(fields.values())
    params = tuple(f for f in specs if f.init)
    seen_default = None
    for spec in params:
        if not spec.required:
            seen_default = spec.name
        elif seen_default is not None:
            raise TypeError(
                f"{cls.__name__}: field {spec.name!r} without a default follows {seen_default!r}"
            )
    attributes: dict[str, Any] = {
        "__record_fields__": specs,
        "__record_params__": params,
        "__init__": _init,
        "__repr__": _repr,
        "__eq__": _eq,
        "__hash__": _hash if frozen else None,
    }
    if frozen:
        attributes["__setattr__"] = _frozen_setattr
        attributes["__delattr__"] = _frozen_delattr
    for name, value in attributes.items():
        setattr(cls, name, value)
    return cls


@overload
def record(cls: type[T], /) -> type[T]: ...
@overload
def record(*, frozen: bool = False) -> Callable[[type[T]], type[T]]: ...  # noqa: F811


@dataclass_transform(field_specifiers=(field,))
def record(cls: Any = None, /, *, frozen: bool = False) -> Any:  # noqa: F811 (see overload)
    """Make cls a record (see the module's docstring); `@record` or `@record(frozen=True)`."""
    if cls is None:
        return lambda decorated: _make(decorated, frozen)
    return _make(cls, frozen)


def replace(obj: T, **changes: Any) -> T:
    """A copy of the record obj with some fields changed (`dataclasses.replace`)."""
    specs = type(obj).__record_fields__  # type: ignore[attr-defined]
    values = {f.name: getattr(obj, f.name) for f in specs if f.init}
    unknown = set(changes) - set(values)
    if unknown:
        raise TypeError(f"{type(obj).__name__} has no init fields {sorted(unknown)}")
    values.update(changes)
    return type(obj)(**values)
