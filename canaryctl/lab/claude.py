"""What a simulated Claude says: the lab's answers in Anthropic's Messages API shapes.

The fate of a request (error, latency, length, rightness) is drawn exactly as for the OpenAI
dialect (behaviour.py); only the shapes differ, and those are built by the gateway's Anthropic
module, the one place that knows them. Offered tools and not answering a tool's result, the
model calls the tool it was told to (else the first), with an input made from the tool's schema:
the question for each required string, 0 for numbers, false for booleans.
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from canaryctl.gateway.anthropic import error_body, event, message
from canaryctl.lab.behaviour import Behaviour, estimate_tokens

__all__ = ["Answer", "error_body", "paced_events", "prompt"]

_EMPTY = {"string": "", "number": 0, "integer": 0, "boolean": False, "array": [], "object": {}}


def _text(content: Any) -> str:
    """A turn's text: its text blocks and the text of its tool results."""
    if not isinstance(content, list):
        return str(content or "")
    texts = []
    for block in content:
        if isinstance(block, dict) and block.get("type") == "text":
            texts.append(str(block.get("text", "")))
        elif isinstance(block, dict) and block.get("type") == "tool_result":
            texts.append(_text(block.get("content")))
    return " ".join(texts)


def prompt(body: dict[str, Any]) -> tuple[str, int]:
    """The text the model answers (the last user turn) and the prompt's token count."""
    turns = [t for t in body.get("messages") or [] if isinstance(t, dict)]
    texts = [_text(body.get("system"))] if body.get("system") else []
    texts += [_text(t.get("content")) for t in turns]
    users = [_text(t.get("content")) for t in turns if t.get("role") == "user"]
    return (users[-1] if users else ""), sum(estimate_tokens(t) + 3 for t in texts) or 1


def _answers_a_tool(body: dict[str, Any]) -> bool:
    turns = [t for t in body.get("messages") or [] if isinstance(t, dict)]
    content = turns[-1].get("content") if turns else None
    return isinstance(content, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in content
    )


def _tool_call(body: dict[str, Any], question: str) -> tuple[str, dict[str, Any]] | None:
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and t.get("name")]
    choice = body.get("tool_choice") if isinstance(body.get("tool_choice"), dict) else {}
    if not tools or choice.get("type") == "none" or _answers_a_tool(body):
        return None
    named = [t for t in tools if choice.get("type") == "tool" and t["name"] == choice.get("name")]
    tool = (named or tools)[0]
    schema = tool.get("input_schema") if isinstance(tool.get("input_schema"), dict) else {}
    properties = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
    required = schema.get("required") if isinstance(schema.get("required"), list) else []
    arguments: dict[str, Any] = {}
    for name in (n for n in required if isinstance(n, str)):
        field = properties.get(name)
        kind = field.get("type") if isinstance(field, dict) else None
        arguments[name] = question if kind == "string" else _EMPTY.get(str(kind))
    return str(tool["name"]), arguments


@dataclass(frozen=True)
class Answer:
    """One answer: text, or a call of `tool` with `arguments`; tokens as reported."""

    model: str
    message_id: str
    text: str
    tool: str | None
    arguments: dict[str, Any]
    input_tokens: int
    output_tokens: int

    @classmethod
    def of(
        cls,
        body: dict[str, Any],
        fate: Behaviour,
        question: str,
        prompt_tokens: int,
        rng: random.Random,
    ) -> Answer:
        model, message_id = str(body.get("model") or "claude"), f"msg_{rng.getrandbits(64):016x}"
        call = _tool_call(body, question)
        if call is None:
            return cls(
                model, message_id, fate.text, None, {}, prompt_tokens, fate.completion_tokens
            )
        tool, arguments = call
        tokens = estimate_tokens(json.dumps(arguments)) + 10
        return cls(model, message_id, "", tool, arguments, prompt_tokens, tokens)

    @property
    def tool_id(self) -> str:
        return "toolu_" + self.message_id[4:]

    @property
    def stop_reason(self) -> str:
        return "end_turn" if self.tool is None else "tool_use"

    def message(self) -> dict[str, Any]:
        if self.tool is None:
            content = [{"type": "text", "text": self.text}]
        else:
            block = {"type": "tool_use", "id": self.tool_id, "name": self.tool}
            content = [{**block, "input": self.arguments}]
        return message(
            self.model,
            content,
            self.stop_reason,
            self.input_tokens,
            self.output_tokens,
            message_id=self.message_id,
        )


async def paced_events(
    answer: Answer, pieces: AsyncIterator[tuple[int, str]]
) -> AsyncIterator[str]:
    """The answer as a stream: message_start, one content block, message_delta (stop reason and
    output tokens), message_stop; text as its pieces arrive, a tool's input in two parts."""
    start = message(answer.model, [], None, answer.input_tokens, 1, message_id=answer.message_id)
    yield event("message_start", {"message": start})
    if answer.tool is None:
        block: dict[str, Any] = {"type": "text", "text": ""}
    else:
        block = {"type": "tool_use", "id": answer.tool_id, "name": answer.tool, "input": {}}
    yield event("content_block_start", {"index": 0, "content_block": block})
    yield event("ping", {})
    async for _, piece in pieces:
        if answer.tool is None:
            delta = {"type": "text_delta", "text": piece}
            yield event("content_block_delta", {"index": 0, "delta": delta})
    if answer.tool is not None:
        arguments = json.dumps(answer.arguments)
        middle = len(arguments) // 2
        for part in (arguments[:middle], arguments[middle:]):
            delta = {"type": "input_json_delta", "partial_json": part}
            yield event("content_block_delta", {"index": 0, "delta": delta})
    yield event("content_block_stop", {"index": 0})
    stop = {"stop_reason": answer.stop_reason, "stop_sequence": None}
    yield event("message_delta", {"delta": stop, "usage": {"output_tokens": answer.output_tokens}})
    yield event("message_stop", {})
