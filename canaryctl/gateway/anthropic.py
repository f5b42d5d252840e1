"""Anthropic's Messages API, both ways: its wire shapes, and their translation to OpenAI's.

The gateway speaks OpenAI inside. Outbound, a model with `provider: anthropic` is sent
`/v1/messages` and its message (or its stream of events) comes back as an OpenAI completion (or
chunks), usage included, so metering, budgets and fallback never know which API answered.
Inbound, `POST /v1/messages` on the gateway is translated to an OpenAI chat request and its
answer back to a message or to events. The lab's Claude providers and the chaos proxy build
their bodies with the same functions, so there is one place for what Anthropic sends.

Pure functions and small stateful translators only; the I/O is upstream.py's and app.py's.
What is not translated is said in docs/gateway.md ("Claude, natively").
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from canaryctl import fastjson
from canaryctl.request_limits import clip

__all__ = [
    "API_VERSION",
    "DEFAULT_MAX_TOKENS",
    "ChunkTranslator",
    "EventEncoder",
    "StreamError",
    "chat_from_messages",
    "completion_from_message",
    "error_body",
    "error_from_openai",
    "error_type",
    "event",
    "message",
    "message_from_completion",
    "message_id",
    "messages_request",
    "status_of",
]

API_VERSION = "2023-06-01"
"""The `anthropic-version` header sent upstream: the Messages API's stable version."""
DEFAULT_MAX_TOKENS = 4096
"""Sent when the OpenAI request sets none (Anthropic requires `max_tokens`): every Claude model
can write this many."""

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",  # a server past its load limits; Anthropic's own says 529
    504: "timeout_error",
    529: "overloaded_error",
}
_STATUSES = {kind: status for status, kind in _ERROR_TYPES.items()}
_MESSAGES = {
    429: "Number of requests has exceeded your rate limit. Please try again later.",
    529: "Overloaded",
}

