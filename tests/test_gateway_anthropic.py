"""Claude behind the gateway and in front of it, over loopback with the official clients.

Lab providers with `api: anthropic` answer in Anthropic's shapes; the `openai` client talks to
routes they serve (plain, streamed, tools), the `anthropic` client to the gateway's
`/v1/messages` (plain, streamed, tools, errors), and fallbacks cross providers both ways. What
the lab said is known independently: its draws replay from its seed (behaviour.decide), and its
prompt token count is asked of the lab provider directly.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from canaryctl.chaos import ChaosClient
from canaryctl.chaos.proxy import create_proxy_app
from canaryctl.chaos.server import BackgroundServer
from canaryctl.lab import LabStack
from canaryctl.lab.behaviour import Behaviour, decide, request_rng
from canaryctl.lab.provider import SimulatedProvider
from canaryctl.runbook.lab import LabSpec, ProviderProfile
from canaryctl.runbook.scenario import FaultSpec

FAST = {"median": 0.001, "p95": 0.002}
TOKENS = {"completion_mean": 30, "completion_max": 60}
KEY = "sk-ant-test-not-a-real-key"
CLAUDE_PRICE = {"prompt_per_1k": 0.003, "completion_per_1k": 0.015}
GPT_PRICE = {"prompt_per_1k": 0.03, "completion_per_1k": 0.06}
QUESTION = "What is 17 + 25?"
SYSTEM = "You are a careful calculator."
CALCULATOR = {
    "name": "calculator",
    "description": "Evaluates an arithmetic expression.",
    "input_schema": {
        "type": "object",
        "properties": {"expression": {"type": "string"}},
        "required": ["expression"],
    },
}
OPENAI_CALCULATOR = {
    "type": "function",
    "function": {
        "name": CALCULATOR["name"],
        "description": CALCULATOR["description"],
        "parameters": CALCULATOR["input_schema"],
    },
}


class Recorder:
    """An Anthropic-shaped upstream that keeps what it was sent; `/<kind>/v1/messages` answers
    a message (`ok`), a refusal (`refuses`), a 200 stream that is an overloaded error
    (`overloaded-stream`), or a stream that breaks after its first words (`breaks`)."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.app = Starlette(routes=[Route("/{kind}/v1/messages", self._answer, methods=["POST"])])

    async def _answer(self, request: Request) -> Response:
        body = json.loads(await request.body())
        self.requests.append((dict(request.headers), body))
        kind = request.path_params["kind"]
        if kind == "breaks":
            delta = {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "The answer is"},
            }
            first = (
                'event: message_start\ndata: {"type": "message_start", "message": {"id": "msg_b", '
                '"model": "c", "usage": {"input_tokens": 3, "output_tokens": 1}}}\n\n'
                f"event: content_block_delta\ndata: {json.dumps(delta)}\n\n"
            )

            async def parts() -> AsyncIterator[str]:
                yield first
                await asyncio.sleep(0.2)  # the gateway has passed the first words on by then
                yield 'event: content_block_delta\ndata: {"type": "content_blo\n\n'

            return StreamingResponse(parts(), media_type="text/event-stream")
        if kind == "overloaded-stream":
            error = {
                "type": "error",
                "error": {"type": "overloaded_error", "message": "Overloaded"},
            }
            start = {
                "type": "message_start",
                "message": {
                    "id": "msg_x",
                    "type": "message",
                    "role": "assistant",
                    "model": "c",
                    "content": [],
                    "stop_reason": None,
                    "usage": {"input_tokens": 3, "output_tokens": 1},
                },
            }
            text = (
                f"event: message_start\ndata: {json.dumps(start)}\n\n"
                f"event: error\ndata: {json.dumps(error)}\n\n"
            )
            return Response(text, media_type="text/event-stream")
        refused = kind == "refuses"
        return JSONResponse(
            {
                "id": "msg_01",
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": [] if refused else [{"type": "text", "text": "42"}],
                "stop_reason": "refusal" if refused else "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": 11, "output_tokens": 0 if refused else 2},
            }
        )


