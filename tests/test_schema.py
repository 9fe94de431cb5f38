"""passthrough.schema's action arguments: the frozen ArgValues classes and their Args."""

import pytest

from passthrough.actions.resize_bar import ResizeBar, ResizeBarArgs
from passthrough.schema import Args, ArgValues, Context, Field, Int, Str


class PairArgs(ArgValues):
    name: str
    count: int | None


PAIR = Args(
    values=PairArgs,
    fields=(
        Field("name", Str("a name"), required=True),
        Field("count", Int("a count", 0, 9)),
    ),
    shorthand="name",
)


def _node(text: str):
    import yaml

    return yaml.compose(text)


def test_the_schema_builds_one_frozen_instance_with_every_field():
    ctx = Context(devices={}, events=())
    values = PAIR.check(_node("{name: a, count: 3}"), ctx, "pair")
    assert values == PairArgs(name="a", count=3)
    assert (values.name, values.count) == ("a", 3)
    assert PAIR.check(_node("b"), ctx, "pair") == PairArgs(name="b", count=None)  # the default
    with pytest.raises(AttributeError, match="read-only"):
        values.count = 4
    with pytest.raises(AttributeError, match="read-only"):
        del values.name
    assert values.count == 3
    assert repr(values) == "PairArgs(name='a', count=3)"


def test_instances_compare_by_class_and_values():
    assert PairArgs(name="a", count=1) != PairArgs(name="a", count=2)
    other = type("OtherArgs", (ArgValues,), {"__annotations__": {"name": "str", "count": "int"}})
    assert PairArgs(name="a", count=1) != other(name="a", count=1)
    with pytest.raises(TypeError, match="unhashable"):
        hash(PairArgs(name="a", count=1))


def test_every_field_must_be_given_and_no_other():
    with pytest.raises(TypeError, match=r"missing \['count'\]"):
        PairArgs(name="a")
    with pytest.raises(TypeError, match=r"unexpected \['colour'\]"):
        PairArgs(name="a", count=1, colour="red")
    with pytest.raises(TypeError):
        PairArgs("a", 1)


def test_a_values_class_that_does_not_match_its_fields_is_refused_at_definition():
    class LooseArgs(ArgValues):
        name: str
        colour: str

    with pytest.raises(TypeError, match="LooseArgs declares name, colour; its fields are name"):
        Args(values=LooseArgs, fields=(Field("name", Str("a name")),))
    with pytest.raises(TypeError, match="its fields are name, count, colour"):
        Args(
            values=PairArgs,
            fields=(
                Field("name", Str("a name")),
                Field("count", Int("a count", 0, 9)),
                Field("colour", Str("a colour")),
            ),
        )


def test_a_subclass_adds_to_its_base_fields():
    class MoreArgs(PairArgs):
        colour: str

    assert MoreArgs(name="a", count=1, colour="red").colour == "red"
    assert repr(MoreArgs(name="a", count=1, colour="red")) == (
        "MoreArgs(name='a', count=1, colour='red')"
    )


def test_an_action_reads_its_typed_arguments():
    action = ResizeBar(ResizeBarArgs(device="0000:03:00.0", bar=2, size=3), {"gpu": "0000:03:00.0"})
    assert action.addresses() == ["0000:03:00.0"]
    assert action.describe() == "resize BAR 2 of gpu (0000:03:00.0) to 8 MiB"


def test_every_action_reads_the_arguments_class_its_schema_builds():
    import typing

    from passthrough.actions import REGISTRY

    # The program's modules import typing's names only for type checkers (not on the hook's
    # path), so they are given here to evaluate the annotations.
    names = {"ClassVar": typing.ClassVar, "Any": typing.Any}
    for name, action in REGISTRY.items():
        hints = typing.get_type_hints(action, localns=names)
        assert hints["params"] is action.args.values, name
        assert sorted(action.args.values._names) == sorted(f.name for f in action.args.fields)
