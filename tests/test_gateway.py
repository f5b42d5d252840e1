"""The reference gateway over real loopback HTTP: flag routing with the real LaunchDarkly SDK,
fallback, streaming, the Ollama dialect both ways, and the metrics rollouts read."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from canaryctl.cli import main
from canaryctl.lab import LabStack
from canaryctl.runbook.lab import LabSpec

FAST = {"median": 0.001, "p95": 0.003}
FAILING_503 = {"rate": 1, "kinds": {"503": 1}}

MakeLab = Callable[..., LabSpec]
WriteFlags = Callable[..., Path]


def provider(name: str, **profile: Any) -> dict[str, Any]:
    return {"name": name, "latency": FAST, **profile}


def chat(stack: LabStack, user: str = "u1", **body: Any) -> httpx.Response:
    payload = {"model": "bot", "messages": [{"role": "user", "content": "What is 2 + 3?"}]}
    return httpx.post(
        f"{stack.gateway_url}/v1/chat/completions",
        json={**payload, **body},
        headers={"X-User": user},
        timeout=10,
    )


def metric(stack: LabStack, name: str, **labels: str) -> float:
    """Sum of the samples called `name` whose labels include `labels`."""
    text = httpx.get(stack.metrics_url).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


@pytest.fixture
def pair(make_lab: MakeLab, write_flags: WriteFlags) -> Iterator[tuple[LabStack, WriteFlags]]:
    """Two healthy models, a and b, with the flag serving a to everyone."""
    write_flags(["a", "b"])
    with LabStack(make_lab([provider("a"), provider("b")]), traffic=False) as stack:
        yield stack, write_flags


def test_a_percentage_rollout_serves_both_variants_and_sticks(
    pair: tuple[LabStack, WriteFlags],
) -> None:
    stack, write_flags = pair
    rollout = {
        "rollout": {
            "variations": [{"variation": 1, "weight": 50000}, {"variation": 0, "weight": 50000}]
        }
    }
    write_flags(["a", "b"], rollout, version=2)
    users = [f"user-{i}" for i in range(40)]
    started = time.monotonic()
    while all(chat(stack, user).headers["x-canaryctl-variant"] == "a" for user in users):
        assert time.monotonic() - started < 3, "the SDK did not pick up the rollout"
    served = {user: chat(stack, user).headers["x-canaryctl-variant"] for user in users}
    assert set(served.values()) == {"a", "b"}
    for user, variant in list(served.items())[:10]:
        response = chat(stack, user)
        assert response.status_code == 200
        assert response.headers["x-canaryctl-variant"] == variant
        assert response.headers["x-canaryctl-model"] == variant


def test_a_rewritten_flag_file_takes_effect_within_seconds(
    pair: tuple[LabStack, WriteFlags],
) -> None:
    stack, write_flags = pair
    assert chat(stack).headers["x-canaryctl-variant"] == "a"
    write_flags(["a", "b"], {"variation": 1}, version=2)
    started = time.monotonic()
    while chat(stack).headers["x-canaryctl-variant"] != "b":
        assert time.monotonic() - started < 3, "the SDK did not pick up the new flag file"
        time.sleep(0.05)
    assert metric(stack, "llm_requests_total", variant="b", model="b", outcome="ok") >= 1


def test_fallback_answers_when_the_primary_returns_503(
    make_lab: MakeLab, write_flags: WriteFlags
) -> None:
    write_flags(["primary", "backup"])
    models = [
        {"name": "primary", "base_url": "lab://primary", "fallback": ["backup"]},
        {"name": "backup", "base_url": "lab://backup"},
    ]
    lab = make_lab([provider("primary", errors=FAILING_503), provider("backup")], models)
    with LabStack(lab, traffic=False) as stack:
        responses = [chat(stack, f"u{i}") for i in range(3)]
        assert [r.status_code for r in responses] == [200] * 3
        assert {r.headers["x-canaryctl-variant"] for r in responses} == {"primary"}
        assert {r.headers["x-canaryctl-model"] for r in responses} == {"backup"}
        labels = {"route": "bot", "variant": "primary", "model": "backup", "provider": "openai"}
        assert metric(stack, "llm_requests_total", **labels, outcome="fallback_ok") == 3
        assert metric(stack, "llm_requests_total", outcome="ok") == 0
        fallbacks = {"from_model": "primary", "to_model": "backup", "reason": "http_503"}
        assert metric(stack, "llm_fallbacks_total", variant="primary", **fallbacks) == 3
        attempts = metric(stack, "llm_upstream_duration_seconds_count", variant="primary")
        assert attempts == 6  # each request tried both


def test_when_every_model_fails_the_client_gets_the_last_error(
    make_lab: MakeLab, write_flags: WriteFlags
) -> None:
    write_flags(["primary", "backup", "slow"])
    models = [
        {"name": "primary", "base_url": "lab://primary", "fallback": ["backup"]},
        {"name": "backup", "base_url": "lab://backup"},
        {"name": "slow", "base_url": "lab://slow", "timeout": 0.3},
    ]
    providers = [
        provider("primary", errors=FAILING_503),
        provider("backup", errors={"rate": 1, "kinds": {"500": 1}}),
        provider("slow", errors={"rate": 1, "kinds": {"timeout": 1}}),
    ]
    with LabStack(make_lab(providers, models), traffic=False) as stack:
        failed = chat(stack)
        assert failed.status_code == 500
        assert failed.json()["error"]["message"]
        assert failed.headers["x-canaryctl-model"] == "backup"
        # Counted under the model that failed first: the variant is judged on its own model.
        labels = {"variant": "primary", "model": "primary", "outcome": "error"}
        assert metric(stack, "llm_requests_total", **labels) == 1
        assert metric(stack, "llm_requests_total", variant="primary", model="backup") == 0

        write_flags(["slow", "primary"], version=2)
        started = time.monotonic()
        while chat(stack).headers["x-canaryctl-variant"] != "slow":
            assert time.monotonic() - started < 3
        timed_out = chat(stack)
        assert timed_out.status_code == 504
        assert timed_out.json()["error"]["type"] == "timeout"
        assert metric(stack, "llm_requests_total", model="slow", outcome="error") >= 2


def test_streams_pass_through_and_are_metered(make_lab: MakeLab, write_flags: WriteFlags) -> None:
    write_flags(["primary", "backup"])
    models = [
        {
            "name": "primary",
            "base_url": "lab://primary",
            "fallback": ["backup"],
            "price": {"prompt_per_1k": 1.0, "completion_per_1k": 2.0},
        },
        {"name": "backup", "base_url": "lab://backup", "price": {"completion_per_1k": 10.0}},
    ]
    lab = make_lab([provider("primary", errors=FAILING_503), provider("backup")], models)
    with LabStack(lab, traffic=False) as stack:
        plain = chat(stack, stream=True)
        counted = chat(stack, stream=True, stream_options={"include_usage": True})
        assert plain.headers["content-type"].startswith("text/event-stream")
        assert plain.headers["x-canaryctl-model"] == "backup"  # fallback before the first byte
        events = [line[6:] for line in counted.text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
        assert text.startswith("2 + 3 = ")
        usage = chunks[-1]["usage"]
        assert '"usage"' not in plain.text  # the client did not ask for it
        completion = metric(stack, "llm_tokens_total", model="backup", kind="completion")
        assert completion > usage["completion_tokens"]  # both streams were counted
        cost = metric(stack, "llm_cost_usd_total", model="backup")
        assert cost == pytest.approx(completion / 1000 * 10.0)
        assert metric(stack, "llm_requests_total", outcome="fallback_ok") == 2


def test_metrics_expose_the_contract_names_and_labels(
    pair: tuple[LabStack, WriteFlags],
) -> None:
    stack, _ = pair
    reply = chat(stack).json()
    text = httpx.get(stack.metrics_url).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    labels = {"route": "bot", "variant": "a", "model": "a", "provider": "openai"}
    per_request = {*labels, "tier"}  # the requester's tier, bounded: see test_gateway_tiers.py
    expected = {
        "llm_requests": {*per_request, "outcome"},
        "llm_request_duration_seconds": {*per_request, "le"},
        "llm_upstream_duration_seconds": {*labels, "le"},
        "llm_tokens": {*per_request, "kind"},
        # Model `a` has no price: its answers are counted here, at no cost in llm_cost_usd.
        "llm_unpriced_requests": {*per_request, "outcome"},
    }
    for name, label_names in expected.items():
        samples = [s for s in families[name].samples if not s.name.endswith("_created")]
        assert samples, name
        assert {key for s in samples for key in s.labels} == label_names, name
    assert "llm_fallbacks" in families and "llm_flag_evaluation_errors" in families
    assert not [s for s in families["llm_cost_usd"].samples if not s.name.endswith("_created")]
    buckets = {
        s.labels["le"] for s in families["llm_request_duration_seconds"].samples if "le" in s.labels
    }
    assert {"1.75", "2.0", "2.25", "30.0", "+Inf"} <= buckets
    usage = reply["usage"]
    assert metric(stack, "llm_tokens_total", **labels, kind="prompt") == usage["prompt_tokens"]
    assert (
        metric(stack, "llm_tokens_total", **labels, kind="completion") == usage["completion_tokens"]
    )


def test_an_ollama_model_is_spoken_to_in_its_own_dialect(
    make_lab: MakeLab, write_flags: WriteFlags
) -> None:
    write_flags(["llama"])
    models = [
        {
            "name": "llama",
            "provider": "ollama",
            "base_url": "lab://llama",
            "upstream_model": "llama3:8b",
            "price": {"completion_per_1k": 1.0},
        }
    ]
    with LabStack(make_lab([provider("llama")], models), traffic=False) as stack:
        reply = chat(stack)
        assert reply.status_code == 200
        body = reply.json()
        assert body["object"] == "chat.completion"
        assert body["model"] == "llama3:8b"
        assert body["choices"][0]["message"]["content"].startswith("2 + 3 = ")
        assert body["usage"]["completion_tokens"] > 0
        streamed = chat(stack, stream=True, stream_options={"include_usage": True})
        events = [line[6:] for line in streamed.text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        assert json.loads(events[-2])["usage"]["completion_tokens"] > 0
        labels = {"model": "llama", "provider": "ollama", "outcome": "ok"}
        assert metric(stack, "llm_requests_total", **labels) == 2
        assert metric(stack, "llm_cost_usd_total", model="llama") > 0


def test_clients_may_speak_ollama_to_the_gateway(pair: tuple[LabStack, WriteFlags]) -> None:
    stack, _ = pair
    messages = [{"role": "user", "content": "What is 4 * 5?"}]
    single = httpx.post(
        f"{stack.gateway_url}/api/chat",
        json={"model": "bot", "messages": messages, "stream": False},
    )
    assert single.headers["x-canaryctl-variant"] == "a"
    body = single.json()
    assert body["done"] is True and body["message"]["content"].startswith("4 * 5 = ")
    assert body["eval_count"] > 0 and body["prompt_eval_count"] > 0
    streamed = httpx.post(
        f"{stack.gateway_url}/api/generate", json={"model": "bot", "prompt": "hi"}
    )
    lines = [json.loads(line) for line in streamed.text.splitlines()]
    assert [line["done"] for line in lines] == [False] * (len(lines) - 1) + [True]
    assert "".join(line["response"] for line in lines)
    assert lines[-1]["eval_count"] > 0
    unknown = httpx.post(
        f"{stack.gateway_url}/api/chat", json={"model": "nope", "messages": messages}
    )
    assert unknown.status_code == 404 and isinstance(unknown.json()["error"], str)


def test_bad_requests_are_refused_and_counted_as_rejected(
    pair: tuple[LabStack, WriteFlags],
) -> None:
    stack, _ = pair
    unknown = chat(stack, model="no-such-route")
    assert unknown.status_code == 404
    assert "no-such-route" in unknown.json()["error"]["message"]
    empty = chat(stack, messages=[])
    assert empty.status_code == 400
    assert empty.headers["x-canaryctl-variant"] == "a"
    assert metric(stack, "llm_requests_total", outcome="rejected") == 1
    assert metric(stack, "llm_requests_total") == 1  # unknown routes are not a series


def test_a_flag_that_cannot_be_evaluated_serves_the_default_model(
    make_lab: MakeLab, write_flags: WriteFlags
) -> None:
    write_flags(["b", "a"])
    lab = make_lab([provider("a"), provider("b")], flag="missing-flag")
    with LabStack(lab, traffic=False) as stack:
        response = chat(stack)
        assert response.status_code == 200
        assert response.headers["x-canaryctl-variant"] == "a"
        assert metric(stack, "llm_flag_evaluation_errors_total", route="bot") == 1


def test_gateway_serve_refuses_bad_documents(tmp_path: Path) -> None:
    doc = tmp_path / "gateway.yaml"
    doc.write_text(
        "apiVersion: canaryctl/v1\nkind: Gateway\nmetadata: {name: gw}\nspec:\n"
        "  flags: {provider: file, path: flags.json}\n"
        "  routes: [{name: bot, flag: f, default_model: a}]\n"
        "  models: [{name: a, base_url: 'lab://a'}]\n"
    )
    (tmp_path / "flags.json").write_text('{"flags": {}, "segments": {}}')
    runner = CliRunner()
    lab_url = runner.invoke(main, ["gateway", "serve", str(doc)])
    assert lab_url.exit_code == 2
    assert "lab serve" in lab_url.output
    assert runner.invoke(main, ["gateway", "serve", str(doc), "--listen", "nope"]).exit_code == 2
    doc.write_text(doc.read_text().replace("default_model: a", "default_model: z"))
    invalid = runner.invoke(main, ["gateway", "serve", str(doc)])
    assert invalid.exit_code == 2 and "default_model" in invalid.output
