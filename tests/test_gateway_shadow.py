"""Shadow traffic over real loopback HTTP with the lab's simulated providers: mirrored requests
reach the shadow model, their answers reach no one, only the llm_shadow_* families count them."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from canaryctl.chaos.server import BackgroundServer
from canaryctl.gateway.identity import Identity
from canaryctl.gateway.metrics import GatewayMetrics
from canaryctl.gateway.pipeline import Call, RoutePlan, Served
from canaryctl.gateway.routing import Choice, FlagRouter
from canaryctl.gateway.shadow import Shadowing, shadow_request, shadow_target
from canaryctl.gateway.spend_cap import LastHourSpend
from canaryctl.gateway.upstream import Upstream
from canaryctl.lab import LabStack
from canaryctl.lab.provider import SimulatedProvider
from canaryctl.runbook.gateway import FlagShadow, GatewaySpec, ModelSpec, StaticShadow
from canaryctl.runbook.lab import LabSpec, ProviderProfile

FAST = {"median": 0.001, "p95": 0.003}
QUESTION = [{"role": "user", "content": "What is 2 + 3?"}]
USER_FAMILIES = ("llm_requests_total", "llm_tokens_total", "llm_cost_usd_total")
PRICE = {"prompt_per_1k": 1.0, "completion_per_1k": 2.0}

MakeLab = Callable[..., LabSpec]
WriteFlags = Callable[..., Path]


def samples(stack: LabStack) -> list[tuple[str, dict[str, str], float]]:
    text = httpx.get(stack.metrics_url).text
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def metric(stack: LabStack, name: str, **labels: str) -> float:
    return sum(
        value for n, have, value in samples(stack) if n == name and labels.items() <= have.items()
    )


def eventually(read: Callable[[], float], want: float, timeout: float = 5.0) -> float:
    deadline = time.monotonic() + timeout
    while (got := read()) != want and time.monotonic() < deadline:
        time.sleep(0.02)
    return got


def shadowed(lab: LabSpec, shadow: dict[str, Any] | None, **gateway: Any) -> LabSpec:
    """`lab` with route bot shadowed as `shadow` and the gateway's other fields as given."""
    data = lab.model_dump(mode="json", by_alias=True)
    data["gateway"]["routes"][0]["shadow"] = shadow
    data["gateway"].update(gateway)
    return LabSpec.model_validate(data)


def models(*names: str, **extra: Any) -> list[dict[str, Any]]:
    return [{"name": n, "base_url": f"lab://{n}", "price": PRICE, **extra} for n in names]


def ask(client: httpx.Client, stack: LabStack, **body: Any) -> httpx.Response:
    payload = {"model": "bot", "messages": QUESTION, **body}
    return client.post(f"{stack.gateway_url}/v1/chat/completions", json=payload)


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(headers={"X-User": "u1"}, timeout=10) as c:
        yield c


def test_shadow_answers_are_never_returned_and_user_metrics_and_budgets_are_unchanged(
    make_lab: MakeLab, write_flags: WriteFlags, client: httpx.Client
) -> None:
    write_flags(["a", "s"])
    providers = [{"name": "a", "latency": FAST}, {"name": "s", "latency": FAST}]
    budgets = {"limits": [{"name": "daily", "per": "user", "tokens": 1_000_000}]}
    plain = shadowed(make_lab(providers, models("a", "s")), None, budgets=budgets)
    mirrored = shadowed(plain, {"model": "s", "percent": 100})
    seen: dict[str, list[tuple[str, dict[str, str], float]]] = {}
    for name, lab in (("plain", plain), ("mirrored", mirrored)):
        with LabStack(lab, traffic=False) as stack:
            for i in range(12):
                response = ask(client, stack, temperature=0.3 if i % 2 else 1)
                assert response.status_code == 200
                assert response.headers["x-canaryctl-model"] == "a"
                assert response.json()["model"] == "a", "the shadow model's answer was returned"
            if name == "mirrored":
                _check_mirrored(stack, 12)
            else:
                assert stack.providers["s"].requests == 0
            seen[name] = [
                (n, labels, value)
                for n, labels, value in samples(stack)
                if n in USER_FAMILIES
                or n in ("llm_request_duration_seconds_count", "llm_budget_remaining")
                or n == "llm_upstream_duration_seconds_count"
            ]
    assert seen["plain"] and seen["mirrored"] == seen["plain"]
    assert not any(labels.get("model") == "s" for _, labels, _ in seen["mirrored"])


def _check_mirrored(stack: LabStack, requests: int) -> None:
    """Every request reached the shadow model `s` and is in each llm_shadow_* family."""
    shadow = {"route": "bot", "variant": "s", "model": "s", "outcome": "ok"}
    assert eventually(lambda: metric(stack, "llm_shadow_requests_total", **shadow), requests)
    assert stack.providers["s"].requests == requests
    assert metric(stack, "llm_shadow_tokens_total", model="s", kind="completion") > 0
    assert metric(stack, "llm_shadow_cost_usd_total", model="s") > 0
    count = metric(stack, "llm_shadow_request_duration_seconds_count", model="s")
    assert count == requests


