"""JSON text for the journal, without importing the `json` package on libvirt's calls.

`json` imports `re` and compiles its patterns at import, which (with `re`'s own `enum`,
`functools` and `collections`) is about a third of a second of every event on the real
kernel benchmark's guest (docs/benchmarks.md). What `json.dumps(..., sort_keys=True,
separators=(",", ":"))` and `json.loads` run is CPython's `_json` accelerator; this calls
it the way `json` does (json/encoder.py's `c_make_encoder` for an unindented dump,
json/scanner.py's `c_make_scanner` with JSONDecoder's context) and falls back to `json`
when the interpreter has no `_json` or it does not take these arguments. The text is
json's own, byte for byte (tests/test_jsontext.py checks both ways against `json`).
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing's constant, without importing typing (the hook's imports)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

_WHITESPACE = " \t\n\r"  # JSON's (RFC 8259), what json.decoder.WHITESPACE matches
_CONSTANTS = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


def _not_serializable(value: object) -> object:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


class _Context:
    """What json.decoder.JSONDecoder() gives the C scanner, with its default settings."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = staticmethod(_CONSTANTS.__getitem__)


def _accelerated() -> tuple[Callable[[Any, int], Any], Callable[[str, int], Any]] | None:
    try:
        import _json

        encode = _json.make_encoder(
            {}, _not_serializable, _json.encode_basestring_ascii, None, ":", ",", True, False, True
        )
        scan = _json.make_scanner(_Context())  # type: ignore[arg-type]  # a JSONDecoder's attributes
    except (ImportError, AttributeError, TypeError):
        return None
    return encode, scan


_FAST = _accelerated()


def dumps(value: object) -> str:
    """`json.dumps(value, sort_keys=True, separators=(",", ":"))`."""
    if _FAST is None:
        import json

        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return "".join(_FAST[0](value, 0))


def loads(text: str) -> Any:
    """`json.loads(text)` for a str; ValueError (json.JSONDecodeError) when it is not one
    JSON document."""
    if _FAST is None:
        import json

        return json.loads(text)
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        value, end = _FAST[1](text, start)
    except StopIteration as stop:
        raise _error("Expecting value", text, stop.value) from None
    rest = text[end:].lstrip(_WHITESPACE)
    if rest:
        raise _error("Extra data", text, len(text) - len(rest))
    return value


def _error(message: str, text: str, position: int) -> ValueError:
    from json import JSONDecodeError  # only for a broken document

    return JSONDecodeError(message, text, position)
