"""Load YAML documents into validated models, turning every problem into a located one-liner."""

from __future__ import annotations

import importlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from canaryctl.errors import InvalidDocument, Problem
from canaryctl.runbook.kinds import KINDS
from canaryctl.runbook.reading import MAX_DEPTH, read_text
from canaryctl.runbook.yaml_scan import MAX_DOCUMENT_BYTES, check_events
from canaryctl.runbook.yaml_scan import clip as _clip
from canaryctl.runbook.yaml_scan import format_loc as _format_loc

__all__ = [
    "KINDS",
    "json_schema",
    "kind_model",
    "load_document",
    "parse_document",
    "parse_yaml",
    "validation_problems",
]

T = TypeVar("T", bound=BaseModel)
_SUB_PATH = re.compile(
    r"^(?P<path>[a-z_]+(\[\d+\])*(\.[a-z_]+(\[\d+\])*)*): (?P<message>.*)$", re.S
)
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml when it is there: ten times faster on a large file than the pure-Python loader."""
_MERGE_TAG = "tag:yaml.org,2002:merge"
_TYPE_NAME = re.compile(r"^[a-z-]+\[.*\]$")
"""pydantic's names for a union's members, `dict[str,str]` or `literal['a']`: never a field."""
_TELLING = frozenset({"finite_number"})


def kind_model(kind: str) -> type[BaseModel]:
    """The model of a document kind (a key of KINDS)."""
    model: type[BaseModel] = getattr(importlib.import_module(KINDS[kind]), kind)
    return model


def load_document(path: str | Path, expect: type[T] | None = None) -> T:
    """Read and validate one document; raise InvalidDocument listing every problem found."""
    text = read_text(path, max_bytes=MAX_DOCUMENT_BYTES)
    return parse_document(text, str(path), base_dir=Path(path).resolve().parent, expect=expect)


def parse_document(
    text: str,
    source: str,
    *,
    base_dir: Path | None = None,
    expect: type[T] | None = None,
    environ: Mapping[str, str] | None = None,
) -> T:
    """Validate one document's text. Its addresses read `environ`, this process's environment
    by default (canaryctl/runbook/addresses.py); a server parsing a client's document passes an
    empty one, so a request never reads the server's variables."""
    node, data = parse_yaml(text, source)
    if not isinstance(data, dict):
        raise InvalidDocument([Problem(source, "", "must be a mapping with apiVersion and kind")])

    kind = data.get("kind")
    model = kind_model(kind) if isinstance(kind, str) and kind in KINDS else None
    if model is None:
        known = ", ".join(KINDS)
        raise InvalidDocument(
            [
                Problem(
                    source,
                    "kind",
                    f"unknown kind {_clip(repr(kind))}; expected one of {known}",
                    _Lines(node).of(("kind",)),
                )
            ]
        )
    if expect is not None and model is not expect:
        raise InvalidDocument(
            [
                Problem(
                    source,
                    "kind",
                    f"expected a {expect.__name__} document, got {kind}",
                    _Lines(node).of(("kind",)),
                )
            ]
        )
    try:
        context = {"base_dir": base_dir, "environ": os.environ if environ is None else environ}
        return model.model_validate(data, context=context)  # type: ignore[return-value]
    except ValidationError as exc:
        raise InvalidDocument(validation_problems(exc, source, data, node)) from exc
    except RecursionError:
        raise InvalidDocument([Problem(source, "", "nested too deep")]) from None


def parse_yaml(text: str, source: str) -> tuple[yaml.Node | None, Any]:
    """One YAML document as (its node tree, its data), within the limits of check_events
    (bytes, nodes after aliases, tags, a mapping at the root) and refusing what YAML itself lets
    through: duplicate keys (the last silently wins), nesting deeper than MAX_DEPTH."""
    loader = _Loader(text)
    try:
        check_events(loader, text, source)
        loader.dispose()
        loader = _Loader(text)  # the events are spent: compose from the start, now bounded
        node = loader.get_single_node()
        if node is not None:
            problems = _shape_problems(node, source)
            if problems:
                raise InvalidDocument(problems)
        return node, (loader.construct_document(node) if node is not None else None)
    except yaml.YAMLError as exc:
        raise InvalidDocument([_yaml_problem(exc, text, source)]) from None
    except RecursionError:
        raise InvalidDocument([Problem(source, "", "nested too deep")]) from None
    except (ValueError, OverflowError) as exc:  # a date like 2001-13-45, a 5000-digit integer
        raise InvalidDocument([Problem(source, "", f"not valid YAML: {_clip(str(exc))}")]) from None
    finally:
        loader.dispose()


def _yaml_problem(exc: yaml.YAMLError, text: str, source: str) -> Problem:
    mark = getattr(exc, "problem_mark", None)
    line = mark.line + 1 if mark is not None else None
    if isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, exc.position) + 1
    reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if "nesting depth" in reason:
        return Problem(source, "", "nested too deep", line)
    return Problem(source, "", f"not valid YAML: {_clip(' '.join(reason.split()))}", line)