class World:
    def __init__(self, stack: LabStack, recorder: Recorder) -> None:
        self.stack, self.recorder = stack, recorder
        self.openai = openai.OpenAI(
            base_url=stack.gateway_url + "/v1", api_key="unused", max_retries=0
        )
        self.anthropic = anthropic.Anthropic(
            base_url=stack.gateway_url, api_key="unused", max_retries=0
        )

    def replay(self, provider: str, question: str, max_tokens: int | None) -> Behaviour:
        """What the provider drew for the last request it numbered."""
        profile = next(p for p in self.stack.spec.providers if p.name == provider)
        sequence = self.stack.providers[provider].requests
        rng = request_rng(self.stack.spec.seed, provider, sequence)
        return decide(profile, question, rng, max_tokens=max_tokens, sequence=sequence)

    def claude_prompt_tokens(self) -> int:
        """The lab's own count for SYSTEM + QUESTION, asked of Claude directly."""
        direct = anthropic.Anthropic(
            base_url=self.stack.provider_urls["claude"], api_key="unused", max_retries=0
        )
        answer = direct.messages.create(
            model="claude-sonnet-4-5",
            max_tokens=10,
            system=SYSTEM,
            messages=[{"role": "user", "content": QUESTION}],
        )
        return answer.usage.input_tokens

    def gpt_prompt_tokens(self) -> int:
        direct = openai.OpenAI(base_url=self.stack.provider_urls["gpt"] + "/v1", api_key="unused")
        answer = direct.chat.completions.create(
            model="gpt-4",
            max_tokens=10,
            messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}],
        )
        assert answer.usage is not None
        return answer.usage.prompt_tokens

    def count(self, name: str, **labels: str) -> float:
        text = httpx.get(self.stack.metrics_url).text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        )


def _flags(path: Path, models: list[str]) -> None:
    flags = {
        f"f-{name}": {
            "key": f"f-{name}",
            "on": True,
            "variations": [name],
            "fallthrough": {"variation": 0},
            "offVariation": 0,
            "version": 1,
            "salt": name,
            "targets": [],
            "contextTargets": [],
            "rules": [],
            "prerequisites": [],
            "trackEvents": False,
        }
        for name in models
    }
    path.write_text(json.dumps({"flags": flags, "segments": {}}))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("anthropic")
    mp = pytest.MonkeyPatch()
    mp.setenv("CLAUDE_TEST_KEY", KEY)
    recorder = Recorder()
    with BackgroundServer(recorder.app) as upstream:
        claude = {"provider": "anthropic", "upstream_model": "claude-sonnet-4-5"}
        models: list[dict[str, Any]] = [
            {"name": "claude-sonnet", "base_url": "lab://claude", "price": CLAUDE_PRICE, **claude},
            {"name": "gpt-4", "base_url": "lab://gpt", "price": GPT_PRICE},
            {
                "name": "claude-overloaded",
                "base_url": "lab://claude-overloaded",
                "fallback": ["gpt-4"],
                **claude,
            },
            {"name": "claude-overloaded-alone", "base_url": "lab://claude-overloaded", **claude},
            {"name": "claude-limited", "base_url": "lab://claude-limited", **claude},
            {
                "name": "claude-doomed",
                "base_url": "lab://claude-overloaded",
                "fallback": ["gpt-down"],
                **claude,
            },
            {"name": "gpt-down", "base_url": "lab://gpt-down", "fallback": ["claude-sonnet"]},
            {
                "name": "claude-recorded",
                "base_url": f"{upstream.url}/ok",
                "api_key_env": "CLAUDE_TEST_KEY",
                **claude,
            },
            {
                "name": "claude-refuses",
                "base_url": f"{upstream.url}/refuses/v1",
                "fallback": ["gpt-4"],
                **claude,
            },
            {"name": "claude-breaks", "base_url": f"{upstream.url}/breaks", **claude},
            {
                "name": "claude-stream-overloaded",
                "base_url": f"{upstream.url}/overloaded-stream",
                "fallback": ["gpt-4"],
                **claude,
            },
        ]
        names = [m["name"] for m in models]
        _flags(tmp / "flags.json", names)
        spec = LabSpec.model_validate(
            {
                "seed": 7,
                "providers": [
                    {"name": "claude", "api": "anthropic", "latency": FAST, "tokens": TOKENS},
                    {"name": "gpt", "latency": FAST, "tokens": TOKENS},
                    {
                        "name": "claude-overloaded",
                        "api": "anthropic",
                        "latency": FAST,
                        "errors": {"rate": 1.0, "kinds": {"529": 1.0}},
                    },
                    {
                        "name": "claude-limited",
                        "api": "anthropic",
                        "latency": FAST,
                        "errors": {"rate": 1.0, "kinds": {"429": 1.0}, "retry_after": 7},
                    },
                    {
                        "name": "gpt-down",
                        "latency": FAST,
                        "errors": {"rate": 1.0, "kinds": {"503": 1.0}},
                    },
                ],
                "gateway": {
                    "listen": "127.0.0.1:0",
                    "flags": {"provider": "file", "path": str(tmp / "flags.json")},
                    "routes": [
                        {"name": f"r-{n}", "flag": f"f-{n}", "default_model": n} for n in names
                    ],
                    "models": models,
                },
            }
        )
        with LabStack(spec, traffic=False) as stack:
            yield World(stack, recorder)
    mp.undo()


