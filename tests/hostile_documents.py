"""Hostile documents of every kind, as Hypothesis strategies: shared by the fuzz tests (a short
run in CI) and benchmarks/hostile_documents.py (a long one, with its counts published).

Random YAML structures; the shipped examples with a value swapped, a key dropped, added or
repeated, their bytes damaged or re-encoded; deep nesting; huge strings; NaN and infinities;
and what an attacker tries first: alias bombs, explicit tags, numbers past every range and
`~user` paths, each spliced into a shipped document of each kind where a value was.
"""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

__all__ = [
    "KEYS",
    "KINDS",
    "REFERENCES",
    "SCALARS",
    "SHIPPED",
    "TREES",
    "damaged",
    "deep",
    "dotted",
    "dump",
    "hostile",
    "huge",
    "leaf_paths",
    "mutated",
    "replaced",
    "shipped_documents",
    "spliced",
]  # fmt: skip

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted(
    [
        *ROOT.glob("runbooks/**/*.yaml"),
        *ROOT.glob("scenarios/*.yaml"),
        *ROOT.glob("canaryctl/defaults/*.yaml"),
        *ROOT.glob("canaryctl/metrics/profiles/*.yaml"),
    ]
)
KINDS = (
    "Rollout", "Gateway", "Lab", "MetricProfile", "ChaosScenario", "Guard", "Experiment",
    "CostOptimization",
)  # fmt: skip

NUMBERS = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, -1, 0, 1e308, 10**20, -0.0]),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    NUMBERS,
    st.text(max_size=30),
    st.sampled_from(
        ["30s", "99999999999h", "1h30m", "-5s", ".nan", "approval", "canaryctl/v1", *KINDS]
    ),
)
KEYS = st.one_of(
    st.sampled_from(
        ["apiVersion", "kind", "metadata", "name", "spec", "max", "min", "metric", "steps",
         "set_weight", "pause", "rate", "price", "timeout", "provider", "flag", "metrics",
         "slos", "analysis", "interval", "alpha", "timezone", "profile", "faults", "ttl"]
    ),
    st.text(max_size=12),
)  # fmt: skip
TREES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(KEYS, children, max_size=6)
    ),
    max_leaves=40,
)


@cache
def shipped_documents() -> list[tuple[str, Any]]:
    return [(p.name, yaml.safe_load(p.read_text())) for p in SHIPPED]


def leaf_paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in leaf_paths(v, (*path, k))] or [path]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in leaf_paths(v, (*path, i))] or [path]
    return [path]


