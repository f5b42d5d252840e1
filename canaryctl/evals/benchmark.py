"""Benchmark sets: one JSON object per line, each a question, its expected answer and a scorer.

    {"id": "add-1", "prompt": "What is 17 + 25?", "expected": 42, "scorer": "numeric",
     "pattern": "=\\s*(-?\\d+)"}
    {"messages": [{"role": "user", "content": "Reply in JSON..."}], "scorer": "json_schema",
     "schema": {"type": "object", "required": ["city"]}}

Scorers: `exact` (the reply, stripped, equals `expected`), `contains` (`expected` appears in the
reply), `regex` (`pattern` matches; with `expected`, its first group must equal it), `numeric`
(the number `pattern`'s first group captures, else the reply's last number, is within
`tolerance` of `expected`), `json_schema` (the reply, or its first {...} block, is JSON that
conforms to `schema`). `ignore_case` applies to exact, contains and regex. Every item is checked
when the file loads; a bad line is reported with its line number (exit 2), before any request.
"""

from __future__ import annotations

import math
import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from canaryctl import fastjson
from canaryctl.errors import InvalidDocument, Problem
from canaryctl.evals.schema import schema_problems, unsupported_keywords
from canaryctl.runbook.common import Strict
from canaryctl.runbook.loader import validation_problems
from canaryctl.runbook.reading import parse_json, read_text

__all__ = ["BenchmarkItem", "Message", "builtin_benchmark", "load_benchmark", "score"]

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
_JSON_BLOCK = re.compile(r"\{.*\}", re.S)


class Message(Strict):
    role: Literal["system", "user", "assistant"]
    content: str


class BenchmarkItem(Strict):
    id: str | None = None
    prompt: str | None = Field(default=None, description="shorthand for one user message")
    messages: list[Message] | None = Field(default=None, min_length=1)
    scorer: Literal["exact", "contains", "regex", "numeric", "json_schema"]
    expected: str | float | None = None
    pattern: str | None = None
    tolerance: float = Field(default=0.0, ge=0)
    ignore_case: bool = False
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")

    @model_validator(mode="after")
    def _complete(self) -> BenchmarkItem:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of prompt or messages")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern: not a regular expression ({exc})") from None
        needs = {
            "exact": self.expected is not None,
            "contains": self.expected is not None,
            "regex": self.pattern is not None,
            "numeric": isinstance(self.expected, int | float),
            "json_schema": self.json_schema is not None,
        }
        if not needs[self.scorer]:
            what = {"regex": "a pattern", "numeric": "a numeric expected", "json_schema": "schema"}
            raise ValueError(f"scorer {self.scorer} needs {what.get(self.scorer, 'expected')}")
        if self.json_schema is not None and (bad := unsupported_keywords(self.json_schema)):
            raise ValueError(f"unsupported JSON Schema keywords: {', '.join(bad)}")
        return self

    def chat(self) -> list[dict[str, str]]:
        if self.messages is not None:
            return [m.model_dump() for m in self.messages]
        return [{"role": "user", "content": self.prompt or ""}]


def score(item: BenchmarkItem, reply: str) -> bool:
    """Is `reply` right for `item`? Pure; see the module docstring for each scorer."""
    flags = re.I if item.ignore_case else 0
    expected = "" if item.expected is None else _text(item.expected)
    match item.scorer:
        case "exact":
            return _fold(reply.strip(), item) == _fold(expected.strip(), item)
        case "contains":
            return _fold(expected, item) in _fold(reply, item)
        case "regex":
            assert item.pattern is not None
            found = re.search(item.pattern, reply, flags)
            if found is None:
                return False
            if item.expected is None:
                return True
            got = found.group(1) if found.groups() else found.group(0)
            return _fold(got.strip(), item) == _fold(expected.strip(), item)
        case "numeric":
            number = _number_in(reply, item.pattern)
            assert isinstance(item.expected, int | float)
            return number is not None and abs(number - item.expected) <= item.tolerance + 1e-12
        case "json_schema":
            assert item.json_schema is not None
            value = _json_in(reply)
            return value is not _NOT_JSON and not schema_problems(value, item.json_schema)
    raise AssertionError(f"unknown scorer {item.scorer}")


def _text(value: str | float) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _fold(text: str, item: BenchmarkItem) -> str:
    return text.casefold() if item.ignore_case else text


def _number_in(reply: str, pattern: str | None) -> float | None:
    if pattern is not None:
        found = re.search(pattern, reply)
        text = None if found is None else (found.group(1) if found.groups() else found.group(0))
    else:
        numbers = _NUMBER.findall(reply.replace(",", ""))
        text = numbers[-1] if numbers else None
    try:
        number = float(text) if text is not None else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) else None


_NOT_JSON = object()


def _json_in(reply: str) -> Any:
    """The reply as JSON, else its outermost {...} block (models like to wrap JSON in prose)."""
    for text in (reply.strip(), *(m.group(0) for m in [_JSON_BLOCK.search(reply)] if m)):
        try:
            return fastjson.loads(text)
        except ValueError:
            continue
    return _NOT_JSON


def builtin_benchmark(name: str) -> Path:
    return Path(str(resources.files("canaryctl") / "defaults" / "evals" / f"{name}.jsonl"))


def load_benchmark(path: Path, *, source: str | None = None) -> list[BenchmarkItem]:
    """Every item of a JSONL file; InvalidDocument lists each bad line (blank lines skipped)."""
    where = source or str(path)
    lines = read_text(path, source=where).splitlines()
    items: list[BenchmarkItem] = []
    problems: list[Problem] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = parse_json(line, where, line=number)
            items.append(BenchmarkItem.model_validate(data))
        except InvalidDocument as exc:
            problems.extend(exc.problems)
        except ValidationError as exc:
            problems.extend(validation_problems(exc, where, data, line=number))
    if problems:
        raise InvalidDocument(problems)
    if not items:
        raise InvalidDocument([Problem(where, "", "has no benchmark items")])
    return items
