"""What counts as an answer: a model's 200 is checked before anyone is told that it answered.

A body that is not a completion (`{}`, no choices, a message that is not an object), usage that
is not a set of non-negative whole token counts, and a completion with no content and no tool
calls are failures of the model (outcome `error`, reason `malformed` or `empty_completion`): the
fallback chain is walked, and a client that nobody answers gets a 502 with canaryctl's message,
never a 500. A completion the provider's content filter stopped (`finish_reason:
content_filter`) is an answer, outcome `filtered`, passed on as it came: another model must not
be asked to say what a filter held back.

Streams are checked chunk by chunk with a StreamWatch; a stream is held back from the client
until its first content, so one that says nothing can still fall back.
"""

from __future__ import annotations

from typing import Any

from canaryctl.gateway.failures import UpstreamFailure, error_body
from canaryctl.gateway.request_shape import MAX_TOKEN_COUNT
from canaryctl.runbook.gateway import ModelSpec

__all__ = [
    "FILTERED",
    "StreamWatch",
    "checked_completion",
    "checked_embeddings",
    "checked_ollama",
    "malformed",
    "outcome_of",
]

FILTERED = "content_filter"
"""OpenAI's finish_reason when its content filter stopped the answer."""
_COUNTS = ("prompt_tokens", "completion_tokens", "total_tokens")
_OLLAMA_COUNTS = ("prompt_eval_count", "eval_count")


def malformed(model: ModelSpec, what: str) -> UpstreamFailure:
    message = f"model {model.name} sent a malformed answer: {what}"
    return UpstreamFailure("malformed", 502, error_body(message))


def _empty(model: ModelSpec) -> UpstreamFailure:
    message = f"model {model.name} answered with an empty completion (no content, no tool calls)"
    return UpstreamFailure("empty_completion", 502, error_body(message))


def _is_count(value: object) -> bool:
    """A token count the gateway can price: a count past MAX_TOKEN_COUNT would overflow a float."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TOKEN_COUNT


def _check_usage(model: ModelSpec, usage: object) -> None:
    """Absent usage is fine (nothing to meter); present, it must be counts, or it is malformed."""
    if usage is None:
        return
    if not isinstance(usage, dict):
        raise malformed(model, f"usage is {type(usage).__name__}, not an object")
    for key in _COUNTS:
        value = usage.get(key)
        if value is not None and not _is_count(value):
            raise malformed(model, f"usage.{key} is {value!r}, not a token count")


def _says_something(part: dict[str, Any], content_key: str = "content") -> bool:
    """Text (not only whitespace), a tool or function call, or a refusal."""
    content = part.get(content_key)
    if isinstance(content, str) and content.strip():
        return True
    if isinstance(content, list) and any(
        isinstance(p, dict) and str(p.get("text") or "").strip() for p in content
    ):
        return True
    if isinstance(part.get("refusal"), str) and part["refusal"].strip():
        return True
    return bool(part.get("tool_calls")) or bool(part.get("function_call"))


def outcome_of(completion: dict[str, Any]) -> str:
    """A checked completion's outcome: `filtered` when the content filter stopped it, else `ok`."""
    return "filtered" if completion["choices"][0].get("finish_reason") == FILTERED else "ok"


def checked_completion(model: ModelSpec, data: object) -> dict[str, Any]:
    """The completion, if it is one that says something or was filtered; else the failure."""
    if not isinstance(data, dict):
        raise malformed(model, f"the body is {type(data).__name__}, not an object")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        raise malformed(model, "no choices")
    first = choices[0]
    message = first.get("message") if isinstance(first, dict) else None
    if not isinstance(message, dict):
        raise malformed(model, "choices[0].message is not an object")
    _check_usage(model, data.get("usage"))
    if first.get("finish_reason") != FILTERED and not _says_something(message):
        raise _empty(model)
    return data


def checked_ollama(model: ModelSpec, data: object) -> dict[str, Any]:
    """An Ollama /api/chat answer (or stream line) fit to translate, or the failure it is."""
    if not isinstance(data, dict):
        raise malformed(model, f"the body is {type(data).__name__}, not an object")
    message = data.get("message")
    if message is not None and not isinstance(message, dict):
        raise malformed(model, "message is not an object")
    for key in _OLLAMA_COUNTS:
        value = data.get(key)
        if value is not None and not _is_count(value):
            raise malformed(model, f"{key} is {value!r}, not a token count")
    return data


def checked_embeddings(model: ModelSpec, data: object) -> dict[str, Any]:
    """An embeddings list with at least one vector, or the failure it is."""
    if not isinstance(data, dict):
        raise malformed(model, f"the body is {type(data).__name__}, not an object")
    vectors = data.get("data")
    if not isinstance(vectors, list) or not vectors:
        raise malformed(model, "no embeddings in data")
    if not all(isinstance(v, dict) and isinstance(v.get("embedding"), list) for v in vectors):
        raise malformed(model, "an entry of data has no embedding list")
    _check_usage(model, data.get("usage"))
    return data


class StreamWatch:
    """What a stream's chunks have shown so far: content, a content filter, bad chunks."""

    def __init__(self, model: ModelSpec) -> None:
        self._model = model
        self.answered = False
        self.filtered = False

    @property
    def decided(self) -> bool:
        """Enough seen to pass the stream on: it said something, or the filter stopped it."""
        return self.answered or self.filtered

    @property
    def outcome(self) -> str:
        return "filtered" if self.filtered else "ok"

    def see(self, chunk: object) -> None:
        """Take one OpenAI chunk; UpstreamFailure when it is not one."""
        if not isinstance(chunk, dict):
            raise malformed(self._model, "a stream chunk is not an object")
        choices = chunk.get("choices", [])
        if not isinstance(choices, list):
            raise malformed(self._model, "a stream chunk's choices is not a list")
        _check_usage(self._model, chunk.get("usage"))
        for choice in choices:
            if not isinstance(choice, dict):
                raise malformed(self._model, "a stream chunk's choice is not an object")
            delta = choice.get("delta") or {}
            if not isinstance(delta, dict):
                raise malformed(self._model, "a stream chunk's delta is not an object")
            self.answered = self.answered or _says_something(delta)
            self.filtered = self.filtered or choice.get("finish_reason") == FILTERED

    def ended(self) -> None:
        """The stream ended: UpstreamFailure if it never said anything."""
        if not self.decided:
            raise _empty(self._model)