def test_ollama_and_embeddings_requests_are_shadowed_through_the_same_pipeline(
    make_lab: MakeLab, write_flags: WriteFlags, client: httpx.Client
) -> None:
    write_flags(["a", "s"])
    providers = [{"name": "a", "latency": FAST}, {"name": "s", "latency": FAST}]
    lab = shadowed(make_lab(providers), {"model": "s", "percent": 100})
    with LabStack(lab, traffic=False) as stack:
        url = stack.gateway_url
        generate = {"model": "bot", "prompt": "What is 2 + 3?"}  # streamed by Ollama's default
        answer = client.post(f"{url}/api/generate", json=generate)
        assert answer.status_code == 200 and answer.headers["x-canaryctl-model"] == "a"
        assert answer.headers["content-type"].startswith("application/x-ndjson")
        vectors = client.post(f"{url}/v1/embeddings", json={"model": "bot", "input": "two"})
        assert vectors.status_code == 200 and vectors.headers["x-canaryctl-model"] == "a"
        ok = {"model": "s", "outcome": "ok"}
        assert eventually(lambda: metric(stack, "llm_shadow_requests_total", **ok), 2)
        assert stack.providers["s"].requests == 2
        assert metric(stack, "llm_requests_total", variant="a") == 2


def test_percent_samples_that_share_of_requests(
    make_lab: MakeLab, write_flags: WriteFlags, client: httpx.Client
) -> None:
    write_flags(["a", "s"])
    providers = [{"name": "a", "latency": FAST}, {"name": "s", "latency": FAST}]
    lab = shadowed(make_lab(providers), {"model": "s", "percent": 25})
    with LabStack(lab, traffic=False) as stack:
        for _ in range(200):
            assert ask(client, stack).status_code == 200
        time.sleep(0.3)
        mirrored = metric(stack, "llm_shadow_requests_total", model="s")
        # Binomial(200, 0.25): mean 50, sd 6.1; outside 30..70 happens about once in 1,000 runs.
        assert 30 <= mirrored <= 70
        assert metric(stack, "llm_shadow_dropped_total") == 0


def test_a_full_queue_drops_shadow_requests_and_never_the_primary(
    make_lab: MakeLab, write_flags: WriteFlags, client: httpx.Client
) -> None:
    write_flags(["a", "s"])
    slow = {"median": 0.8, "p95": 0.8}
    providers = [{"name": "a", "latency": FAST}, {"name": "s", "latency": slow}]
    limits = {"queue": 1, "concurrency": 1}
    lab = shadowed(make_lab(providers), {"model": "s", "percent": 100}, shadowing=limits)
    with LabStack(lab, traffic=False) as stack:
        for _ in range(10):
            response = ask(client, stack)
            assert response.status_code == 200
            assert response.headers["x-canaryctl-model"] == "a"
        assert metric(stack, "llm_requests_total", variant="a", outcome="ok") == 10
        dropped = metric(stack, "llm_shadow_dropped_total", model="s", reason="queue_full")
        assert dropped >= 7  # one in flight, one queued, the rest dropped
        sent = 10 - dropped
        assert eventually(lambda: metric(stack, "llm_shadow_requests_total", model="s"), sent)
        assert stack.providers["s"].requests == sent


def test_shadow_spend_past_the_hourly_cap_is_dropped_as_budget(
    make_lab: MakeLab, write_flags: WriteFlags, client: httpx.Client
) -> None:
    write_flags(["a", "s"])
    providers = [{"name": "a", "latency": FAST}, {"name": "s", "latency": FAST}]
    limits = {"max_usd_per_hour": 0.000001}  # one call of tens of tokens at $1-2/1k spends it
    lab = shadowed(
        make_lab(providers, models("a", "s")), {"model": "s", "percent": 100}, shadowing=limits
    )
    with LabStack(lab, traffic=False) as stack:
        assert ask(client, stack).status_code == 200
        assert eventually(lambda: metric(stack, "llm_shadow_requests_total", model="s"), 1)
        for _ in range(3):
            assert ask(client, stack).status_code == 200
        assert eventually(lambda: metric(stack, "llm_shadow_dropped_total", reason="budget"), 3)
        assert stack.providers["s"].requests == 1