_FINISH = {  # stop_reason -> finish_reason
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",  # Anthropic's classifiers stopped the answer: outcome `filtered`
}
_STOP = {  # finish_reason -> stop_reason
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


# --- wire shapes -------------------------------------------------------------------------------


def error_type(status: int) -> str:
    """Anthropic's `error.type` for an HTTP status (other 4xx are invalid requests, 5xx api)."""
    if status in _ERROR_TYPES:
        return _ERROR_TYPES[status]
    return "invalid_request_error" if status < 500 else "api_error"


def status_of(kind: str) -> int:
    """The HTTP status an `error.type` comes with (an unknown type is a 500)."""
    return _STATUSES.get(kind, 500)


def error_body(status: int, message: str | None = None) -> dict[str, Any]:
    """`{"type": "error", "error": {"type": ..., "message": ...}}`, as Anthropic sends it."""
    text = message or _MESSAGES.get(status) or "An unexpected error has occurred."
    return {"type": "error", "error": {"type": error_type(status), "message": text}}


def error_from_openai(status: int, body: dict[str, Any]) -> dict[str, Any]:
    """The gateway's error (OpenAI's shape) in Anthropic's: the type follows the status (so a
    404 for an unknown route is a not_found_error, whatever OpenAI would call it)."""
    error = body.get("error")
    error = error if isinstance(error, dict) else {}
    return error_body(status, str(error.get("message") or ""))


def message(
    model: str,
    content: list[dict[str, Any]],
    stop_reason: str | None,
    input_tokens: int,
    output_tokens: int,
    message_id: str | None = None,
) -> dict[str, Any]:
    """A Messages API answer (`"type": "message"`)."""
    return {
        "id": message_id or f"msg_{secrets.token_hex(12)}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }


def message_id(completion_id: Any) -> str | None:
    """The gateway's completion id as Anthropic spells a message's (`msg_...`): the signed part
    is kept, so POST /v1/feedback scores it as it scores the completion id."""
    if not isinstance(completion_id, str) or not completion_id:
        return None
    return "msg_" + completion_id.removeprefix("chatcmpl-").removeprefix("msg_")


def event(name: str, body: dict[str, Any]) -> str:
    """One server-sent event: Anthropic names each (`event:`) and repeats the name as `type`."""
    return f"event: {name}\ndata: {json.dumps({'type': name, **body})}\n\n"


# --- outbound: an OpenAI chat request to a model with provider: anthropic -----------------------


def _dicts(value: Any) -> list[dict[str, Any]]:
    """The objects of a list (a client's or a model's); nothing for anything else."""
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _index(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"a stream index is {value!r}, not a number")
    return value


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content or "")


def _image(url: str) -> dict[str, Any]:
    """OpenAI's image_url (a data: URL or a web address) as an Anthropic image block."""
    if url.startswith("data:") and ";base64," in url:
        media_type, data = url[5:].split(";base64,", 1)
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    return {"type": "image", "source": {"type": "url", "url": url}}


def _blocks(content: Any) -> list[dict[str, Any]]:
    if not isinstance(content, list):
        text = str(content or "")
        return [{"type": "text", "text": text}] if text else []
    blocks: list[dict[str, Any]] = []
    for part in content:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if isinstance(url, str):
                blocks.append(_image(url))
        elif part.get("text"):
            blocks.append({"type": "text", "text": str(part["text"])})
    return blocks


def _tool_use(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function") if isinstance(call.get("function"), dict) else {}
    try:
        arguments = fastjson.loads(str(function.get("arguments") or "{}"))
    except ValueError:
        arguments = {}
    return {
        "type": "tool_use",
        "id": str(call.get("id") or f"toolu_{secrets.token_hex(8)}"),
        "name": str(function.get("name", "")),
        "input": arguments if isinstance(arguments, dict) else {"value": arguments},
    }


def _turns(messages: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """The system text and the user/assistant turns, tool results as user turns; consecutive
    turns of one role are merged, as Anthropic wants them to alternate."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for m in messages:
        role = m.get("role")
        if role in ("system", "developer"):
            system.append(_text(m.get("content")))
            continue
        if role == "tool":
            result = {
                "type": "tool_result",
                "tool_use_id": str(m.get("tool_call_id", "")),
                "content": _text(m.get("content")),
            }
            role, blocks = "user", [result]
        else:
            role = "assistant" if role == "assistant" else "user"
            blocks = _blocks(m.get("content"))
            if role == "assistant":
                blocks += [_tool_use(c) for c in _dicts(m.get("tool_calls"))]
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return "\n\n".join(s for s in system if s), turns


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    picked: dict[str, Any] | None = None
    if choice == "auto":
        picked = {"type": "auto"}
    elif choice == "required":
        picked = {"type": "any"}
    elif choice == "none":
        picked = {"type": "none"}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        picked = {"type": "tool", "name": str(choice["function"].get("name", ""))}
    if parallel is False:
        picked = {**(picked or {"type": "auto"}), "disable_parallel_tool_use": True}
    return picked


def messages_request(chat: dict[str, Any], model: str, *, stream: bool) -> dict[str, Any]:
    """An OpenAI chat request as Anthropic's /v1/messages wants it."""
    system, turns = _turns(_dicts(chat.get("messages")))
    max_tokens = chat.get("max_tokens") or chat.get("max_completion_tokens") or DEFAULT_MAX_TOKENS
    body: dict[str, Any] = {
        "model": model,
        "messages": turns,
        "max_tokens": max_tokens,
        "stream": stream,
    }
    if system:
        body["system"] = system
    if chat.get("temperature") is not None:  # OpenAI's range is 0..2, Anthropic's 0..1
        body["temperature"] = min(float(chat["temperature"]), 1.0)
    if chat.get("top_p") is not None:
        body["top_p"] = chat["top_p"]
    stop = chat.get("stop")
    if stop:
        body["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    tools = [t.get("function") for t in _dicts(chat.get("tools"))]
    if tools:
        body["tools"] = [
            {
                "name": str(f.get("name", "")),
                "description": str(f.get("description", "")),
                "input_schema": f.get("parameters") or {"type": "object", "properties": {}},
            }
            for f in tools
            if isinstance(f, dict)
        ]
    choice = _tool_choice(chat.get("tool_choice"), chat.get("parallel_tool_calls"))
    if choice is not None and tools:
        body["tool_choice"] = choice
    if isinstance(chat.get("user"), str):
        body["metadata"] = {"user_id": chat["user"]}
    return body


def _usage(usage: dict[str, Any]) -> dict[str, int]:
    """Cache reads and writes are prompt tokens too, billed here at the model's prompt price."""
    prompt = sum(
        int(usage.get(key) or 0)
        for key in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )
    completion = int(usage.get("output_tokens") or 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _check_counts(usage: Any) -> dict[str, Any]:
    if not isinstance(usage, dict):
        raise ValueError("usage is not an object")
    for key, value in usage.items():
        counted = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        if key.endswith("_tokens") and value is not None and not counted:
            raise ValueError(f"usage.{key} is {value!r}, not a token count")
    return usage


def _openai_call(block: dict[str, Any]) -> dict[str, Any]:
    """A tool_use block as an OpenAI tool call (its input as a JSON string)."""
    function = {"name": str(block.get("name", "")), "arguments": json.dumps(block.get("input", {}))}
    return {"id": str(block.get("id", "")), "type": "function", "function": function}


def completion_from_message(data: Any) -> dict[str, Any]:
    """A Messages API answer as an OpenAI completion; ValueError naming what is not right."""
    if not isinstance(data, dict):
        raise ValueError(f"the body is {type(data).__name__}, not an object")
    content = data.get("content")
    if data.get("type") != "message" or not isinstance(content, list):
        raise ValueError("it is not a message with a list of content blocks")
    usage = _check_counts(data.get("usage") or {})
    text = "".join(
        str(b.get("text", "")) for b in content if isinstance(b, dict) and b.get("type") == "text"
    )
    calls = [
        _openai_call(b) for b in content if isinstance(b, dict) and b.get("type") == "tool_use"
    ]
    reply: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        reply["tool_calls"] = calls
    return {
        "id": str(data.get("id") or f"msg_{secrets.token_hex(12)}"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": str(data.get("model", "")),
        "choices": [
            {
                "index": 0,
                "message": reply,
                "finish_reason": _FINISH.get(str(data.get("stop_reason")), "stop"),
            }
        ],
        "usage": _usage(usage),
    }


class StreamError(Exception):
    """An `error` event in a stream that began with a 200: `status` and `error` say which."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(str(error.get("message", "error")))
        self.error = error
        self.status = status_of(str(error.get("type")))


class ChunkTranslator:
    """Anthropic stream events in, OpenAI chunks out; `done` once `message_stop` was seen.

    Each tool_use block becomes one tool call (its index counted among tool blocks), its
    input_json_delta pieces that call's `arguments`; usage comes in the last chunk, as OpenAI
    sends it with `include_usage`. `see` raises StreamError for an `error` event and ValueError
    for an event that is not one.
    """

    def __init__(self) -> None:
        self.done = False
        self._created = int(time.time())
        self._id = f"msg_{secrets.token_hex(12)}"
        self._model = ""
        self._usage: dict[str, Any] = {}
        self._tools: dict[int, int] = {}  # content block index -> tool call index

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    def see(self, data: Any) -> list[dict[str, Any]]:
        if not isinstance(data, dict):
            raise ValueError("a stream event is not an object")
        kind = data.get("type")
        if kind == "error":
            error = data.get("error")
            raise StreamError(error if isinstance(error, dict) else {"type": "api_error"})
        if kind == "message_start":
            start = data.get("message")
            if not isinstance(start, dict):
                raise ValueError("message_start has no message")
            self._id = str(start.get("id") or self._id)
            self._model = str(start.get("model", ""))
            self._usage.update(_check_counts(start.get("usage") or {}))
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            block = data.get("content_block")
            if not isinstance(block, dict):
                raise ValueError("content_block_start has no content_block")
            if block.get("type") == "tool_use":
                index = self._tools.setdefault(_index(data.get("index")), len(self._tools))
                call = {
                    "index": index,
                    "id": str(block.get("id", "")),
                    "type": "function",
                    "function": {"name": str(block.get("name", "")), "arguments": ""},
                }
                return [self._chunk({"tool_calls": [call]})]
            if block.get("type") == "text" and block.get("text"):
                return [self._chunk({"content": str(block["text"])})]
            return []
        if kind == "content_block_delta":
            delta = data.get("delta")
            if not isinstance(delta, dict):
                raise ValueError("content_block_delta has no delta")
            if delta.get("type") == "text_delta":
                return [self._chunk({"content": str(delta.get("text", ""))})]
            if delta.get("type") == "input_json_delta":
                index = self._tools.get(_index(data.get("index")), 0)
                call = {
                    "index": index,
                    "function": {"arguments": str(delta.get("partial_json", ""))},
                }
                return [self._chunk({"tool_calls": [call]})]
            return []  # thinking and signature deltas are not passed on
        if kind == "message_delta":
            self._usage.update(_check_counts(data.get("usage") or {}))
            delta = data.get("delta")
            stop = delta.get("stop_reason") if isinstance(delta, dict) else None
            return [self._chunk({}, _FINISH.get(str(stop), "stop"))] if stop else []
        if kind == "message_stop":
            self.done = True
            last = self._chunk({})
            last["choices"] = []
            last["usage"] = _usage(self._usage)
            return [last]
        return []  # ping, content_block_stop, and event types added later


# --- inbound: POST /v1/messages on the gateway ------------------------------------------------


def _openai_parts(blocks: list[Any]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for block in blocks:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            parts.append({"type": "text", "text": str(block.get("text", ""))})
        elif block.get("type") == "image" and isinstance(block.get("source"), dict):
            source = block["source"]
            if source.get("type") == "base64":
                url = f"data:{source.get('media_type')};base64,{source.get('data')}"
            else:
                url = str(source.get("url", ""))
            parts.append({"type": "image_url", "image_url": {"url": url}})
    return parts


def _openai_messages(turn: dict[str, Any]) -> list[dict[str, Any]]:
    """One Anthropic turn as OpenAI messages: tool results become `tool` messages first."""
    role = "assistant" if turn.get("role") == "assistant" else "user"
    content = turn.get("content")
    if not isinstance(content, list):
        return [{"role": role, "content": str(content or "")}]
    out: list[dict[str, Any]] = [
        {
            "role": "tool",
            "tool_call_id": str(b.get("tool_use_id", "")),
            "content": _text(b.get("content")),
        }
        for b in content
        if isinstance(b, dict) and b.get("type") == "tool_result"
    ]
    parts = _openai_parts(content)
    calls = [
        _openai_call(b) for b in content if isinstance(b, dict) and b.get("type") == "tool_use"
    ]
    if role == "assistant":
        text = "".join(p["text"] for p in parts if p["type"] == "text")
        reply: dict[str, Any] = {"role": "assistant", "content": text or None}
        if calls:
            reply["tool_calls"] = calls
        if text or calls:
            out.append(reply)
    elif parts:
        out.append({"role": "user", "content": parts})
    return out


def _openai_tool_choice(choice: Any) -> Any:
    if not isinstance(choice, dict):
        return None
    kind = choice.get("type")
    if kind == "tool":
        return {"type": "function", "function": {"name": str(choice.get("name", ""))}}
    return {"auto": "auto", "any": "required", "none": "none"}.get(str(kind))


def chat_from_messages(body: dict[str, Any]) -> dict[str, Any] | str:
    """The OpenAI chat request an Anthropic Messages request asks for, or what is wrong with it
    (a sentence for a 400). Anthropic requires `max_tokens` (request_shape.py bounds it from 1):
    a request without it is refused in Anthropic's words, not sent on with a default."""
    if body.get("max_tokens") is None:
        return "max_tokens: Field required"
    turns = body.get("messages")
    if not (isinstance(turns, list) and turns):
        return "the request needs a list of 'messages'"
    system = body.get("system")
    messages: list[dict[str, Any]] = []
    if system:
        messages.append({"role": "system", "content": _text(system)})
    for turn in turns:
        messages.extend(_openai_messages(turn))
    chat: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    for key in ("max_tokens", "temperature", "top_p", "stream"):
        if body.get(key) is not None:
            chat[key] = body[key]
    if body.get("stop_sequences"):
        chat["stop"] = body["stop_sequences"]
    tools = _dicts(body.get("tools"))
    for i, tool in enumerate(tools):
        if tool.get("type") not in (None, "custom"):
            return f"tools[{i}]: server tools ({clip(tool.get('type'))}) are not translated"
    if tools:
        chat["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": str(t.get("name", "")),
                    "description": str(t.get("description", "")),
                    "parameters": t.get("input_schema") or {"type": "object", "properties": {}},
                },
            }
            for t in tools
        ]
        choice = body.get("tool_choice")
        if (picked := _openai_tool_choice(choice)) is not None:
            chat["tool_choice"] = picked
        if isinstance(choice, dict) and choice.get("disable_parallel_tool_use") is True:
            chat["parallel_tool_calls"] = False
    user = (body.get("metadata") or {}).get("user_id")
    if isinstance(user, str):
        chat["user"] = user
    return chat


def message_from_completion(completion: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI completion as a Messages API answer; its id is the completion's as a message
    id (message_id), so the answer can be scored with POST /v1/feedback."""
    choice = (completion.get("choices") or [{}])[0]
    reply = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    text = _text(reply.get("content"))
    if text:
        content.append({"type": "text", "text": text})
    content += [_tool_use(c) for c in _dicts(reply.get("tool_calls"))]
    usage = completion.get("usage") or {}
    return message(
        str(completion.get("model", "")),
        content,
        _STOP.get(str(choice.get("finish_reason")), "end_turn"),
        int(usage.get("prompt_tokens") or 0),
        int(usage.get("completion_tokens") or 0),
        message_id=message_id(completion.get("id")),
    )


class EventEncoder:
    """OpenAI chunks in, Anthropic stream events out (`feed` per chunk, `end` once).

    `message_start` goes first with the completion's id; text and each tool call get their own
    content block; `end` closes the open block and sends `message_delta` with the stop reason
    and the usage (input tokens too: an OpenAI stream only counts at its end) and
    `message_stop`.
    """

    def __init__(self, model: str) -> None:
        self._model = model
        self._started = False
        self._block: tuple[str, int] | None = None  # ("text", -1) or ("tool", call index)
        self._index = -1
        self._stop = "end_turn"

    def _start(self, completion_id: str | None) -> list[str]:
        if self._started:
            return []
        self._started = True
        start = message(self._model, [], None, 0, 0, message_id=message_id(completion_id))
        return [event("message_start", {"message": start})]

    def _open(self, block: tuple[str, int], content_block: dict[str, Any]) -> list[str]:
        out = self._close()
        self._index += 1
        self._block = block
        out.append(
            event("content_block_start", {"index": self._index, "content_block": content_block})
        )
        return out

    def _close(self) -> list[str]:
        if self._block is None:
            return []
        self._block = None
        return [event("content_block_stop", {"index": self._index})]

    def _delta(self, delta: dict[str, Any]) -> str:
        return event("content_block_delta", {"index": self._index, "delta": delta})

    def feed(self, chunk: dict[str, Any]) -> list[str]:
        out = self._start(chunk.get("id"))
        for choice in _dicts(chunk.get("choices")):
            delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
            text = delta.get("content")
            if isinstance(text, str) and text:
                if self._block != ("text", -1):
                    out += self._open(("text", -1), {"type": "text", "text": ""})
                out.append(self._delta({"type": "text_delta", "text": text}))
            for call in _dicts(delta.get("tool_calls")):
                index = call.get("index") if isinstance(call.get("index"), int) else 0
                function = call.get("function") if isinstance(call.get("function"), dict) else {}
                if self._block != ("tool", index):
                    block = {
                        "type": "tool_use",
                        "id": str(call.get("id") or f"toolu_{secrets.token_hex(8)}"),
                        "name": str(function.get("name", "")),
                        "input": {},
                    }
                    out += self._open(("tool", index), block)
                if function.get("arguments"):
                    partial = {"type": "input_json_delta", "partial_json": function["arguments"]}
                    out.append(self._delta(partial))
            if choice.get("finish_reason"):
                self._stop = _STOP.get(str(choice["finish_reason"]), "end_turn")
        return out

    def end(self, usage: dict[str, Any] | None) -> list[str]:
        usage = usage or {}
        counts = {
            "input_tokens": int(usage.get("prompt_tokens") or 0),
            "output_tokens": int(usage.get("completion_tokens") or 0),
        }
        delta = {"stop_reason": self._stop, "stop_sequence": None}
        return [
            *self._start(None),
            *self._close(),
            event("message_delta", {"delta": delta, "usage": counts}),
            event("message_stop", {}),
        ]

    def failed(self, status: int, body: dict[str, Any]) -> list[str]:
        """An `error` event, for a stream the model cut after its headers were sent."""
        return [event("error", error_from_openai(status, body))]
