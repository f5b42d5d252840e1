"""Load YAML documents into validated models, turning every problem into a located one-liner."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from canaryctl.errors import InvalidDocument, Problem
from canaryctl.runbook.gateway import Gateway
from canaryctl.runbook.lab import Lab
from canaryctl.runbook.profile import MetricProfile
from canaryctl.runbook.rollout import Rollout
from canaryctl.runbook.scenario import ChaosScenario

__all__ = ["KINDS", "Document", "json_schema", "load_document", "parse_document"]

T = TypeVar("T", bound=BaseModel)
_SUB_PATH = re.compile(
    r"^(?P<path>[a-z_]+(\[\d+\])*(\.[a-z_]+(\[\d+\])*)*): (?P<message>.*)$", re.S
)
Document = Rollout | Gateway | Lab | MetricProfile | ChaosScenario
KINDS: dict[str, type[BaseModel]] = {
    "Rollout": Rollout,
    "Gateway": Gateway,
    "Lab": Lab,
    "MetricProfile": MetricProfile,
    "ChaosScenario": ChaosScenario,
}


def load_document(path: str | Path, expect: type[T] | None = None) -> T:
    """Read and validate one document; raise InvalidDocument listing every problem found."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidDocument([Problem(source, "", f"cannot read: {exc.strerror}")]) from exc
    return parse_document(text, source, base_dir=Path(path).resolve().parent, expect=expect)


def parse_document(
    text: str, source: str, *, base_dir: Path | None = None, expect: type[T] | None = None
) -> T:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        reason = getattr(exc, "problem", None) or str(exc)
        raise InvalidDocument([Problem(source, "", f"not valid YAML: {reason}", line)]) from exc
    if not isinstance(data, dict):
        raise InvalidDocument([Problem(source, "", "must be a mapping with apiVersion and kind")])

    kind = data.get("kind")
    model = KINDS.get(kind) if isinstance(kind, str) else None
    if model is None:
        known = ", ".join(KINDS)
        raise InvalidDocument(
            [
                Problem(
                    source,
                    "kind",
                    f"unknown kind {kind!r}; expected one of {known}",
                    _line_of(node, ("kind",)),
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
                    _line_of(node, ("kind",)),
                )
            ]
        )
    try:
        return model.model_validate(data, context={"base_dir": base_dir})  # type: ignore[return-value]
    except ValidationError as exc:
        raise InvalidDocument(
            [_problem(source, node, data, err) for err in exc.errors(include_url=False)]
        ) from exc


def json_schema(kind: str) -> str:
    model = KINDS[kind]
    return json.dumps(model.model_json_schema(by_alias=True), indent=2)


def _problem(source: str, node: yaml.Node | None, data: Any, error: Any) -> Problem:
    loc = _user_path(data, tuple(error["loc"]))
    message = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if error["type"] == "extra_forbidden":
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
    return Problem(source, _format_loc(loc), message, _line_of(node, loc))


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
    return part in {"int", "float", "str", "bool", "constrained-str", "[key]"} or part.startswith(
        ("function-", "literal[", "json-or-python")
    )


def _split_path(text: str) -> list[str | int]:
    parts: list[str | int] = []
    for piece in text.replace("]", "").split("."):
        name, *indices = piece.split("[")
        if name:
            parts.append(name)
        parts.extend(int(i) for i in indices if i.isdigit())
    return parts


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """Walk the composed YAML tree along the error's path to the deepest node that exists."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == part:
                    child, line = value, key.start_mark.line + 1
                    break
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