def _chat() -> list[dict[str, Any]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]


# --- the openai client, routes served by Claude --------------------------------------------------


def test_openai_client_gets_claudes_answer_with_its_tokens_and_cost(world: World) -> None:
    labels = {"route": "r-claude-sonnet", "model": "claude-sonnet"}
    cost_before = world.count("llm_cost_usd_total", **labels)
    raw = world.openai.chat.completions.with_raw_response.create(
        model="r-claude-sonnet", messages=_chat(), max_tokens=50
    )
    answer = raw.parse()
    drawn = world.replay("claude", QUESTION, 50)
    assert raw.headers["x-canaryctl-model"] == "claude-sonnet"
    assert answer.choices[0].message.content == drawn.text
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None
    assert answer.usage.completion_tokens == drawn.completion_tokens
    assert answer.usage.prompt_tokens == world.claude_prompt_tokens()
    cost = world.count("llm_cost_usd_total", **labels) - cost_before
    expected = (answer.usage.prompt_tokens * 0.003 + answer.usage.completion_tokens * 0.015) / 1000
    assert cost == pytest.approx(expected)
    assert world.count("llm_requests_total", **labels, outcome="ok") >= 1
    assert world.count("llm_tokens_total", **labels, kind="completion") >= drawn.completion_tokens


