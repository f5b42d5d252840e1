"""Any document, however broken, gets exit 0 or 2 from `validate`, one line per problem naming
the file, and never a traceback.

Hypothesis writes thousands of documents of every kind (tests/hostile_documents.py): random
YAML structures, the shipped examples with a value swapped, a key dropped, added or repeated,
their bytes damaged or re-encoded, deep nesting, huge strings, NaN and infinities, alias bombs,
explicit tags, numbers past every range, `~user` paths, and files that are not files.
`CANARYCTL_FUZZ_EXAMPLES=20000` runs more of each locally; the default profile keeps the whole
file near half a minute; benchmarks/hostile_documents.py is the long run, with its counts.
"""

from __future__ import annotations

import json
import math
import os
import re
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
from tests.hostile_documents import (
    HOMES,
    KINDS,
    NUMBER_TEXTS,
    REFERENCES,
    ROOT,
    TAGS,
    TREES,
    bombs,
    damaged,
    deep,
    dotted,
    dump,
    huge,
    leaf_paths,
    mutated,
    replaced,
    shipped_documents,
    spliced,
)

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


@settings(fuzz, max_examples=max(40, fuzz.max_examples // 8))
@given(data=bombs())
def test_alias_bombs_are_refused_or_small(folder: Path, data: bytes) -> None:
    """However wide and deep, a bomb is refused by its expanded size (or as a loop), never
    expanded; one small enough to expand is judged like any value."""
    code, output = check(write(folder, data))
    assert code == 2, output


@settings(fuzz, max_examples=max(40, fuzz.max_examples // 4))
@given(data=spliced(TAGS))
def test_explicit_tags_anywhere(folder: Path, data: bytes) -> None:
    check(write(folder, data))


@settings(fuzz, max_examples=max(40, fuzz.max_examples // 4))
@given(data=spliced(NUMBER_TEXTS))
def test_numbers_past_every_range(folder: Path, data: bytes) -> None:
    check(write(folder, data))


@settings(fuzz, max_examples=max(40, fuzz.max_examples // 8))
@given(data=spliced(HOMES))
def test_home_paths_anywhere(folder: Path, data: bytes) -> None:
    check(write(folder, data))


@settings(fuzz, max_examples=max(40, fuzz.max_examples // 8))
@given(data=spliced(REFERENCES))
def test_environment_references_anywhere(folder: Path, data: bytes) -> None:
    """In an address they expand or are exit 2 naming the field; anywhere else they are text."""
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
