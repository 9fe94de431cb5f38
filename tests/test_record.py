"""passthrough.record against dataclasses: each behaviour the module promises, the same."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import pytest

from passthrough import record as rec


def point_class(field):
    """One class body, its fields made with `field` (dataclasses' or record's)."""

    class Point:
        x: int
        y: int = 0
        tags: list = field(default_factory=list)
        cache: dict = field(default_factory=dict, repr=False, compare=False)
        note: str = field(default="", init=False)
        kind: ClassVar[str] = "point"

        def norm(self) -> int:
            return abs(self.x) + abs(self.y)

    return Point


def pair(frozen: bool):
    """The same class made by dataclasses and by record."""
    return (
        dataclasses.dataclass(frozen=frozen)(point_class(dataclasses.field)),
        rec.record(frozen=frozen)(point_class(rec.field)),
    )


@pytest.mark.parametrize("frozen", [False, True])
def test_init_defaults_factories_eq_and_repr_as_dataclasses(frozen):
    for cls in pair(frozen):
        a, b = cls(1, 2), cls(x=1, y=2)
        assert (a.x, a.y, a.tags, a.cache, a.note, a.kind) == (1, 2, [], {}, "", "point")
        assert a == b and a is not b and a.tags is not b.tags  # a fresh list each
        assert cls(1) == cls(1, 0) and cls(1) != cls(2)
        assert a.norm() == 3
        assert repr(a) == repr(a).split("(")[0] + "(x=1, y=2, tags=[], note='')"
        assert (a == 1) is False
        with pytest.raises(TypeError):
            cls()  # x is required
        with pytest.raises(TypeError):
            cls(1, note="x")  # init=False
        with pytest.raises(TypeError):
            cls(1, 2, [], {}, 5)  # too many
        with pytest.raises(TypeError):
            cls(1, x=1)  # twice
        with pytest.raises(TypeError):
            cls(1, z=3)


def test_compare_false_fields_do_not_count():
    for cls in pair(False):
        a, b = cls(1), cls(1)
        b.cache["k"] = 1
        assert a == b


def test_frozen_refuses_assignment_and_hashes_by_its_fields():
    plain, mine = pair(True)
    for cls, error in ((plain, dataclasses.FrozenInstanceError), (mine, rec.FrozenInstanceError)):
        point = cls(1, 2, ("a",))
        with pytest.raises(AttributeError):
            point.x = 5
        with pytest.raises(error):
            del point.y
        assert hash(cls(1, 2, ("a",))) == hash(point)
        assert {point, cls(1, 2, ("a",))} == {point}


def test_not_frozen_is_mutable_and_unhashable():
    for cls in pair(False):
        point = cls(1)
        point.x = 7
        assert point.x == 7
        with pytest.raises(TypeError):
            hash(point)


def test_replace_and_inheritance_and_post_init():
    @rec.record(frozen=True)
    class Base:
        a: int
        b: str = "b"

    @rec.record(frozen=True)
    class Child(Base):
        c: float = 1.0

        def __post_init__(self) -> None:
            if self.a < 0:
                raise ValueError("a must not be negative")

    child = Child(1, "x", 2.0)
    assert (child.a, child.b, child.c) == (1, "x", 2.0)
    assert rec.replace(child, b="y") == Child(1, "y", 2.0)
    assert rec.replace(child, b="y") is not child and child.b == "x"
    with pytest.raises(TypeError):
        rec.replace(child, d=1)
    with pytest.raises(ValueError, match="negative"):
        Child(-1)
    assert Child(1) != Base(1)  # another class is never equal


def test_a_required_field_after_a_default_is_refused_as_dataclasses_do():
    with pytest.raises(TypeError):

        @rec.record
        class Bad:
            a: int = 0
            b: int