def test_openai_client_streams_claude_with_usage_at_the_end(world: World) -> None:
    stream = world.openai.chat.completions.create(
        model="r-claude-sonnet",
        messages=_chat(),
        max_tokens=40,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    drawn = world.replay("claude", QUESTION, 40)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert text == drawn.text
    assert finishes[-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == drawn.completion_tokens
    assert chunks[-1].usage.prompt_tokens == world.claude_prompt_tokens()


def test_openai_client_calls_a_tool_through_claude_and_hears_back(world: World) -> None:
    first = world.openai.chat.completions.create(
        model="r-claude-sonnet", messages=_chat(), tools=[OPENAI_CALCULATOR]
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.function.name == "calculator"
    assert json.loads(call.function.arguments) == {"expression": QUESTION}
    assert call.id.startswith("toolu_")
    follow_up = [
        *_chat(),
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "42"},
    ]
    second = world.openai.chat.completions.create(
        model="r-claude-sonnet", messages=follow_up, tools=[OPENAI_CALCULATOR]
    )
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == world.replay("claude", "42", None).text


def test_openai_client_streams_a_tool_call_through_claude(world: World) -> None:
    stream = world.openai.chat.completions.create(
        model="r-claude-sonnet", messages=_chat(), tools=[OPENAI_CALCULATOR], stream=True
    )
    calls = [
        call
        for chunk in stream
        if chunk.choices
        for call in chunk.choices[0].delta.tool_calls or []
    ]
    assert calls[0].function is not None and calls[0].function.name == "calculator"
    arguments = "".join(c.function.arguments or "" for c in calls if c.function)
    assert json.loads(arguments) == {"expression": QUESTION}


def test_claude_overloaded_falls_back_to_gpt_and_counts_against_claude(world: World) -> None:
    labels = {"route": "r-claude-overloaded", "variant": "claude-overloaded"}
    before = world.count("llm_requests_total", **labels, outcome="fallback_ok")
    moves = world.count("llm_fallbacks_total", **labels, reason="http_529")
    raw = world.openai.chat.completions.with_raw_response.create(
        model="r-claude-overloaded", messages=_chat(), max_tokens=30
    )
    assert raw.headers["x-canaryctl-model"] == "gpt-4"
    assert raw.parse().choices[0].message.content == world.replay("gpt", QUESTION, 30).text
    assert world.count("llm_requests_total", **labels, outcome="fallback_ok") == before + 1
    assert world.count("llm_fallbacks_total", **labels, reason="http_529") == moves + 1


def test_claude_overloaded_without_fallback_is_a_529_error(world: World) -> None:
    labels = {"variant": "claude-overloaded-alone"}
    before = world.count("llm_requests_total", **labels, outcome="error")
    with pytest.raises(openai.InternalServerError) as raised:
        world.openai.chat.completions.create(model="r-claude-overloaded-alone", messages=_chat())
    assert raised.value.status_code == 529
    assert raised.value.response.json()["error"]["type"] == "overloaded_error"
    assert world.count("llm_requests_total", **labels, outcome="error") == before + 1


def test_claude_rate_limit_passes_retry_after_on(world: World) -> None:
    with pytest.raises(openai.RateLimitError) as raised:
        world.openai.chat.completions.create(model="r-claude-limited", messages=_chat())
    assert raised.value.response.headers["retry-after"] == "7"
    assert raised.value.response.json()["error"]["type"] == "rate_limit_error"
    assert world.count("llm_requests_total", variant="claude-limited", outcome="error") >= 1


def test_the_request_claude_gets_is_the_messages_api_with_its_key(world: World) -> None:
    image = "data:image/png;base64,iVBORw0KGgo="
    world.openai.chat.completions.create(
        model="r-claude-recorded",
        messages=[
            {"role": "system", "content": SYSTEM},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in it?"},
                    {"type": "image_url", "image_url": {"url": image}},
                ],
            },
        ],
        temperature=1.5,
        stop="END",
        tools=[OPENAI_CALCULATOR],
        tool_choice="required",
        user="u-1",
    )
    headers, body = world.recorder.requests[-1]
    assert headers["x-api-key"] == KEY
    assert headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in headers
    assert body["model"] == "claude-sonnet-4-5"
    assert body["system"] == SYSTEM
    assert body["max_tokens"] == 4096  # Anthropic requires one; the request set none
    assert body["temperature"] == 1.0  # OpenAI's 0..2 held to Anthropic's 0..1
    assert body["stop_sequences"] == ["END"]
    assert body["tools"] == [CALCULATOR]
    assert body["tool_choice"] == {"type": "any"}
    assert body["metadata"] == {"user_id": "u-1"}
    assert body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in it?"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
                },
            ],
        }
    ]


def test_a_claude_refusal_is_filtered_and_no_fallback_is_asked(world: World) -> None:
    labels = {"variant": "claude-refuses"}
    before = world.count("llm_requests_total", **labels, outcome="filtered")
    answer = world.openai.chat.completions.create(model="r-claude-refuses", messages=_chat())
    assert answer.choices[0].finish_reason == "content_filter"
    assert world.count("llm_requests_total", **labels, outcome="filtered") == before + 1
    assert world.count("llm_fallbacks_total", **labels) == 0


