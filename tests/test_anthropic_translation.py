"""The Anthropic translation never crashes on what a client or a model may send: whatever the
fields hold (once the gateway's own shape checks pass), each function answers or raises the one
error its caller turns into a 400 or a `malformed` failure, never a 500."""

from __future__ import annotations

import itertools
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from canaryctl.gateway import anthropic
from canaryctl.gateway.request_shape import shape_problem

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)
KEYS = ("type", "text", "content", "role", "tool_calls", "function", "arguments", "id", "name")
BLOCKS = st.dictionaries(
    st.sampled_from((*KEYS, "source", "input", "tool_use_id", "image_url", "index", "delta")),
    JSON | st.sampled_from(["text", "tool_use", "tool_result", "image", "image_url", "base64"]),
    max_size=5,
)
TURNS = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system", "tool", "x"])},
        optional={"content": JSON | st.lists(BLOCKS, max_size=3), "tool_calls": JSON},
    ),
    min_size=1,
    max_size=4,
)
FIELDS = ("tools", "tool_choice", "stop", "temperature", "top_p", "max_tokens", "system", "user")
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(messages=TURNS, extra=st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=4))
def test_any_openai_request_the_gateway_accepts_translates(
    messages: list[dict[str, Any]], extra: dict[str, Any]
) -> None:
    chat = {"model": "r", "messages": messages, **extra}
    if shape_problem("openai", chat):
        return
    body = anthropic.messages_request(chat, "claude", stream=False)
    json.dumps(body)
    roles = [turn["role"] for turn in body["messages"]]
    assert all(a != b for a, b in itertools.pairwise(roles)), "turns must alternate"
    assert body["max_tokens"] >= 0


@FUZZ
@given(
    messages=TURNS,
    extra=st.dictionaries(
        st.sampled_from(("system", "tools", "tool_choice", "stop_sequences", "metadata")),
        JSON | st.lists(BLOCKS, max_size=2),
        max_size=4,
    ),
)
def test_any_messages_request_the_gateway_accepts_translates_or_is_refused(
    messages: list[dict[str, Any]], extra: dict[str, Any]
) -> None:
    body = {"model": "r", "messages": messages, "max_tokens": 10, **extra}
    if shape_problem("anthropic", body):
        return
    chat = anthropic.chat_from_messages(body)
    assert isinstance(chat, str) or json.dumps(chat)


@FUZZ
@given(
    data=JSON
    | BLOCKS
    | st.fixed_dictionaries(
        {
            "type": st.sampled_from(
                [
                    "message_start",
                    "content_block_start",
                    "content_block_delta",
                    "message_delta",
                    "message_stop",
                    "error",
                    "ping",
                ]
            )
        },
        optional={
            "message": JSON,
            "content_block": BLOCKS,
            "delta": BLOCKS | JSON,
            "usage": JSON,
            "index": JSON,
            "error": JSON,
        },
    )
)
def test_any_stream_event_translates_or_is_malformed(data: Any) -> None:
    try:
        chunks = anthropic.ChunkTranslator().see(data)
    except (ValueError, anthropic.StreamError):
        return
    json.dumps(chunks)


@FUZZ
@given(
    chunks=st.lists(
        st.dictionaries(
            st.sampled_from(("id", "choices", "usage")),
            JSON
            | st.lists(
                st.fixed_dictionaries({}, optional={"delta": BLOCKS | JSON, "finish_reason": JSON}),
                max_size=2,
            ),
        ),
        max_size=4,
    )
)
def test_any_chunks_encode_as_events(chunks: list[dict[str, Any]]) -> None:
    encoder = anthropic.EventEncoder("claude")
    events = [e for chunk in chunks for e in encoder.feed(chunk)]
    events += encoder.end({"prompt_tokens": 3, "completion_tokens": 4})
    names = [e.split("\n", 1)[0].removeprefix("event: ") for e in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert names.count("content_block_start") == names.count("content_block_stop")


def test_a_messages_request_without_max_tokens_is_refused_as_anthropic_refuses_it() -> None:
    """Anthropic requires max_tokens, at least 1; the gateway's 400 says so in its words."""
    turns = [{"role": "user", "content": "Hi"}]
    assert anthropic.chat_from_messages({"model": "r", "messages": turns}) == (
        "max_tokens: Field required"
    )
    for count in (0, -1):
        body = {"model": "r", "messages": turns, "max_tokens": count}
        assert shape_problem("anthropic", body) == (
            "max_tokens: must be a whole number from 1 to 10000000"
        )
    assert shape_problem("anthropic", {"model": "r", "messages": turns, "max_tokens": 1}) is None


def test_a_message_id_is_the_completion_id_as_a_message_id() -> None:
    """Anthropic's ids start msg_; the gateway's signed part is kept, so feedback reads it."""
    completion = {"id": "chatcmpl-abc.def", "model": "m", "choices": [], "usage": {}}
    assert anthropic.message_from_completion(completion)["id"] == "msg_abc.def"
    events = anthropic.EventEncoder("m").feed({"id": "chatcmpl-abc.def", "choices": []})
    assert '"id": "msg_abc.def"' in events[0]
