"""passthrough.jsontext writes and reads what `json` does, without importing it."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from passthrough import jsontext

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text()
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)


def test_the_interpreters_accelerator_is_used():
    assert jsontext._FAST is not None  # CPython 3.10+ has _json; the fallback is for others


@given(values)
def test_dumps_is_jsons_compact_sorted_dump(value):
    assert jsontext.dumps(value) == json.dumps(value, sort_keys=True, separators=(",", ":"))


@given(values, st.sampled_from(["", " ", "\n", " \t\r\n "]))
def test_loads_reads_what_json_reads(value, space):
    text = space + json.dumps(value, indent=1) + space
    loaded = jsontext.loads(text)
    assert json.dumps(loaded, sort_keys=True) == json.dumps(json.loads(text), sort_keys=True)


def test_tuples_become_lists_and_special_floats_survive():
    assert jsontext.loads(jsontext.dumps({"a": (1, 2)})) == {"a": [1, 2]}
    assert math.isnan(jsontext.loads(jsontext.dumps(float("nan"))))
    assert jsontext.loads("-Infinity") == -math.inf


@pytest.mark.parametrize(
    "text", ["", "   ", "{", '{"a": 1} x', "[1,]", "{'a': 1}", '"\x01"', "1 2", "nul"]
)
def test_broken_text_fails_as_json_fails(text):
    with pytest.raises(json.JSONDecodeError) as ours:
        jsontext.loads(text)
    with pytest.raises(json.JSONDecodeError) as theirs:
        json.loads(text)
    assert (ours.value.msg, ours.value.pos) == (theirs.value.msg, theirs.value.pos)


def test_what_json_cannot_write_is_a_type_error():
    with pytest.raises(TypeError, match="set is not JSON serializable"):
        jsontext.dumps({"a": {1}})
    with pytest.raises(TypeError):
        jsontext.dumps({1.5j: 1})


def test_the_fallback_is_json(monkeypatch):
    monkeypatch.setattr(jsontext, "_FAST", None)
    assert jsontext.dumps({"b": 1, "a": [1.5, None]}) == '{"a":[1.5,null],"b":1}'
    assert jsontext.loads(' {"a": [true]} ') == {"a": [True]}