def test_an_overloaded_error_event_before_content_falls_back(world: World) -> None:
    labels = {"variant": "claude-stream-overloaded"}
    stream = world.openai.chat.completions.create(
        model="r-claude-stream-overloaded", messages=_chat(), stream=True, max_tokens=20
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == world.replay("gpt", QUESTION, 20).text
    assert world.count("llm_fallbacks_total", **labels, reason="http_529") >= 1
    assert world.count("llm_requests_total", **labels, outcome="fallback_ok") >= 1


# --- the anthropic client, POST /v1/messages on the gateway ------------------------------------


def test_anthropic_client_gets_gpts_answer_as_a_message(world: World) -> None:
    labels = {"route": "r-gpt-4", "model": "gpt-4"}
    before = world.count("llm_requests_total", **labels, outcome="ok")
    raw = world.anthropic.messages.with_raw_response.create(
        model="r-gpt-4",
        max_tokens=50,
        system=SYSTEM,
        messages=[{"role": "user", "content": QUESTION}],
    )
    answer = raw.parse()
    drawn = world.replay("gpt", QUESTION, 50)
    assert raw.headers["x-canaryctl-variant"] == "gpt-4"
    assert answer.type == "message" and answer.role == "assistant"
    assert answer.content[0].type == "text" and answer.content[0].text == drawn.text
    assert answer.stop_reason == "end_turn"
    assert answer.usage.output_tokens == drawn.completion_tokens
    assert answer.usage.input_tokens == world.gpt_prompt_tokens()
    assert world.count("llm_requests_total", **labels, outcome="ok") == before + 1
    # The message's id is a message id (msg_), and it scores the answer like any other.
    assert answer.id.startswith("msg_")
    scored = httpx.post(
        world.stack.gateway_url + "/v1/feedback", json={"id": answer.id, "score": 1.0}
    )
    assert scored.status_code == 200 and scored.json()["variant"] == "gpt-4"


def test_anthropic_client_streams_through_the_gateway(world: World) -> None:
    with world.anthropic.messages.stream(
        model="r-gpt-4",
        max_tokens=40,
        system=SYSTEM,
        messages=[{"role": "user", "content": QUESTION}],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    drawn = world.replay("gpt", QUESTION, 40)
    assert text == drawn.text
    assert final.id.startswith("msg_")
    scored = httpx.post(
        world.stack.gateway_url + "/v1/feedback", json={"id": final.id, "score": 1.0}
    )
    assert scored.status_code == 200 and scored.json()["variant"] == "gpt-4"
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == drawn.completion_tokens
    assert final.usage.input_tokens == world.gpt_prompt_tokens()


def test_anthropic_client_calls_a_tool_through_the_gateway(world: World) -> None:
    messages: list[Any] = [{"role": "user", "content": QUESTION}]
    answer = world.anthropic.messages.create(
        model="r-claude-sonnet", max_tokens=100, messages=messages, tools=[CALCULATOR]
    )
    assert answer.stop_reason == "tool_use"
    use = next(b for b in answer.content if b.type == "tool_use")
    assert use.name == "calculator" and use.input == {"expression": QUESTION}
    with world.anthropic.messages.stream(
        model="r-claude-sonnet", max_tokens=100, messages=messages, tools=[CALCULATOR]
    ) as stream:
        final = stream.get_final_message()
    streamed = next(b for b in final.content if b.type == "tool_use")
    assert streamed.name == "calculator" and streamed.input == {"expression": QUESTION}
    assert final.stop_reason == "tool_use"
    reply = world.anthropic.messages.create(
        model="r-claude-sonnet",
        max_tokens=100,
        tools=[CALCULATOR],
        messages=[
            *messages,
            {"role": "assistant", "content": [use.model_dump()]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "42"}],
            },
        ],
    )
    assert reply.stop_reason == "end_turn"
    assert reply.content[0].type == "text"
    assert reply.content[0].text == world.replay("claude", "42", 100).text


def test_anthropic_client_raises_its_own_errors(world: World) -> None:
    question = [{"role": "user", "content": QUESTION}]
    with pytest.raises(anthropic.OverloadedError) as overloaded:
        world.anthropic.messages.create(
            model="r-claude-overloaded-alone", max_tokens=10, messages=question
        )
    assert overloaded.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    with pytest.raises(anthropic.RateLimitError) as limited:
        world.anthropic.messages.create(model="r-claude-limited", max_tokens=10, messages=question)
    assert limited.value.response.headers["retry-after"] == "7"
    with pytest.raises(anthropic.NotFoundError) as unknown:
        world.anthropic.messages.create(model="no-such-route", max_tokens=10, messages=question)
    assert unknown.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError):
        world.anthropic.messages.create(model="r-gpt-4", max_tokens=10, messages=[])


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ({}, "max_tokens: Field required"),
        ({"max_tokens": 0}, "max_tokens: must be a whole number from 1 to 10000000"),
    ],
)
def test_a_messages_request_follows_anthropics_max_tokens_rule(
    world: World, extra: dict[str, Any], says: str
) -> None:
    """Anthropic requires max_tokens, at least 1: the gateway answers as Anthropic would (400,
    invalid_request_error) before any model is asked."""
    asked = world.stack.providers["gpt"].requests
    body = {"model": "r-gpt-4", "messages": [{"role": "user", "content": QUESTION}], **extra}
    answer = httpx.post(world.stack.gateway_url + "/v1/messages", json=body)
    assert answer.status_code == 400
    assert answer.json() == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": says},
    }
    assert world.stack.providers["gpt"].requests == asked