def replaced(document: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    head, *rest = path
    if isinstance(document, dict):
        return {**document, head: replaced(document[head], tuple(rest), value)}
    copy = list(document)
    copy[head] = replaced(copy[head], tuple(rest), value)
    return copy


def dotted(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def dump(document: Any) -> bytes:
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True).encode()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A shipped document with one value, key or subtree changed."""
    _, document = draw(st.sampled_from(shipped_documents()))
    path = draw(st.sampled_from(leaf_paths(document)))
    action = draw(st.sampled_from(["value", "tree", "drop", "extra"]))
    if action == "value":
        document = replaced(document, path, draw(SCALARS))
    elif action == "tree":
        document = replaced(document, path, draw(TREES))
    elif action in ("drop", "extra") and len(path) > 1:
        parent: Any = document
        for part in path[:-1]:
            parent = parent[part]
        if isinstance(parent, dict) and action == "drop":
            parent = {k: v for k, v in parent.items() if k != path[-1]}
        elif isinstance(parent, dict):
            parent = {**parent, draw(KEYS): draw(SCALARS)}
        elif action == "drop":
            parent = [v for i, v in enumerate(parent) if i != path[-1]]
        document = replaced(document, path[:-1], parent)
    return dump(document)


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    """A shipped document's bytes cut, spliced, re-encoded or salted with bad bytes."""
    text = draw(st.sampled_from(SHIPPED)).read_text()
    how = draw(st.sampled_from(["cut", "splice", "encode", "bytes"]))
    data = text.encode()
    if how == "cut":
        start = draw(st.integers(0, len(data)))
        return data[:start] + data[start + draw(st.integers(0, 40)) :]
    if how == "splice":
        at = draw(st.integers(0, len(data)))
        return data[:at] + draw(st.binary(max_size=20)) + data[at:]
    if how == "encode":
        codec = draw(st.sampled_from(["utf-16", "utf-16-le", "utf-32", "latin-1", "utf-8-sig"]))
        return (text + "# café ☃\n").encode(codec, errors="replace")
    at = draw(st.integers(0, len(data)))
    return (
        data[:at] + draw(st.sampled_from([b"\xff", b"\x00", b"\xc3", b"\xed\xa0\x80"])) + data[at:]
    )


@st.composite
def deep(draw: st.DrawFn) -> bytes:
    depth = draw(st.integers(65, 3000))  # MAX_DEPTH is 64
    style = draw(st.sampled_from(["flow-list", "flow-map", "block", "mixed"]))
    if style == "flow-list":
        return ("kind: Rollout\nspec: " + "[" * depth + "1" + "]" * depth).encode()
    if style == "flow-map":
        return ("kind: Lab\nspec: " + "{a: " * depth + "1" + "}" * depth).encode()
    if style == "block":
        return "".join(" " * i + "spec:\n" for i in range(min(depth, 400))).encode()
    return ("kind: Gateway\nmetadata: " + "[{" * (depth // 2)).encode()


@st.composite
def huge(draw: st.DrawFn) -> bytes:
    """A shipped document with one value replaced by a very long string or a long list."""
    _, document = draw(st.sampled_from(shipped_documents()))
    path = draw(st.sampled_from(leaf_paths(document)))
    size = draw(st.integers(10_000, 300_000))
    value = draw(
        st.sampled_from(["x" * size, "9" * size, ["a"] * (size // 100), "5m" * (size // 2)])
    )
    return dump(replaced(document, path, value))


PLACE = "HOSTILE-VALUE-GOES-HERE"
"""A leaf's value while the document is dumped; its YAML text then replaces it."""


@st.composite
def spliced(draw: st.DrawFn, values: st.SearchStrategy[str], prelude: str = "") -> bytes:
    """A shipped document (any kind) with one leaf's value replaced by YAML `values` text,
    after `prelude` lines (anchors) at the top."""
    _, document = draw(st.sampled_from(shipped_documents()))
    path = draw(st.sampled_from([p for p in leaf_paths(document) if p]))
    text = dump(replaced(document, path, PLACE)).decode()
    return (prelude + text.replace(PLACE, draw(values), 1)).encode()


@st.composite
def bombs(draw: st.DrawFn) -> bytes:
    """Anchors each naming a list (or mapping) of `width` aliases of the one before, the last
    used where a value was: `width ** levels` values once expanded."""
    levels, width = draw(st.integers(2, 12)), draw(st.integers(2, 12))
    mapping = draw(st.booleans())
    lines = ["x-anchors:"]
    for i in range(levels):
        items = ["a"] * width if i == 0 else [f"*x{i - 1}"] * width
        body = (
            "{" + ", ".join(f"k{j}: {v}" for j, v in enumerate(items)) + "}"
            if mapping
            else "[" + ", ".join(items) + "]"
        )
        lines.append(f"  x{i}: &x{i} {body}")
    use = st.sampled_from([f"*x{levels - 1}", f"[*x{levels - 1}, *x{levels - 1}]", "&r [*r]"])
    return draw(spliced(use, "\n".join(lines) + "\n"))


TAGS = st.one_of(
    st.sampled_from(
        ["!!bool x", '!!int ""', '!!int "+"', '!!float ""', '!!timestamp ""', "!!binary aGk=",
         "!!set {a, b}", "!!omap [a: 1]", "!!pairs [a: 1]", "!!python/object:os.system x",
         "!!python/name:os.system", "!local x", "!!str 5", "!!int 5", "!!null ~", "!!merge x",
         "!!value =", "!!float 1e5", "!!int 0x_", "!!timestamp 2001-02-30", "! x", "!!map {}",
         "!!seq []", "!!map []", "!<tag:yaml.org,2002:int> 7", "!<tag:x> y", "!!bool yes"]
    ),
    st.tuples(st.text(alphabet="abcxyz!/:._-%", min_size=1, max_size=12), SCALARS).map(
        lambda pair: f"!{pair[0]} {yaml.safe_dump(pair[1]).splitlines()[0]}"
    ),
)  # fmt: skip
NUMBER_TEXTS = st.one_of(
    st.sampled_from(
        ["1" + "0" * 400, "-1" + "0" * 400, "9" * 4400, "1e400", "-1e400", "1e-400", ".inf",
         "-.inf", ".nan", "0x" + "f" * 500, "0o" + "7" * 500, "0b" + "1" * 2000, "1_000" * 300,
         "190:20:30:" * 50 + "1", "2001-02-30", "9999-12-31T23:59:59Z", "0001-01-01", "+",
         "-", "0x", "._", "-0", "1e", "99999999999h", "1e308d", "1" * 40 + "ms"]
    ),
    st.integers(min_value=-(10**600), max_value=10**600).map(str),
)  # fmt: skip
HOMES = st.sampled_from(
    ["~nosuchuser/x.yaml", "~", "~/", "~nosuchuser", "~" + "u" * 300 + "/x", "~/" + "a" * 300,
     '"~a\\0b/x"', "~root/x.yaml", "~nobody", "~../../etc/passwd", "~-/x"]
)  # fmt: skip


REFERENCES = st.sampled_from(
    ['"' + "${" * 300_000 + '"', '"' + "${A}" * 100_000 + '"', '"${A:-' + "x" * 300_000 + '}"',
     '"${A:-${B}}"', '"${1X}"', '"${}"', '"${"', '"${NO_SUCH_VARIABLE_HERE}"', '"${HOME}"',
     '"http://${NO_SUCH_VARIABLE_HERE:-127.0.0.1:1}/m"', '"${PATH:-x}"', "${A", '"$${A}"']
)  # fmt: skip
"""Environment references (README.md, "Addresses") where a value was: runs of `${` that a
regular expression would scan quadratically, long defaults, nesting, bad names, unset ones."""


HOSTILE: dict[str, st.SearchStrategy[bytes]] = {
    "random structure": TREES.map(dump),
    "shipped, mutated": mutated(),
    "shipped, bytes damaged": damaged(),
    "deep nesting": deep(),
    "huge value": huge(),
    "alias bomb": bombs(),
    "explicit tag": spliced(TAGS),
    "number past its range": spliced(NUMBER_TEXTS),
    "~user path": spliced(HOMES),
    "environment reference": spliced(REFERENCES),
}
"""Each family of hostile documents by name (benchmarks/hostile_documents.py counts by it)."""


def hostile() -> st.SearchStrategy[bytes]:
    """Every family of hostile documents above, in one strategy."""
    return st.one_of(*HOSTILE.values())