def _shape_problems(root: yaml.Node, source: str) -> list[Problem]:
    """Duplicate keys and too deep nesting, walked without recursion (each node once, so an
    alias cannot make the walk exponential)."""
    problems: list[Problem] = []
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, int, tuple[Any, ...]]] = [(root, 1, ())]
    while stack:
        node, depth, path = stack.pop()
        if id(node) in seen or not isinstance(node, yaml.CollectionNode):
            continue
        seen.add(id(node))
        if depth > MAX_DEPTH:
            line = node.start_mark.line + 1
            message = f"nested too deep (more than {MAX_DEPTH} levels)"
            return [Problem(source, _format_loc(path), message, line)]
        if isinstance(node, yaml.SequenceNode):
            stack.extend((child, depth + 1, (*path, i)) for i, child in enumerate(node.value))
            continue
        first: dict[tuple[str, str], yaml.Mark] = {}
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.tag != _MERGE_TAG:
                mark, earlier = key.start_mark, first.get((key.tag, key.value))
                if earlier is not None:
                    where = f"line {earlier.line + 1}"
                    if earlier.line == mark.line:
                        where += f", column {earlier.column + 1}"
                    message = f"duplicate key '{_clip(key.value)}' (first at {where})"
                    problems.append(Problem(source, _format_loc(path), message, mark.line + 1))
                first.setdefault((key.tag, key.value), mark)
            name = key.value if isinstance(key, yaml.ScalarNode) else "?"
            stack.append((value, depth + 1, (*path, name)))
    return sorted(problems, key=lambda p: p.line or 0)


def validation_problems(
    exc: ValidationError,
    source: str,
    data: Any,
    node: yaml.Node | None = None,
    line: int | None = None,
) -> list[Problem]:
    """pydantic's errors as the user's problems: field paths as written, one line each; where
    one field failed several ways (each member of a union), only its most telling problem."""
    errors = exc.errors(include_url=False)
    locs = [_user_path(data, tuple(e["loc"])) for e in errors]
    telling = {loc for loc, e in zip(locs, errors, strict=True) if e["type"] in _TELLING}
    problems = []
    lines = _Lines(node)
    for loc, error in zip(locs, errors, strict=True):
        if loc in telling and error["type"] not in _TELLING:
            continue
        problem = _problem(source, lines, loc, error)
        problems.append(problem if line is None else replace(problem, line=line))
    return list(dict.fromkeys(problems))


def json_schema(kind: str) -> str:
    model = kind_model(kind)
    return json.dumps(model.model_json_schema(by_alias=True), indent=2)


def _problem(source: str, lines: _Lines, loc: tuple[Any, ...], error: Any) -> Problem:
    """One pydantic error at `loc` (its path as the user wrote it) as a Problem."""
    message = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if error["type"] == "finite_number":
        message = f"must be a finite number, not {_clip(str(error.get('input')))}"
    elif error["type"] == "extra_forbidden":
        message = "unknown field (check the spelling)"
    elif error["type"] == "missing":
        message = "required field is missing"
    elif error["type"] == "union_tag_invalid":
        ctx = error.get("ctx", {})
        loc = (*loc, ctx.get("discriminator", "").strip("'"))
        message = f"unknown value {ctx.get('tag')!r}; expected {ctx.get('expected_tags')}"
    # A model-level check names its own sub-path ("steps[4]: ..."); fold it into the location.
    if match := _SUB_PATH.match(message):
        loc = (*loc, *_split_path(match["path"]))
        message = match["message"]
    return Problem(source, _format_loc(loc), _clip(message), lines.of(loc))


def _user_path(data: Any, loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """The error's location as the user wrote it: walking the input along pydantic's location,
    drop the steps pydantic inserted (a union member's `provider` tag, type names such as
    `float` or `function-after[...]`) that name nothing in the document."""
    path: list[Any] = []
    node = data
    for part in loc:
        inserted = (isinstance(node, dict) and node.get("provider") == part) or (
            isinstance(part, str) and _is_type_name(part)
        )
        if inserted:
            continue
        present = (isinstance(node, dict) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        )
        node = node[part] if present else None  # a field left out still belongs in the path
        path.append(part)
    return tuple(path)


def _is_type_name(part: str) -> bool:
    return (
        part in {"int", "float", "str", "bool", "constrained-str", "[key]"}
        or part.startswith(("function-", "json-or-python"))
        or _TYPE_NAME.match(part) is not None
    )


def _split_path(text: str) -> list[str | int]:
    parts: list[str | int] = []
    for piece in text.replace("]", "").split("."):
        name, *indices = piece.split("[")
        if name:
            parts.append(name)
        parts.extend(int(i) for i in indices if i.isdigit())
    return parts


class _Lines:
    """The line of each field path in the composed YAML tree. A mapping's keys are indexed the
    first time a path passes through it, so reporting N problems costs the tree's size plus N
    path walks, never N scans of a mapping of 20,000 keys."""

    def __init__(self, root: yaml.Node | None) -> None:
        self.root = root
        self._keys: dict[int, dict[str, tuple[yaml.Node, int]]] = {}

    def of(self, loc: tuple[Any, ...]) -> int | None:
        """Walk along the error's path to the deepest node that exists; its (or its key's)
        line."""
        node = self.root
        if node is None:
            return None
        line = node.start_mark.line + 1
        for part in loc:
            child: yaml.Node | None = None
            if isinstance(node, yaml.MappingNode) and isinstance(part, str):
                found = self._mapping(node).get(part)
                if found is not None:
                    child, line = found
            elif (
                isinstance(node, yaml.SequenceNode)
                and isinstance(part, int)
                and 0 <= part < len(node.value)
            ):
                child = node.value[part]
                line = child.start_mark.line + 1
            if child is None:
                break
            node = child
        return line

    def _mapping(self, node: yaml.MappingNode) -> dict[str, tuple[yaml.Node, int]]:
        keys = self._keys.get(id(node))
        if keys is None:
            keys = {}
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    keys.setdefault(key.value, (value, key.start_mark.line + 1))
            self._keys[id(node)] = keys
        return keys