def test_a_double_failure_is_counted_under_the_model_that_failed_first(world: World) -> None:
    """Claude fails (529), its fallback fails too (503): the variant is judged on its own
    model, so the request counts as claude-doomed's error, not the fallback's."""
    labels = {"route": "r-claude-doomed", "variant": "claude-doomed"}
    own = world.count("llm_requests_total", **labels, model="claude-doomed", outcome="error")
    other = world.count("llm_requests_total", **labels, model="gpt-down")
    with pytest.raises(anthropic.APIStatusError) as raised:
        world.anthropic.messages.create(
            model="r-claude-doomed", max_tokens=10, messages=[{"role": "user", "content": "Hi"}]
        )
    assert raised.value.status_code == 503  # what the last model said
    assert raised.value.response.headers["x-canaryctl-model"] == "gpt-down"
    after = world.count("llm_requests_total", **labels, model="claude-doomed", outcome="error")
    assert after == own + 1
    assert world.count("llm_requests_total", **labels, model="gpt-down") == other


@pytest.mark.parametrize(
    ("route", "answered_by", "provider"),
    [("r-claude-overloaded", "gpt-4", "gpt"), ("r-gpt-down", "claude-sonnet", "claude")],
)
def test_anthropic_client_falls_back_across_providers(
    world: World, route: str, answered_by: str, provider: str
) -> None:
    variant = route.removeprefix("r-")
    before = world.count("llm_requests_total", variant=variant, outcome="fallback_ok")
    raw = world.anthropic.messages.with_raw_response.create(
        model=route, max_tokens=30, messages=[{"role": "user", "content": QUESTION}]
    )
    assert raw.headers["x-canaryctl-model"] == answered_by
    answer = raw.parse()
    assert answer.content[0].type == "text"
    assert answer.content[0].text == world.replay(provider, QUESTION, 30).text
    assert world.count("llm_requests_total", variant=variant, outcome="fallback_ok") == before + 1


def test_a_stream_cut_after_its_first_words_is_an_error_event_the_client_raises(
    world: World,
) -> None:
    before = world.count("llm_requests_total", variant="claude-breaks", outcome="error")
    seen = []
    question = [{"role": "user", "content": "Hi"}]
    with (
        pytest.raises(anthropic.APIStatusError) as raised,
        world.anthropic.messages.stream(
            model="r-claude-breaks", max_tokens=10, messages=question
        ) as stream,
    ):
        for text in stream.text_stream:
            seen.append(text)
    assert seen == ["The answer is"]
    assert "malformed" in str(raised.value)
    assert world.count("llm_requests_total", variant="claude-breaks", outcome="error") == before + 1