def test_cache_hits_and_rejected_requests_are_not_shadowed(
    make_lab: MakeLab, write_flags: WriteFlags, client: httpx.Client
) -> None:
    write_flags(["a", "s"])
    providers = [{"name": "a", "latency": FAST}, {"name": "s", "latency": FAST}]
    lab = shadowed(make_lab(providers), {"model": "s", "percent": 100}, cache={})
    with LabStack(lab, traffic=False) as stack:
        assert ask(client, stack, temperature=0).status_code == 200
        hit = ask(client, stack, temperature=0)
        assert hit.headers["x-canaryctl-cache"] == "hit"
        no_messages = {"model": "bot", "messages": []}
        url = f"{stack.gateway_url}/v1/chat/completions"
        assert client.post(url, json=no_messages).status_code == 400
        assert eventually(lambda: metric(stack, "llm_shadow_requests_total"), 1) == 1
        time.sleep(0.2)
        assert stack.providers["s"].requests == 1
        assert metric(stack, "llm_requests_total", outcome="rejected") == 1


def _recording_upstream(bodies: list[dict[str, Any]]) -> Starlette:
    """An OpenAI upstream that keeps every request body and answers each with a completion."""

    async def complete(request: Request) -> Response:
        bodies.append(await request.json())
        message = {"role": "assistant", "content": "Five."}
        return JSONResponse(
            {
                "id": "chatcmpl-shadow",
                "object": "chat.completion",
                "model": "s",
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
            }
        )

    return Starlette(routes=[Route("/v1/chat/completions", complete, methods=["POST"])])


def test_a_streamed_primary_is_shadowed_as_the_same_request_not_streamed(
    make_lab: MakeLab, write_flags: WriteFlags, client: httpx.Client
) -> None:
    write_flags(["a", "s"])
    bodies: list[dict[str, Any]] = []
    with BackgroundServer(_recording_upstream(bodies)) as upstream:
        lab_models = [
            {"name": "a", "base_url": "lab://a"},
            {"name": "s", "base_url": upstream.url, "keyless": True},
        ]
        lab = shadowed(
            make_lab([{"name": "a", "latency": FAST}], lab_models), {"model": "s", "percent": 100}
        )
        with LabStack(lab, traffic=False) as stack:
            response = ask(
                client, stack, stream=True, stream_options={"include_usage": True}, max_tokens=20
            )
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.text.endswith("data: [DONE]\n\n")
            assert '"chatcmpl-shadow"' not in response.text
            ok = {"model": "s", "outcome": "ok"}
            assert eventually(lambda: metric(stack, "llm_shadow_requests_total", **ok), 1)
            assert metric(stack, "llm_shadow_tokens_total", model="s", kind="completion") == 3
    assert len(bodies) == 1
    sent = bodies[0]
    assert sent["messages"] == QUESTION and sent["max_tokens"] == 20
    assert sent["stream"] is False and "stream_options" not in sent


def _two_flags(path: Path, shadow_value: str) -> None:
    """The route's flag serving `a`, and the shadow flag serving `shadow_value` to everyone."""

    def flag(key: str, variations: list[str], serve: int) -> dict[str, Any]:
        return {
            "key": key,
            "on": True,
            "variations": variations,
            "fallthrough": {"variation": serve},
            "offVariation": 0,
            "version": int(time.time() * 1000),
            "salt": key,
            "targets": [],
            "contextTargets": [],
            "rules": [],
            "prerequisites": [],
            "trackEvents": False,
        }

    variations = ["off", "s"]
    flags = {
        "model-flag": flag("model-flag", ["a", "s"], 0),
        "shadow-flag": flag("shadow-flag", variations, variations.index(shadow_value)),
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"flags": flags, "segments": {}}))
    tmp.replace(path)


def test_a_flag_switched_shadow_follows_the_rewritten_flag_file(
    make_lab: MakeLab, tmp_path: Path, client: httpx.Client
) -> None:
    flags = tmp_path / "flags.json"
    _two_flags(flags, "off")
    providers = [{"name": "a", "latency": FAST}, {"name": "s", "latency": FAST}]
    lab = shadowed(make_lab(providers), {"flag": "shadow-flag"})
    with LabStack(lab, traffic=False) as stack:
        for _ in range(5):
            assert ask(client, stack).status_code == 200
        time.sleep(0.2)
        assert metric(stack, "llm_shadow_requests_total") == 0

        _two_flags(flags, "s")
        deadline = time.monotonic() + 5
        while metric(stack, "llm_shadow_requests_total", model="s") == 0:
            assert time.monotonic() < deadline, "the gateway did not pick up the shadow flag"
            assert ask(client, stack).status_code == 200
            time.sleep(0.05)

        _two_flags(flags, "off")
        time.sleep(1.0)  # poll_interval is 0.1 s
        before = metric(stack, "llm_shadow_requests_total", model="s")
        for _ in range(5):
            assert ask(client, stack).status_code == 200
        time.sleep(0.2)
        assert metric(stack, "llm_shadow_requests_total", model="s") == before
        assert stack.providers["s"].requests == before


