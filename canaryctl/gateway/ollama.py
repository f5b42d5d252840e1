"""The Ollama dialect, both ways: the gateway speaks OpenAI inside and translates at its edges.

Inbound, `/api/chat` and `/api/generate` requests become OpenAI chat requests and their answers go
back as Ollama JSON or NDJSON. Outbound, a model with `provider: ollama` is sent `/api/chat` and its
replies are turned into OpenAI completions and chunks, token counts included, so metering and
fallback never need to know which dialect a model speaks.
"""

from __future__ import annotations

import time
from typing import Any, Literal

__all__ = [
    "Dialect",
    "chat_request",
    "chunks_from_ollama",
    "completion_from_ollama",
    "embeddings_from_ollama",
    "ollama_line",
    "ollama_request",
    "ollama_response",
]

Dialect = Literal["openai", "chat", "generate", "anthropic"]
"""What the client spoke: OpenAI chat completions, Ollama /api/chat, Ollama /api/generate, or
Anthropic's Messages API (/v1/messages, translated by anthropic.py)."""


def chat_request(dialect: Dialect, body: dict[str, Any]) -> dict[str, Any] | None:
    """The OpenAI chat request a client's body asks for; None when it has nothing to answer."""
    if dialect == "openai":
        messages = body.get("messages")
        if not (isinstance(messages, list) and messages):
            return None
        return body if all(isinstance(m, dict) for m in messages) else None
    if dialect == "chat":
        messages = body.get("messages")
        if not (isinstance(messages, list) and messages):
            return None
    else:
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            return None
        system = [{"role": "system", "content": body["system"]}] if body.get("system") else []
        messages = [*system, {"role": "user", "content": prompt}]
    options = body.get("options") or {}
    chat: dict[str, Any] = {
        "model": body.get("model"),
        "messages": messages,
        "stream": body.get("stream", True) is not False,
    }
    if "num_predict" in options:
        chat["max_tokens"] = options["num_predict"]
    for key in ("temperature", "top_p", "stop", "seed"):
        if key in options:
            chat[key] = options[key]
    return chat


def ollama_response(dialect: Dialect, completion: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI completion as the one JSON object Ollama returns when `stream` is false."""
    choices = completion.get("choices") or [{}]
    text = (choices[0].get("message") or {}).get("content") or ""
    return ollama_line(dialect, str(completion.get("model", "")), text, completion.get("usage"))


def ollama_line(
    dialect: Dialect, model: str, text: str, usage: dict[str, Any] | None, *, done: bool = True
) -> dict[str, Any]:
    line: dict[str, Any] = {
        "model": model,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "done": done,
    }
    if dialect == "chat":
        line["message"] = {"role": "assistant", "content": text}
    else:
        line["response"] = text
    if done:
        line["done_reason"] = "stop"
        if usage:
            line["prompt_eval_count"] = usage.get("prompt_tokens", 0)
            line["eval_count"] = usage.get("completion_tokens", 0)
    return line


def ollama_request(chat: dict[str, Any], model: str, *, stream: bool) -> dict[str, Any]:
    """An OpenAI chat request as Ollama's /api/chat wants it (options carry the knobs)."""
    options: dict[str, Any] = {}
    if chat.get("max_tokens") is not None:
        options["num_predict"] = chat["max_tokens"]
    for key in ("temperature", "top_p", "stop", "seed"):
        if chat.get(key) is not None:
            options[key] = chat[key]
    messages = [
        {"role": m.get("role", "user"), "content": _text(m.get("content"))}
        for m in chat["messages"]
    ]
    return {"model": model, "messages": messages, "stream": stream, "options": options}


def _text(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content or "")


def _usage(data: dict[str, Any]) -> dict[str, int]:
    prompt = int(data.get("prompt_eval_count") or 0)
    completion = int(data.get("eval_count") or 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def embeddings_from_ollama(data: dict[str, Any]) -> dict[str, Any]:
    """Ollama's /api/embed answer as OpenAI's embeddings list."""
    vectors = data.get("embeddings")
    vectors = vectors if isinstance(vectors, list) else []
    prompt = int(data.get("prompt_eval_count") or 0)
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": vector}
            for i, vector in enumerate(vectors)
        ],
        "model": data.get("model", ""),
        "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
    }


def completion_from_ollama(data: dict[str, Any], completion_id: str) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": data.get("model", ""),
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": (data.get("message") or {}).get("content", ""),
                },
                "finish_reason": data.get("done_reason", "stop"),
            }
        ],
        "usage": _usage(data),
    }


def chunks_from_ollama(data: dict[str, Any], completion_id: str) -> list[dict[str, Any]]:
    """One NDJSON line as OpenAI chunks; the last line also yields the finish and usage chunks."""
    base = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": data.get("model", ""),
    }
    content = (data.get("message") or {}).get("content", "")
    chunks = []
    if content:
        delta = {"role": "assistant", "content": content}
        chunks.append({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
    if data.get("done"):
        reason = data.get("done_reason", "stop")
        chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": reason}]})
        chunks.append({**base, "choices": [], "usage": _usage(data)})
    return chunks
