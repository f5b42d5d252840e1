"""Embeddings batching over real loopback HTTP: concurrent callers through the gateway to the
lab's simulated providers, which count the calls they get.

Batches here fill up (`max_inputs` is the callers' inputs together), so they go out at once and
no test waits for a window, except where a request must go alone: then it waits one window
(1 s) and the provider's count shows it was not joined.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from canaryctl.gateway.identity import hash_key
from canaryctl.lab import LabStack
from canaryctl.runbook.lab import LabSpec
from tests.test_gateway import metric

pytestmark = pytest.mark.e2e

PRICE = {"prompt_per_1k": 0.1}
KEY_A = "sk-batch-a-0123456789"
KEY_B = "sk-batch-b-9876543210"


def flags(path: Path, models: dict[str, str]) -> dict[str, Any]:
    """A flag file in which each flag key serves its one model to everyone."""
    documents = {
        key: {
            "key": key,
            "on": True,
            "variations": [model],
            "fallthrough": {"variation": 0},
            "offVariation": 0,
            "version": 1,
            "salt": key,
            "targets": [],
            "contextTargets": [],
            "rules": [],
            "prerequisites": [],
            "trackEvents": False,
        }
        for key, model in models.items()
    }
    path.write_text(json.dumps({"flags": documents, "segments": {}}))
    return {"provider": "file", "path": str(path), "poll_interval": 0.1}


def lab(
    tmp_path: Path,
    max_inputs: int,
    *,
    routes: dict[str, str] | None = None,
    providers: list[dict[str, Any]] | None = None,
    models: list[dict[str, Any]] | None = None,
    **spec: Any,
) -> LabSpec:
    """Route `search` (and any of `routes`: name -> model) served by its own flag; model `emb`
    on provider `a`, batched with a 1 s window."""
    routes = {"search": "emb", **(routes or {})}
    batch = {"window": "1s", "max_inputs": max_inputs}
    gateway = {
        "listen": "127.0.0.1:0",
        "flags": flags(tmp_path / "flags.json", {f"{r}-model": m for r, m in routes.items()}),
        "routes": [
            {"name": r, "flag": f"{r}-model", "default_model": m} for r, m in routes.items()
        ],
        "models": models
        or [{"name": "emb", "base_url": "lab://a", "price": PRICE, "batch": batch}],
        **spec,
    }
    providers = providers or [{"name": "a", "latency": {"median": 0.002, "p95": 0.004}}]
    return LabSpec.model_validate({"providers": providers, "gateway": gateway})


def together(url: str, asks: list[tuple[dict[str, Any], dict[str, str]]]) -> list[httpx.Response]:
    """POST every (body, headers) to /v1/embeddings at once."""

    async def send() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            posts = (client.post(f"{url}/v1/embeddings", json=b, headers=h) for b, h in asks)
            return list(await asyncio.gather(*posts))

    return asyncio.run(send())


def alone(stack: LabStack, provider: str, inputs: Any) -> dict[str, Any]:
    """What the provider answers to these inputs asked straight, in a call of their own."""
    url = f"{stack.provider_urls[provider]}/v1/embeddings"
    answer = httpx.post(url, json={"model": "emb", "input": inputs}, timeout=10)
    assert answer.status_code == 200
    return dict(answer.json())


def test_concurrent_callers_share_one_call_and_each_gets_its_own_vectors_and_bill(
    tmp_path: Path,
) -> None:
    budgets = {"limits": [{"name": "u", "per": "user", "tokens": 10_000}]}
    callers = [
        ("free", "refund policy"),
        ("paid", ["reset my password", "two factor codes"]),
        ("enterprise", ["how long does shipping to Canada take, and what does it cost?"]),
        ("vip", ["x", "yy", "a third, somewhat longer text"]),  # not a configured tier: other
    ]
    asks = [
        ({"model": "search", "input": inputs}, {"X-User": f"user-{tier}", "X-Tier": tier})
        for tier, inputs in callers
    ]
    with LabStack(lab(tmp_path, max_inputs=7, budgets=budgets), traffic=False) as stack:
        provider = stack.providers["a"]
        replies = together(stack.gateway_url, asks)
        assert [r.status_code for r in replies] == [200] * 4
        assert provider.requests == 1  # 4 requests, 7 inputs, one upstream call
        batch_tokens = provider.embedded_tokens
        bodies = [r.json() for r in replies]
        for (tier, inputs), body in zip(callers, bodies, strict=True):
            direct = alone(stack, "a", inputs)
            assert body["data"] == direct["data"]  # the same vectors, in order, from index 0
            assert body["usage"] == direct["usage"]  # billed for its own tokens
            label = tier if tier != "vip" else "other"
            tokens = body["usage"]["prompt_tokens"]
            assert metric(stack, "llm_tokens_total", tier=label, kind="prompt") == tokens
            cost = metric(stack, "llm_cost_usd_total", tier=label)
            assert cost == pytest.approx(tokens / 1000 * PRICE["prompt_per_1k"])
            remaining = metric(stack, "llm_budget_remaining", key=f"user-{tier}", unit="tokens")
            assert remaining == 10_000 - tokens  # each budget settled on its own share
        assert sum(b["usage"]["prompt_tokens"] for b in bodies) == batch_tokens
        assert metric(stack, "llm_requests_total", outcome="ok") == 4
        assert metric(stack, "llm_batch_requests_total") == 4
        assert metric(stack, "llm_batch_size_count") == 1  # calls: three saved


def test_keys_teams_and_routes_are_never_joined(tmp_path: Path) -> None:
    auth = {
        "keys": [
            {"id": "a", "sha256": hash_key(KEY_A), "team": "t1", "teams": ["t2"]},
            {"id": "b", "sha256": hash_key(KEY_B), "team": "t1"},
        ],
        "trust_identity_headers": True,  # so that a request may name another team
    }
    spec = lab(tmp_path, max_inputs=2, routes={"search2": "emb"}, auth=auth)

    def ask(text: str, key: str = KEY_A, route: str = "search", **headers: str) -> Any:
        return {"model": route, "input": text}, {"Authorization": f"Bearer {key}", **headers}

    asks = [
        ask("one"),
        ask("two"),  # joins "one": same key, team, route; the batch is full and goes
        ask("other key", key=KEY_B),
        ask("other team", **{"X-Team": "t2"}),
        ask("other route", route="search2"),
    ]
    with LabStack(spec, traffic=False) as stack:
        replies = together(stack.gateway_url, asks)
        assert [r.status_code for r in replies] == [200] * 5
        assert stack.providers["a"].requests == 4
        for (body, _), reply in zip(asks, replies, strict=True):
            assert reply.json()["data"] == alone(stack, "a", body["input"])["data"]
        assert metric(stack, "llm_batch_size_count") == 4
        assert metric(stack, "llm_batch_size_bucket", le="1.0") == 3  # three went alone
        assert metric(stack, "llm_batch_size_sum") == 5


def test_a_failed_call_fails_each_member_or_falls_back_for_each_as_one_call_would(
    tmp_path: Path,
) -> None:
    batch = {"window": "1s", "max_inputs": 3}
    models = [
        {"name": "emb", "base_url": "lab://down", "batch": batch, "fallback": ["spare"]},
        {"name": "spare", "base_url": "lab://a", "batch": batch},
        {"name": "bare", "base_url": "lab://down", "batch": batch},  # no fallback
    ]
    providers = [
        {"name": "down", "errors": {"rate": 1.0, "kinds": {"503": 1.0}}},
        {"name": "a", "latency": {"median": 0.002, "p95": 0.004}},
    ]
    spec = lab(tmp_path, 3, routes={"plain": "bare"}, providers=providers, models=models)
    texts = ["refunds", "shipping", "returns"]
    with LabStack(spec, traffic=False) as stack:
        down, spare = stack.providers["down"], stack.providers["a"]
        rescued = together(
            stack.gateway_url, [({"model": "search", "input": t}, {}) for t in texts]
        )
        assert [r.status_code for r in rescued] == [200] * 3
        assert [r.headers["x-canaryctl-model"] for r in rescued] == ["spare"] * 3
        assert (down.requests, spare.requests) == (1, 1)  # failed together, rescued together
        for text, reply in zip(texts, rescued, strict=True):
            assert reply.json()["data"] == alone(stack, "a", text)["data"]
        assert metric(stack, "llm_requests_total", outcome="fallback_ok") == 3
        assert metric(stack, "llm_fallbacks_total", reason="http_503") == 3  # one per request
        failed = together(stack.gateway_url, [({"model": "plain", "input": t}, {}) for t in texts])
        assert [r.status_code for r in failed] == [503] * 3
        assert down.requests == 2
        assert all(r.json()["error"]["type"] == "server_error" for r in failed)
        assert metric(stack, "llm_requests_total", route="plain", outcome="error") == 3


def test_one_members_bad_input_fails_only_that_member(tmp_path: Path) -> None:
    over_context = "word " * 8000  # 40,000 characters: 10,000 tokens, over the model's 8,192
    inputs: list[Any] = ["refunds", ["shipping"], over_context, ["fine", ""]]
    with LabStack(lab(tmp_path, max_inputs=3), traffic=False) as stack:
        provider = stack.providers["a"]
        replies = together(
            stack.gateway_url, [({"model": "search", "input": i}, {}) for i in inputs]
        )
        assert [r.status_code for r in replies] == [200, 200, 400, 400]
        # the empty string went alone at once; the joined three were refused, then asked alone
        assert provider.requests == 1 + 1 + 3
        for given, reply in zip(inputs[:2], replies[:2], strict=True):
            assert reply.json()["data"] == alone(stack, "a", given)["data"]
        assert metric(stack, "llm_batch_refused_total") == 1
        assert metric(stack, "llm_requests_total", outcome="rejected") == 2
        assert metric(stack, "llm_requests_total", outcome="ok") == 2
