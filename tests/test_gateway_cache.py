"""The response cache: what is cacheable, TTL and size bounds on a fake clock, and hits served
over real HTTP without reaching the provider."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from canaryctl.gateway.cache import CachedAnswer, ResponseCache, cache_key
from canaryctl.gateway.routing import Choice
from canaryctl.lab import LabStack
from canaryctl.runbook.gateway import CacheSpec, ModelSpec, RouteSpec
from canaryctl.runbook.lab import LabSpec
from tests.conftest import FLAG_KEY

ROUTE = RouteSpec(name="bot", flag="f", default_model="a")
A = Choice(ROUTE, "a", ModelSpec(name="a", base_url="http://x"))
B = Choice(ROUTE, "b", ModelSpec(name="b", base_url="http://x"))
ASK = {"messages": [{"role": "user", "content": "What is 2 + 3?"}], "temperature": 0}


def test_only_temperature_zero_single_answers_are_cacheable() -> None:
    assert cache_key(A, ASK) is not None
    assert cache_key(A, {**ASK, "temperature": 0.7}) is None
    assert cache_key(A, {"messages": ASK["messages"]}) is None  # OpenAI's default is 1
    assert cache_key(A, {**ASK, "stream": True}) is None
    assert cache_key(A, {**ASK, "n": 2}) is None


def test_the_key_ignores_who_asks_but_not_what_or_which_variant() -> None:
    key = cache_key(A, ASK)
    assert cache_key(A, {**ASK, "user": "someone-else"}) == key
    assert cache_key(A, dict(reversed(list(ASK.items())))) == key  # field order
    assert cache_key(B, ASK) != key  # a canary's answers stay the canary's
    assert cache_key(A, {**ASK, "max_tokens": 5}) != key
    assert cache_key(A, {**ASK, "messages": [{"role": "user", "content": "2 + 4?"}]}) != key


def test_entries_expire_after_the_ttl_and_the_least_recently_used_goes_first() -> None:
    now = [0.0]
    cache = ResponseCache(
        CacheSpec(ttl=10, max_entries=2), CollectorRegistry(), clock=lambda: now[0]
    )
    answer = CachedAnswer("a", {"choices": []})
    cache.put("k1", answer)
    cache.put("k2", answer)
    assert cache.get("bot", "k1") == answer  # k1 is now the most recently used
    cache.put("k3", answer)
    assert cache.get("bot", "k2") is None
    assert cache.get("bot", "k1") == answer
    now[0] = 10.0
    assert cache.get("bot", "k1") is None and cache.get("bot", "k3") is None


def lab(tmp_path: Path) -> LabSpec:
    gateway = {
        "listen": "127.0.0.1:0",
        "flags": {"provider": "file", "path": str(tmp_path / "flags.json"), "poll_interval": 0.1},
        "routes": [{"name": "bot", "flag": FLAG_KEY, "default_model": "a"}],
        "models": [{"name": "a", "base_url": "lab://a"}],
        "cache": {"ttl": "1m", "max_entries": 100},
    }
    providers = [{"name": "a", "latency": {"median": 0.001, "p95": 0.003}}]
    return LabSpec.model_validate({"providers": providers, "gateway": gateway})


def counts(stack: LabStack, name: str) -> dict[str, float]:
    text = httpx.get(stack.metrics_url).text
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name:
                label = s.labels.get("result") or s.labels.get("outcome") or ""
                found[label] = found.get(label, 0) + s.value
    return found


def post(stack: LabStack, path: str, **body: Any) -> httpx.Response:
    return httpx.post(f"{stack.gateway_url}{path}", json={"model": "bot", **body})


def test_a_repeated_deterministic_request_is_answered_from_the_cache(
    tmp_path: Path, write_flags: Any
) -> None:
    write_flags(["a"])
    with LabStack(lab(tmp_path), traffic=False) as stack:
        provider = stack.providers["a"]
        first = post(stack, "/v1/chat/completions", **ASK, user="u1")
        second = post(stack, "/v1/chat/completions", **ASK, user="u2")
        assert first.status_code == second.status_code == 200
        assert "x-canaryctl-cache" not in first.headers
        assert second.headers["x-canaryctl-cache"] == "hit"
        assert second.headers["x-canaryctl-model"] == "a"
        assert second.json() == first.json()
        assert provider.requests == 1
        # the same question in Ollama's dialect is the same request: a hit, in Ollama's shape
        options = {"temperature": 0}
        ollama = post(stack, "/api/chat", messages=ASK["messages"], options=options, stream=False)
        assert ollama.headers["x-canaryctl-cache"] == "hit"
        answer = first.json()["choices"][0]["message"]["content"]
        assert ollama.json()["message"]["content"] == answer and ollama.json()["done"] is True
        creative = {**ASK, "temperature": 0.7}
        assert all(
            "x-canaryctl-cache" not in post(stack, "/v1/chat/completions", **creative).headers
            for _ in range(2)
        )
        assert provider.requests == 3
        assert counts(stack, "llm_cache_requests_total") == {"hit": 2, "miss": 1}
        assert counts(stack, "llm_requests_total") == {"ok": 3}  # hits never reached a model
        assert counts(stack, "llm_cache_entries") == {"": 1}


def test_embeddings_are_routed_metered_and_always_cached(tmp_path: Path, write_flags: Any) -> None:
    write_flags(["a"])
    with LabStack(lab(tmp_path), traffic=False) as stack:
        provider = stack.providers["a"]
        texts = ["refund policy", "reset my password"]
        first = post(stack, "/v1/embeddings", input=texts)
        assert first.status_code == 200
        assert first.headers["x-canaryctl-variant"] == "a"
        body = first.json()
        assert [d["index"] for d in body["data"]] == [0, 1]
        assert len(body["data"][0]["embedding"]) == 8
        again = post(stack, "/v1/embeddings", input=texts)
        assert again.headers["x-canaryctl-cache"] == "hit" and again.json() == body
        other = post(stack, "/v1/embeddings", input="refund policy")
        assert "x-canaryctl-cache" not in other.headers
        assert other.json()["data"][0]["embedding"] == body["data"][0]["embedding"]
        assert provider.requests == 2
        assert counts(stack, "llm_requests_total") == {"ok": 2}
        prompt = body["usage"]["prompt_tokens"] + other.json()["usage"]["prompt_tokens"]
        assert counts(stack, "llm_tokens_total") == {"": prompt}  # prompt + no completion
        assert post(stack, "/v1/embeddings", input=[]).status_code == 400