def _model(name: str) -> ModelSpec:
    return ModelSpec(name=name, base_url="http://127.0.0.1:1")


def test_shadow_target_samples_percent_and_reads_model_names_from_the_flag() -> None:
    models = {"s": _model("s")}
    static = StaticShadow(model="s", percent=30)
    assert shadow_target(static, lambda key: None, lambda: 0.29, models) is models["s"]
    assert shadow_target(static, lambda key: None, lambda: 0.30, models) is None
    never = StaticShadow(model="s", percent=0)
    assert shadow_target(never, lambda key: None, lambda: 0.0, models) is None
    by_flag = FlagShadow(flag="k")
    assert shadow_target(by_flag, {"k": "s"}.get, lambda: 0.0, models) is models["s"]
    for value in ("off", "unknown-model", 3, None):
        assert shadow_target(by_flag, lambda key, v=value: v, lambda: 0.0, models) is None


def test_a_shadow_request_is_the_request_without_its_stream_options() -> None:
    request = {"messages": QUESTION, "stream": True, "stream_options": {"include_usage": True}}
    assert shadow_request(request) == {"messages": QUESTION}


def test_the_spend_cap_counts_a_rolling_hour_not_the_clock_hour() -> None:
    now = [3600 * 10 + 3000.0]
    spend = LastHourSpend(lambda: now[0])
    spend.add(0.5)
    now[0] += 500
    spend.add(0.25)
    now[0] = 3600 * 11 + 1  # a new clock hour: the first 0.5 is still within the last hour
    assert spend.last_hour() == 0.75
    now[0] = 3600 * 11 + 3000  # an hour after the first
    assert spend.last_hour() == 0.25
    now[0] += 500
    assert spend.last_hour() == 0.0


class RecordingJudge:
    """Keeps what the shadow stage offers a judge (the judges' contract), grading nothing."""

    def __init__(self) -> None:
        self.answers: list[tuple[dict[str, str], dict[str, Any], bool]] = []
        self.pairs: list[tuple[Any, ...]] = []

    def offer_answer(
        self,
        labels: dict[str, str],
        chat: dict[str, Any],
        completion: dict[str, Any],
        *,
        shadow: bool,
    ) -> None:
        self.answers.append((labels, completion, shadow))

    def offer_pair(self, *pair: Any) -> None:
        self.pairs.append(pair)


def test_the_judge_hook_is_offered_each_shadow_answer_and_its_pair_with_the_primary(
    write_flags: WriteFlags,
) -> None:
    flags = write_flags(["a", "s"])
    provider = SimulatedProvider(ProviderProfile.model_validate({"name": "s", "latency": FAST}))
    judge = RecordingJudge()
    with BackgroundServer(provider.app) as server:
        spec = GatewaySpec.model_validate(
            {
                "flags": {"provider": "file", "path": str(flags)},
                "routes": [
                    {
                        "name": "bot",
                        "flag": "model-flag",
                        "default_model": "a",
                        "shadow": {"model": "s", "percent": 100},
                    }
                ],
                "models": [
                    {"name": "a", "base_url": "http://127.0.0.1:1", "keyless": True},
                    {"name": "s", "base_url": server.url, "keyless": True},
                ],
            }
        )
        metrics = GatewayMetrics()
        shadowing = Shadowing(spec, metrics)
        shadowing.judge = judge
        primary_model = spec.models[0]
        choice = Choice(spec.routes[0], "a", primary_model, "paid")
        chat = {"model": "bot", "messages": QUESTION, "stream": True}
        plan = RoutePlan(spec.routes[0], None, None, ())
        identity = Identity("u1", "paid")
        call = Call(plan, "openai", "chat", 0.0, chat, identity, choice, "paid", {}, chat)
        primary = {"id": "chatcmpl-p", "choices": [{"message": {"content": "5"}}]}

        async def shadow_one() -> None:
            router = FlagRouter(spec, metrics)
            try:
                async with Upstream.open() as upstream:
                    await shadowing.start(upstream, router)
                    shadowing.offer(Served(call, primary_model, "ok", primary, None))
                    while not judge.pairs:
                        await asyncio.sleep(0.01)
                    await shadowing.close()
            finally:
                router.close()

        asyncio.run(asyncio.wait_for(shadow_one(), 10))
    shadow_labels = {
        "route": "bot",
        "variant": "s",
        "model": "s",
        "provider": "openai",
        "tier": "paid",
    }
    [(labels, answer, is_shadow)] = judge.answers
    assert labels == shadow_labels and is_shadow is True
    assert answer["choices"][0]["message"]["content"]
    [pair] = judge.pairs
    primary_labels = {**shadow_labels, "variant": "a", "model": "a"}
    assert pair == ("bot", chat, primary_labels, primary, shadow_labels, answer)
