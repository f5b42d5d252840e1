"""JSON on the request path through orjson, with the standard library's exact results.

orjson parses and writes JSON several times faster than `json` (measured in docs/gateway.md),
but it differs at the edges: integers past 64 bits become floats, lone surrogates and NaN are
refused, and it cannot write integers past 64 bits or non-string keys. So each function here
takes orjson's answer only where it is the standard library's too, and otherwise does what the
standard library does, with its errors and messages.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

__all__ = ["UNSURE", "dumps", "loads", "quick_loads"]

_DIGITS = bytes(ord("1") if b"0"[0] <= b <= b"9"[0] else ord(" ") for b in range(256))
"""Every ASCII digit to 1, every other byte to a space: a translated body holds 19 ones in a
row where it holds 19 digits in a row (bytes.translate and `in` run in C, where a regular
expression such as \\d{19} costs 20 times more)."""
_LONG_NUMBER = b"1" * 19
"""19 digits in a row: an integer orjson might read as a float (past -2**63 or 2**64 - 1). A
string holding one only costs the slower path."""


UNSURE: Any = object()
"""quick_loads' answer when only the standard library can say what `data` holds."""


def quick_loads(data: bytes) -> Any:
    """orjson's value for `data` where it is surely json's: valid UTF-8 JSON with no NaN, no
    infinity, no lone surrogate and no integer past 64 bits; UNSURE otherwise (an error, too:
    json's message is the one to give)."""
    if _LONG_NUMBER in data.translate(_DIGITS):
        return UNSURE
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return UNSURE


def loads(data: bytes | str) -> Any:
    """`json.loads(data)`, through orjson where that gives the same value; errors are json's
    (JSONDecodeError, UnicodeDecodeError), never orjson's. What nests past the interpreter's
    recursion limit is a JSONDecodeError too, not a RecursionError: JSON from outside (an
    upstream's answer, a judge's reply, a file) may be built to reach it."""
    value = quick_loads(data) if isinstance(data, bytes) else UNSURE
    if value is not UNSURE:
        return value
    try:
        return json.loads(data)
    except RecursionError:
        raise json.JSONDecodeError("nested too deep to read", "", 0) from None


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON, as `json.dumps(value, ensure_ascii=False, separators=(",", ":"))`
    writes it (and Starlette's JSONResponse); NaN and infinities are written `null` where
    those would raise."""
    try:
        return orjson.dumps(value)
    except TypeError:  # a huge integer, a non-string key, a lone surrogate: json's way
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
