"""Each request is counted by what the variant's own model did, over real loopback HTTP: a broken
upstream (401, 404, `{}`, an empty completion, bad usage...) is an error that walks the fallback
chain, the client never sees a 500 or the provider's auth text, and only the client's own
mistakes are `rejected`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from misbehaving_upstream import LEAKED_KEY_TEXT, misbehaving_app
from prometheus_client.parser import text_string_to_metric_families

from canaryctl.chaos.server import BackgroundServer
from canaryctl.lab import LabStack
from canaryctl.metrics import ScrapeMetricsSource, measure
from canaryctl.retry import RetryPolicy
from canaryctl.runbook.lab import LabSpec

FAST = {"median": 0.001, "p95": 0.002}
BROKEN = (
    "401",
    "403",
    "404",
    "503",
    "empty_object",
    "empty_completion",
    "bad_usage",
    "negative_usage",
    "deep",
    "deep503",
)
KEY = "sk-test-not-a-real-key-cret"


class Gateway:
    """A gateway with one route per model: route `r-<model>` always serves `<model>`; models
    `<kind>` send to the misbehaving upstream, `<kind>+fb` too but fall back to lab `backup`."""

    def __init__(self, stack: LabStack, authorization: list[str | None]) -> None:
        self.stack, self.authorization = stack, authorization

    def chat(
        self, model: str, *, path: str = "/v1/chat/completions", **body: Any
    ) -> httpx.Response:
        payload = {"model": f"r-{model}", "messages": [{"role": "user", "content": "2 + 3?"}]}
        return httpx.post(self.stack.gateway_url + path, json={**payload, **body}, timeout=10)

    def stream(self, model: str) -> tuple[httpx.Response, str]:
        payload = {
            "model": f"r-{model}",
            "stream": True,
            "messages": [{"role": "user", "content": "hi"}],
        }
        with httpx.stream(
            "POST", self.stack.gateway_url + "/v1/chat/completions", json=payload, timeout=10
        ) as response:
            try:
                text = "".join(response.iter_text())
            except httpx.RemoteProtocolError:  # a stream cut after its headers
                text = "<cut>"
            return response, text

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
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("outcomes")
    mp = pytest.MonkeyPatch()
    mp.setenv("OUTCOMES_TEST_KEY", KEY)
    app = misbehaving_app()
    with BackgroundServer(app) as upstream:
        kinds = [*BROKEN, "ok", "filtered", "400", "413", "422", "broken"]
        models: list[dict[str, Any]] = [{"name": "backup", "base_url": "lab://backup"}]
        for kind in kinds:
            model = {"name": kind, "base_url": f"{upstream.url}/{kind}"}
            models += [model, {**model, "name": f"{kind}+fb", "fallback": ["backup"]}]
        models[1]["api_key_env"] = "OUTCOMES_TEST_KEY"  # the 401 model sends a key
        names = [m["name"] for m in models]
        _flags(tmp / "flags.json", names)
        spec = LabSpec.model_validate(
            {
                "providers": [{"name": "backup", "latency": FAST}],
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
            yield Gateway(stack, app.state.authorization)
    mp.undo()


@pytest.mark.parametrize("kind", BROKEN)
def test_a_broken_model_is_an_error_and_the_client_never_sees_a_500(
    gateway: Gateway, kind: str
) -> None:
    before = gateway.count("llm_requests_total", variant=kind, outcome="error")
    response = gateway.chat(kind)
    assert response.status_code == (503 if kind.endswith("503") else 502), response.text
    message = response.json()["error"]["message"]
    assert kind.endswith("503") or kind in message  # canaryctl's own words, naming the model
    assert "sk-" not in response.text and LEAKED_KEY_TEXT not in response.text
    assert gateway.count("llm_requests_total", variant=kind, outcome="error") == before + 1
    assert gateway.count("llm_requests_total", variant=kind, outcome="rejected") == 0


@pytest.mark.parametrize("kind", BROKEN)
def test_a_broken_model_walks_its_fallback_chain_and_counts_as_fallback_ok(
    gateway: Gateway, kind: str
) -> None:
    variant = f"{kind}+fb"
    response = gateway.chat(variant)
    assert response.status_code == 200, response.text
    assert response.headers["x-canaryctl-variant"] == variant
    assert response.headers["x-canaryctl-model"] == "backup"
    assert gateway.count("llm_requests_total", variant=variant, outcome="fallback_ok") >= 1
    assert gateway.count("llm_requests_total", variant=variant, outcome="ok") == 0
    assert gateway.count("llm_fallbacks_total", variant=variant) >= 1


def test_a_401_names_the_model_and_its_variable_but_never_quotes_the_provider(
    gateway: Gateway,
) -> None:
    sent = len(gateway.authorization)
    response = gateway.chat("401")
    message = response.json()["error"]["message"]
    assert "model 401" in message and "OUTCOMES_TEST_KEY" in message
    assert KEY not in response.text and "Incorrect API key" not in response.text
    assert gateway.authorization[sent:] == [
        f"Bearer {KEY}"
    ]  # the key named in api_key_env was sent
    ollama = gateway.chat("401", path="/api/chat", stream=False)
    assert ollama.status_code == 502 and "Incorrect API key" not in ollama.text
    assert "model 401" in ollama.json()["error"]


@pytest.mark.parametrize("status", ["400", "413", "422"])
def test_only_the_clients_own_mistakes_are_rejected_and_no_fallback_is_asked(
    gateway: Gateway, status: str
) -> None:
    variant = f"{status}+fb"
    response = gateway.chat(variant)
    assert response.status_code == int(status)
    assert response.headers["x-canaryctl-model"] == variant  # not the fallback
    assert gateway.count("llm_requests_total", variant=variant, outcome="rejected") >= 1
    assert gateway.count("llm_fallbacks_total", variant=variant) == 0


def test_a_content_filter_answer_is_filtered_and_passed_on_as_it_came(gateway: Gateway) -> None:
    response = gateway.chat("filtered+fb")
    assert response.status_code == 200
    assert response.json()["choices"][0]["finish_reason"] == "content_filter"
    assert response.headers["x-canaryctl-model"] == "filtered+fb"  # no other model was asked
    assert gateway.count("llm_requests_total", variant="filtered+fb", outcome="filtered") >= 1


def test_a_good_answer_is_ok(gateway: Gateway) -> None:
    response = gateway.chat("ok")
    assert response.status_code == 200
    assert gateway.count("llm_requests_total", variant="ok", outcome="ok") >= 1


@pytest.mark.parametrize("kind", ["empty_completion", "401", "404"])
def test_a_stream_that_says_nothing_still_falls_back(gateway: Gateway, kind: str) -> None:
    response, text = gateway.stream(f"{kind}+fb")
    assert response.status_code == 200
    assert response.headers["x-canaryctl-model"] == "backup"
    assert text.rstrip().endswith("data: [DONE]")
    assert gateway.count("llm_requests_total", variant=f"{kind}+fb", outcome="fallback_ok") >= 1


def test_an_empty_stream_without_fallback_is_a_502_error(gateway: Gateway) -> None:
    response, text = gateway.stream("empty_completion")
    assert response.status_code == 502
    assert "empty completion" in json.loads(text)["error"]["message"]
    assert gateway.count("llm_requests_total", variant="empty_completion", outcome="error") >= 1


@pytest.mark.parametrize("kind", ["broken", "negative_usage", "deep"])
def test_a_stream_that_breaks_after_its_first_content_is_an_error(
    gateway: Gateway, kind: str
) -> None:
    before = gateway.count("llm_requests_total", variant=kind, outcome="error")
    response, text = gateway.stream(kind)
    assert response.status_code == 200  # headers were gone with the first content
    assert "[DONE]" not in text  # the client sees a cut stream
    assert gateway.count("llm_requests_total", variant=kind, outcome="error") == before + 1


def test_filtered_and_good_streams_count_as_such(gateway: Gateway) -> None:
    response, text = gateway.stream("filtered")
    assert response.status_code == 200 and "content_filter" in text
    assert gateway.count("llm_requests_total", variant="filtered", outcome="filtered") >= 1
    response, text = gateway.stream("ok")
    assert response.status_code == 200 and text.rstrip().endswith("data: [DONE]")


def test_the_analysis_reads_a_rescued_canary_as_failing_every_request(gateway: Gateway) -> None:
    """The gateway's own counters, scraped as a rollout reads them: a model saved by its
    fallback every time has error_rate 1, while what its clients saw (served_error_rate) is 0."""
    source = ScrapeMetricsSource([gateway.stack.metrics_url], retry=RetryPolicy(attempts=1))
    source.check()
    since = source._history[-1].at
    for _ in range(5):
        assert gateway.chat("404+fb").status_code == 200
        assert gateway.chat("413").status_code == 413
    observation = source.observe(since)
    rescued, refused = observation.of("404+fb"), observation.of("413")
    assert rescued.requests == 5
    assert measure("error_rate", rescued) == 1.0
    assert measure("served_error_rate", rescued) == 0.0
    assert measure("rejected_rate", refused) == 1.0
    assert measure("error_rate", refused) is None  # no request the model is answerable for
