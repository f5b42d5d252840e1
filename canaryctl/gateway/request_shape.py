"""The fields of a request the gateway itself reads, checked before anything reads them.

Routing, budgets, the cache, tracing and the Ollama translation each look at a few fields of the
client's body (`stream`, `max_tokens`, `options`...). A field of the wrong type there would be
a crash deep in the pipeline; here it is a 400 naming the field, as the providers answer it.
Fields the gateway only passes on are the provider's to judge.

Numbers are bounded here too, before anything does arithmetic with them: a budget prices
`max_tokens` as a float, and `10**400` tokens is an OverflowError, not a cost. Token counts stop
at MAX_TOKEN_COUNT, seeds at a signed 64-bit integer, sampling numbers at MAX_SAMPLING.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from canaryctl.gateway.ollama import Dialect

__all__ = ["MAX_TOKEN_COUNT", "shape_problem"]

Check = tuple[Callable[[Any], bool], str]

MAX_TOKEN_COUNT = 10_000_000
"""More tokens than any model writes in one answer (or reads in one prompt)."""
MAX_SAMPLING = 1_000_000
"""Far past any temperature, top_p or penalty a provider takes, and exact as a float."""
_SEED = 2**63


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return (_integer(value) or isinstance(value, float)) and -MAX_SAMPLING <= value <= MAX_SAMPLING


def _count(value: Any) -> bool:
    return _integer(value) and 0 <= value <= MAX_TOKEN_COUNT


def _positive_count(value: Any) -> bool:
    return _integer(value) and 1 <= value <= MAX_TOKEN_COUNT


def _stop(value: Any) -> bool:
    return isinstance(value, str) or (
        isinstance(value, list) and all(isinstance(s, str) for s in value)
    )


def _objects(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(m, dict) for m in value)


_BOOL: Check = (lambda v: isinstance(v, bool), "must be true or false")
_OBJECT: Check = (lambda v: isinstance(v, dict), "must be an object")
_STRING: Check = (lambda v: isinstance(v, str), "must be a string")
_NUMBER: Check = (_number, f"must be a number from -{MAX_SAMPLING} to {MAX_SAMPLING}")
_COUNT: Check = (_count, f"must be a whole number from 0 to {MAX_TOKEN_COUNT}")
_POSITIVE_COUNT: Check = (_positive_count, f"must be a whole number from 1 to {MAX_TOKEN_COUNT}")
_STOP: Check = (_stop, "must be a string or a list of strings")
_MESSAGES: Check = (_objects, "must be a list of objects")
_INPUT: Check = (lambda v: isinstance(v, str | list), "must be a string or a list")

_INTEGER: Check = (
    lambda v: _integer(v) and -_SEED <= v < _SEED,
    "must be an integer from -2**63 to 2**63 - 1",
)
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
    "max_tokens": _POSITIVE_COUNT,  # Anthropic's rule: at least one token
    "stop_sequences": (lambda v: _stop(v) and not isinstance(v, str), "must be a list of strings"),
    "tools": _MESSAGES,
    "tool_choice": _OBJECT,
    "metadata": _OBJECT,
    "temperature": _NUMBER,
    "top_p": _NUMBER,
}
_OLLAMA_OPTIONS = {
    "num_predict": (
        lambda v: _integer(v) and -2 <= v <= MAX_TOKEN_COUNT,
        f"must be an integer from -2 to {MAX_TOKEN_COUNT}",
    ),
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
