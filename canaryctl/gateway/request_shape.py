"""The fields of a request the gateway itself reads, checked before anything reads them.

Routing, budgets, the cache, tracing and the Ollama translation each look at a few fields of the
client's body (`stream`, `max_tokens`, `options`...). A field of the wrong type there would be
a crash deep in the pipeline; here it is a 400 naming the field, as the providers answer it.
Fields the gateway only passes on are the provider's to judge.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from canaryctl.gateway.ollama import Dialect

__all__ = ["shape_problem"]

Check = tuple[Callable[[Any], bool], str]


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _stop(value: Any) -> bool:
    return isinstance(value, str) or (
        isinstance(value, list) and all(isinstance(s, str) for s in value)
    )


def _objects(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(m, dict) for m in value)


_BOOL: Check = (lambda v: isinstance(v, bool), "must be true or false")
_OBJECT: Check = (lambda v: isinstance(v, dict), "must be an object")
_STRING: Check = (lambda v: isinstance(v, str), "must be a string")
_NUMBER: Check = (_number, "must be a number")
_COUNT: Check = (_count, "must be a whole number, 0 or more")
_STOP: Check = (_stop, "must be a string or a list of strings")
_MESSAGES: Check = (_objects, "must be a list of objects")
_INPUT: Check = (lambda v: isinstance(v, str | list), "must be a string or a list")

_INTEGER: Check = (lambda v: isinstance(v, int) and not isinstance(v, bool), "must be an integer")
_SAMPLING = {"temperature": _NUMBER, "top_p": _NUMBER, "seed": _INTEGER, "stop": _STOP}
_OPENAI = {
    "messages": _MESSAGES,
    "stream": _BOOL,
    "stream_options": _OBJECT,
    "max_tokens": _COUNT,
    "max_completion_tokens": _COUNT,
    "n": _COUNT,
    "user": _STRING,
    "input": _INPUT,
    **_SAMPLING,
}
_OLLAMA = {
    "messages": _MESSAGES,
    "prompt": _STRING,
    "system": _STRING,
    "stream": _BOOL,
    "options": _OBJECT,
    "user": _STRING,  # not Ollama's, but the gateway reads it for the requester
}
_ANTHROPIC = {
    "messages": _MESSAGES,
    "system": _INPUT,
    "stream": _BOOL,
    "max_tokens": _COUNT,
    "stop_sequences": (lambda v: _stop(v) and not isinstance(v, str), "must be a list of strings"),
    "tools": _MESSAGES,
    "tool_choice": _OBJECT,
    "metadata": _OBJECT,
    "temperature": _NUMBER,
    "top_p": _NUMBER,
}
_OLLAMA_OPTIONS = {
    "num_predict": (lambda v: isinstance(v, int) and v >= -2, "must be an integer"),
    **_SAMPLING,
}


def shape_problem(dialect: Dialect, body: Mapping[str, Any]) -> str | None:
    """What is wrong with a field the gateway reads ("stream: must be true or false"), or None.
    A field set to null counts as not set, as the providers take it."""
    checks = {"openai": _OPENAI, "anthropic": _ANTHROPIC}.get(dialect, _OLLAMA)
    problem = _first_problem(body, checks, "")
    ollama = dialect in ("chat", "generate")
    if problem is None and ollama and isinstance(body.get("options"), dict):
        problem = _first_problem(body["options"], _OLLAMA_OPTIONS, "options.")
    return problem


def _first_problem(body: Mapping[str, Any], checks: Mapping[str, Check], prefix: str) -> str | None:
    for field, (valid, wanted) in checks.items():
        value = body.get(field)
        if value is not None and not valid(value):
            return f"{prefix}{field}: {wanted}"
    return None