def test_anthropic_clients_key_is_a_virtual_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Anthropic's SDK sends its key as x-api-key: with virtual keys it names the caller, and a
    key the gateway does not know is Anthropic's 401, raised as the SDK's AuthenticationError."""
    monkeypatch.setenv("APP_KEY", "sk-app-test-key")
    _flags(tmp_path / "flags.json", ["gpt-4"])
    spec = LabSpec.model_validate(
        {
            "providers": [{"name": "gpt", "latency": FAST, "tokens": TOKENS}],
            "gateway": {
                "listen": "127.0.0.1:0",
                "flags": {"provider": "file", "path": str(tmp_path / "flags.json")},
                "routes": [{"name": "r-gpt-4", "flag": "f-gpt-4", "default_model": "gpt-4"}],
                "models": [{"name": "gpt-4", "base_url": "lab://gpt"}],
                "auth": {"keys": [{"id": "app", "key_env": "APP_KEY", "tier": "paid"}]},
            },
        }
    )
    question: list[Any] = [{"role": "user", "content": QUESTION}]
    with LabStack(spec, traffic=False) as stack:
        good = anthropic.Anthropic(
            base_url=stack.gateway_url, api_key="sk-app-test-key", max_retries=0
        )
        answer = good.messages.create(model="r-gpt-4", max_tokens=10, messages=question)
        assert answer.content[0].type == "text"
        text = httpx.get(stack.metrics_url).text
        assert 'tier="paid"' in text and 'route="r-gpt-4"' in text
        wrong = anthropic.Anthropic(base_url=stack.gateway_url, api_key="sk-wrong", max_retries=0)
        with pytest.raises(anthropic.AuthenticationError) as refused:
            wrong.messages.create(model="r-gpt-4", max_tokens=10, messages=question)
    assert refused.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    assert "sk-wrong" not in str(refused.value.body)


def test_a_messages_request_shares_the_cache_with_its_openai_twin(tmp_path: Path) -> None:
    """The cache keys the translated request, so Anthropic's and OpenAI's way of asking the same
    question at temperature 0 are one entry, served in each client's own shape."""
    _flags(tmp_path / "flags.json", ["gpt-4"])
    spec = LabSpec.model_validate(
        {
            "providers": [{"name": "gpt", "latency": FAST, "tokens": TOKENS}],
            "gateway": {
                "listen": "127.0.0.1:0",
                "flags": {"provider": "file", "path": str(tmp_path / "flags.json")},
                "routes": [{"name": "r-gpt-4", "flag": "f-gpt-4", "default_model": "gpt-4"}],
                "models": [{"name": "gpt-4", "base_url": "lab://gpt"}],
                "cache": {"ttl": "5m"},
            },
        }
    )
    question: list[Any] = [{"role": "user", "content": QUESTION}]
    with LabStack(spec, traffic=False) as stack:
        claude_client = anthropic.Anthropic(
            base_url=stack.gateway_url, api_key="unused", max_retries=0
        )
        first = claude_client.messages.with_raw_response.create(
            model="r-gpt-4",
            max_tokens=20,
            messages=question,
            extra_body={"temperature": 0},  # this SDK version no longer names it
        )
        gpt_client = openai.OpenAI(base_url=stack.gateway_url + "/v1", api_key="unused")
        twin = gpt_client.chat.completions.with_raw_response.create(
            model="r-gpt-4", max_tokens=20, temperature=0, messages=question
        )
        asked = stack.providers["gpt"].requests
    assert "x-canaryctl-cache" not in first.headers
    assert twin.headers["x-canaryctl-cache"] == "hit"
    assert asked == 1
    message, completion = first.parse(), twin.parse()
    assert message.content[0].type == "text"
    assert completion.choices[0].message.content == message.content[0].text


