"""Any document, however broken, gets exit 0 or 2 from `validate`, one line per problem naming
the file, and never a traceback.

Hypothesis writes thousands of documents of every kind: random YAML structures, the shipped
examples with a value swapped, a key dropped, added or repeated, their bytes damaged or
re-encoded, deep nesting, huge strings, NaN and infinities, and files that are not files.
`CANARYCTL_FUZZ_EXAMPLES=20000` runs more of each locally; the default profile keeps the whole
file near half a minute.
"""

from __future__ import annotations

import json
import math
import os
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from canaryctl.cli import main
from canaryctl.errors import InvalidDocument
from canaryctl.evals.benchmark import load_benchmark

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

settings.register_profile(
    "canaryctl",
    max_examples=int(os.environ.get("CANARYCTL_FUZZ_EXAMPLES", "800")),
    deadline=10_000,  # a hang guard (a FIFO read blocks for ever), not a speed assertion
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=os.environ.get("CI") == "true",
    database=None,
)
fuzz = settings(settings.get_profile("canaryctl"))


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for the module: Hypothesis runs many examples per test function."""
    return tmp_path_factory.mktemp("fuzz")


def validate(path: Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["validate", str(path), "-o", "text"])
    return result.exit_code, result.output


def check(path: Path) -> tuple[int, str]:
    """The property every example must have; returns the exit code and output for more."""
    code, output = validate(path)
    assert code in (0, 2), output
    assert "Traceback" not in output, output
    lines = output.splitlines()
    assert lines, "no message at all"
    for line in lines:
        # Every line names the file: this one, or a file it names (a metric profile's path).
        assert line.startswith(str(path.parent)), line
        assert len(line) < 2_000, line[:300]  # no input reflected unbounded
    return code, output


def write(folder: Path, data: bytes, name: str = "doc.yaml") -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


# -- strategies --

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


# -- properties --


@fuzz
@given(tree=TREES, kind=st.none() | st.sampled_from(KINDS))
def test_random_structures(folder: Path, tree: Any, kind: str | None) -> None:
    if kind is not None and isinstance(tree, dict):
        tree = {"apiVersion": "canaryctl/v1", "kind": kind, **tree}
    check(write(folder, dump(tree)))


@fuzz
@given(data=mutated())
def test_mutated_shipped_documents(folder: Path, data: bytes) -> None:
    path = write(folder, data)
    code, output = check(path)
    if code == 2 and isinstance(yaml.safe_load(data), dict):
        # Valid YAML, so every problem is a schema problem: it names the field.
        located = re.compile(rf"^{re.escape(str(path))}(:\d+)?: \S.*: ")
        for line in output.splitlines():
            counted = line.endswith(" more problems")
            assert located.match(line) or counted or not line.startswith(f"{path}:"), line


@fuzz
@given(data=damaged())
def test_damaged_bytes_and_encodings(folder: Path, data: bytes) -> None:
    check(write(folder, data))


@fuzz
@given(data=st.binary(max_size=400))
def test_random_bytes(folder: Path, data: bytes) -> None:
    check(write(folder, data))


@settings(fuzz, max_examples=max(20, fuzz.max_examples // 10))
@given(data=deep())
def test_deep_nesting(folder: Path, data: bytes) -> None:
    _, output = check(write(folder, data))
    assert "nested too deep" in output or "not valid YAML" in output, output


@settings(fuzz, max_examples=max(10, fuzz.max_examples // 30))
@given(data=huge())
def test_huge_values(folder: Path, data: bytes) -> None:
    check(write(folder, data))


@fuzz
@given(
    document=st.sampled_from(shipped_documents()),
    value=st.sampled_from([math.nan, math.inf, -math.inf]),
    pick=st.integers(min_value=0),
)
def test_nan_and_infinity_anywhere_are_refused_naming_the_field(
    folder: Path, document: tuple[str, Any], value: float, pick: int
) -> None:
    _, tree = document
    paths = [p for p in leaf_paths(tree) if p]
    path = paths[pick % len(paths)]
    code, output = check(write(folder, dump(replaced(tree, path, value))))
    assert code == 2, output
    assert f": {dotted(path)}: " in output, (dotted(path), output)


_KEY_LINE = re.compile(r"^(\s*)([A-Za-z_]+): \S.*$")


@fuzz
@given(document=st.sampled_from(shipped_documents()), pick=st.integers(min_value=0))
def test_a_repeated_key_names_both_lines(
    folder: Path, document: tuple[str, Any], pick: int
) -> None:
    lines = yaml.safe_dump(document[1], sort_keys=False, default_flow_style=False).splitlines()
    candidates = [i for i, line in enumerate(lines) if _KEY_LINE.match(line)]
    index = candidates[pick % len(candidates)]
    key = _KEY_LINE.match(lines[index])[2]  # type: ignore[index]
    text = "\n".join([*lines[: index + 1], lines[index], *lines[index + 1 :]]) + "\n"
    code, output = check(write(folder, text.encode()))
    assert code == 2 and f":{index + 2}: " in output, output
    assert f"duplicate key '{key}' (first at line {index + 1})" in output, output


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "directory", "missing", "long-name", "loop"])
def test_special_files(folder: Path, kind: str) -> None:
    path = folder / f"special-{kind}.yaml"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev-zero":
        path.symlink_to("/dev/zero")
    elif kind == "directory":
        path.mkdir()
    elif kind == "long-name":
        path = folder / ("n" * 300 + ".yaml")
    elif kind == "loop":
        path.symlink_to(path)
    code, output = validate(path)
    assert code == 2 and "Traceback" not in output, output
    assert output.splitlines() == [output.strip()] and output.startswith(str(path)), output


ITEM = '{"prompt": "What is 2 + 2?", "expected": 4, "scorer": "numeric"}'
BENCHMARK_LINES = st.one_of(
    st.text(max_size=60),
    st.just(ITEM),
    TREES.map(lambda tree: json.dumps(tree, default=str)),  # NaN, Infinity, huge integers
    st.integers(1, 400).map(lambda depth: "[" * depth + "]" * depth),
    st.sampled_from(
        ['{"prompt": "q", "prompt": "r", "scorer": "exact"}', ITEM[:-1] + ', "expected": NaN}']
    ),
)


@fuzz
@given(lines=st.lists(BENCHMARK_LINES, max_size=8))
def test_benchmark_sets_take_any_lines(folder: Path, lines: list[str]) -> None:
    path = write(folder, "\n".join(lines).encode(), "set.jsonl")
    try:
        items = load_benchmark(path)
    except InvalidDocument as exc:
        assert exc.problems
        assert all(str(p).startswith(str(path)) for p in exc.problems), exc.problems
    else:
        assert len(items) == sum(line == ITEM for line in lines)


FLAGS = json.loads((ROOT / "runbooks" / "flags.json").read_text())
FLAG_KEY = next(iter(FLAGS["flags"]))


@fuzz
@given(pick=st.integers(min_value=0), value=TREES, raw=st.booleans())
def test_flags_show_takes_any_flag_file(folder: Path, pick: int, value: Any, raw: bool) -> None:
    paths = leaf_paths(FLAGS)
    text = json.dumps(replaced(FLAGS, paths[pick % len(paths)], value), default=str)
    if raw:  # damage the bytes instead
        text = text[: pick % (len(text) + 1)] + "\ufffd\x00" + text[pick % (len(text) + 1) :]
    path = write(folder, text.encode("utf-8", errors="surrogatepass"), "flags.json")
    result = CliRunner().invoke(main, ["flags", "show", str(path), FLAG_KEY, "-o", "json"])
    assert result.exit_code in (0, 2), result.output
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        assert result.stderr.startswith(str(path)) and len(result.stderr.splitlines()) == 1
