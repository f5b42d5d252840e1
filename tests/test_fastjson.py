"""orjson on the request path gives exactly what the standard library gives, or defers to it."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from canaryctl import fastjson
from canaryctl.request_limits import BadJSON, parse_json

EDGES = [
    b"12345678901234567890123",  # past 64 bits: orjson alone would give a float
    b"18446744073709551616",
    b"-9223372036854775809",  # 19 digits, below -2**63
    b"9223372036854775808",
    b'{"n": [1e400]}',  # json reads infinity
    b"NaN",
    b'"\\ud800"',  # a lone surrogate: json accepts it
    b'{"a": 1, "a": 2}',
    b'{"n": 1.0000000000000001, "e": 1E2, "z": -0}',
    b'{"id": "12345678901234567890"}',  # 20 digits in a string: the slow path, same value
    b"\xef\xbb\xbf{}",  # json.loads skips a UTF-8 BOM in bytes; orjson refuses it
]


def _same(a: Any, b: Any) -> bool:
    """Equal, NaN included, and of the same types (an int is not a float here)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(_same, a, b))
    return bool(a == b)


@pytest.mark.parametrize("raw", EDGES)
def test_edge_values_read_as_the_standard_library_reads_them(raw: bytes) -> None:
    assert _same(fastjson.loads(raw), json.loads(raw))


@pytest.mark.parametrize("raw", [b"[1,", b"{} x", b'"\x01"', b"\xff"])
def test_bad_json_fails_with_the_standard_library_s_error(raw: bytes) -> None:
    with pytest.raises(ValueError) as ours:
        fastjson.loads(raw)
    with pytest.raises(ValueError) as theirs:
        json.loads(raw)
    assert type(ours.value) is type(theirs.value) and str(ours.value) == str(theirs.value)


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@given(JSON)
def test_any_json_value_round_trips_as_the_standard_library_s(value: Any) -> None:
    raw = json.dumps(value).encode()
    assert _same(fastjson.loads(raw), json.loads(raw))
    assert _same(json.loads(fastjson.dumps(value)), json.loads(raw))


def test_request_bodies_keep_their_limits_and_messages() -> None:
    with pytest.raises(BadJSON, match="nests deeper than 8 levels"):
        parse_json(b"[" * 9 + b"]" * 9, 8)
    assert parse_json(b'{"a": "[[[[[[[[[["}', 8) == {"a": "[[[[[[[[[["}  # brackets in a string
    with pytest.raises(BadJSON, match="not JSON: Expecting value at line 1 column 4"):
        parse_json(b"[1,", 8)
    with pytest.raises(BadJSON, match="not UTF-8"):
        parse_json(b'"\xff"', 8)
    with pytest.raises(BadJSON):
        parse_json(b"[NaN]", 8)
    with pytest.raises(BadJSON, match="BOM"):  # in a request body, as before
        parse_json(b"\xef\xbb\xbf{}", 8)
    assert parse_json(b"[12345678901234567890123]", 8) == [12345678901234567890123]


@pytest.mark.parametrize("data", [b"[" * 5000 + b"]" * 5000, '{"a":' * 5000 + "1" + "}" * 5000])
def test_json_nested_past_the_recursion_limit_is_a_decode_error(data: bytes | str) -> None:
    # orjson stops at 1024 levels and json's scanner at the interpreter's recursion limit: an
    # upstream or a file built to reach it must read as bad JSON, which every caller handles.
    with pytest.raises(json.JSONDecodeError, match="nested too deep"):
        fastjson.loads(data)