def test_chaos_in_front_of_claude_is_read_as_claudes_own_failures(tmp_path: Path) -> None:
    """The chaos proxy's faults on /v1/messages come in Anthropic's shapes (built by the same
    module the gateway reads them with): a 529 walks the chain to GPT-4, a refusal is filtered."""
    profile = ProviderProfile.model_validate(
        {"name": "claude", "api": "anthropic", "latency": FAST}
    )
    token = "chaos-test-token"
    with (
        BackgroundServer(SimulatedProvider(profile).app) as claude,
        BackgroundServer(create_proxy_app(claude.url, token=token)) as proxy,
    ):
        _flags(tmp_path / "flags.json", ["claude-sonnet"])
        spec = LabSpec.model_validate(
            {
                "providers": [{"name": "gpt", "latency": FAST, "tokens": TOKENS}],
                "gateway": {
                    "listen": "127.0.0.1:0",
                    "flags": {"provider": "file", "path": str(tmp_path / "flags.json")},
                    "routes": [
                        {"name": "bot", "flag": "f-claude-sonnet", "default_model": "claude-sonnet"}
                    ],
                    "models": [
                        {
                            "name": "claude-sonnet",
                            "provider": "anthropic",
                            "base_url": proxy.url,
                            "fallback": ["gpt-4"],
                        },
                        {"name": "gpt-4", "base_url": "lab://gpt"},
                    ],
                },
            }
        )
        admin = ChaosClient(proxy.url, token)
        with LabStack(spec, traffic=False) as stack:
            client = openai.OpenAI(base_url=stack.gateway_url + "/v1", api_key="unused")
            healthy = client.chat.completions.with_raw_response.create(
                model="bot", messages=_chat()
            )
            admin.add(FaultSpec.model_validate({"fault": "error", "status": 529}))
            overloaded = client.chat.completions.with_raw_response.create(
                model="bot", messages=_chat()
            )
            admin.clear()
            admin.add(FaultSpec.model_validate({"fault": "content_filter"}))
            refused = client.chat.completions.create(model="bot", messages=_chat())
            admin.clear()
            world = World(stack, Recorder())
            moves = world.count("llm_fallbacks_total", reason="http_529", to_model="gpt-4")
            filtered = world.count(
                "llm_requests_total", variant="claude-sonnet", outcome="filtered"
            )
        admin.close()
    assert healthy.headers["x-canaryctl-model"] == "claude-sonnet"
    assert overloaded.headers["x-canaryctl-model"] == "gpt-4"
    assert refused.choices[0].finish_reason == "content_filter"
    assert (moves, filtered) == (1, 1)


def test_load_refusals_on_v1_messages_carry_anthropics_error_types(tmp_path: Path) -> None:
    """Past the server's in-flight limits (refused before any route runs), /v1/messages answers
    429 rate_limit_error and 503 overloaded_error, as Anthropic's clients expect, not the
    request_too_large they said before."""
    from canaryctl.gateway import create_app
    from canaryctl.runbook.gateway import GatewaySpec

    _flags(tmp_path / "flags.json", ["gpt-4"])
    spec = GatewaySpec.model_validate(
        {
            "flags": {"provider": "file", "path": str(tmp_path / "flags.json")},
            "routes": [{"name": "r-gpt-4", "flag": "f-gpt-4", "default_model": "gpt-4"}],
            "models": [{"name": "gpt-4", "base_url": "http://127.0.0.1:9"}],
            "limits": {"max_in_flight": 2, "max_in_flight_per_client": 1},
        }
    )
    app = create_app(spec)

    def scope(client: str) -> dict[str, Any]:
        headers = [(b"content-type", b"application/json"), (b"content-length", b"100")]
        return {"type": "http", "method": "POST", "path": "/v1/messages", "headers": headers,
                "client": (client, 5000), "query_string": b"", "scheme": "http",
                "server": ("127.0.0.1", 80), "http_version": "1.1", "root_path": ""}  # fmt: skip

    async def scenario() -> list[tuple[int, dict[str, Any]]]:
        release, entered = asyncio.Event(), asyncio.Semaphore(0)

        async def held() -> dict[str, Any]:  # a body that does not come: in flight meanwhile
            entered.release()
            await release.wait()
            return {"type": "http.disconnect"}

        async def ignore(message: dict[str, Any]) -> None:
            return None

        answers: list[tuple[int, dict[str, Any]]] = []

        async def refused(client: str) -> None:
            sent: list[dict[str, Any]] = []

            async def send(message: dict[str, Any]) -> None:
                sent.append(message)

            await app(scope(client), held, send)
            answers.append((sent[0]["status"], json.loads(sent[1]["body"])))

        first = asyncio.create_task(app(scope("10.0.0.1"), held, ignore))
        await entered.acquire()
        await refused("10.0.0.1")  # a second from one address: 429
        second = asyncio.create_task(app(scope("10.0.0.2"), held, ignore))
        await entered.acquire()
        await refused("10.0.0.3")  # a third in all: 503
        release.set()
        await asyncio.gather(first, second)
        return answers

    (limited, limited_body), (busy, busy_body) = asyncio.run(scenario())
    assert limited == 429 and limited_body["type"] == "error"
    assert limited_body["error"]["type"] == "rate_limit_error"
    assert "requests in flight from your address" in limited_body["error"]["message"]
    assert busy == 503 and busy_body["error"]["type"] == "overloaded_error"
