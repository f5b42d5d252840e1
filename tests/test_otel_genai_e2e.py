"""canaryctl judging a rollout from OpenTelemetry's GenAI metrics alone: an app on the official
OpenAI client, instrumented by `opentelemetry-instrumentation-openai-v2` and exported for a real
Prometheus (examples/openai_otel_app.py), asks the flag for its model per request and calls the
lab's providers directly, with no canaryctl gateway in the path. Through the shipped `otel-genai`
profile a canary failing half its calls is rolled back and a healthy one promoted."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from loopback import free_port
from prometheus_client.parser import text_string_to_metric_families
from prometheus_server import PrometheusServer, eventually, running_prometheus
from scipy.stats import binom

from canaryctl.controller import run_rollout
from canaryctl.lab import LabStack
from canaryctl.runbook import Rollout, parse_document

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
APP = EXAMPLES / "openai_otel_app.py"
LANGCHAIN_APP = EXAMPLES / "langchain_app.py"
FAST = {"median": 0.01, "p95": 0.03}
FLAG = "model-flag"


@pytest.fixture
def world(
    tmp_path: Path, make_lab: Callable[..., Any], write_flags: Callable[..., Path]
) -> Iterator[tuple[Path, PrometheusServer]]:
    flags = write_flags(["base", "good", "bad"])
    lab = make_lab([
        {"name": "base", "latency": FAST},
        {"name": "good", "latency": FAST},
        {"name": "bad", "latency": FAST, "errors": {"rate": 0.5, "kinds": {"500": 1.0}}},
    ])  # fmt: skip
    port = free_port()
    with LabStack(lab, flags_path=flags, traffic=False) as stack:
        models = [f"--model={n}={url}/v1" for n, url in stack.provider_urls.items()]
        app = subprocess.Popen(
            [sys.executable, str(APP), "--flags", str(flags), "--flag", FLAG, *models,
             "--metrics-port", str(port), "--rate", "40"],
            stdout=subprocess.DEVNULL, stderr=(tmp_path / "app.log").open("wb"),
        )  # fmt: skip
        try:
            with running_prometheus(tmp_path) as prometheus:
                prometheus.scrape(f"http://127.0.0.1:{port}/metrics")
                seen = (
                    "sum(gen_ai_client_operation_duration_seconds_count"
                    '{gen_ai_request_model="base"})'
                )
                eventually("the app's calls to base", lambda: (prometheus.value(seen) or 0) > 20)
                yield flags, prometheus
        finally:
            app.terminate()
            app.wait(timeout=20)


def rollout(flags: Path, prometheus: PrometheusServer, canary: str) -> Rollout:
    document = {
        "apiVersion": "canaryctl/v1",
        "kind": "Rollout",
        "metadata": {"name": f"to-{canary}"},
        "spec": {
            "flag": {"provider": "file", "path": str(flags), "key": FLAG, "baseline": "base",
                     "canary": canary},
            "metrics": {"provider": "prometheus", "url": prometheus.url, "profile": "otel-genai"},
            "slos": [{"metric": "error_rate", "max": 0.05},
                     {"metric": "latency_p95_seconds", "max": 2.0}],
            "analysis": {"interval": "3s", "min_requests": 15, "method": "threshold",
                         "failure_limit": 0, "inconclusive_limit": 60},
            "steps": [{"set_weight": 50}, {"pause": "9s"}, {"set_weight": 100}, {"pause": "6s"}],
        },
    }  # fmt: skip
    return parse_document(yaml.safe_dump(document), "rollout.yaml", expect=Rollout)


def test_a_failing_canary_is_rolled_back_and_a_healthy_one_promoted_from_otel_metrics(
    tmp_path: Path, world: tuple[Path, PrometheusServer]
) -> None:
    flags, prometheus = world
    bad = run_rollout(rollout(flags, prometheus, "bad"), state_path=tmp_path / "bad.db")
    assert bad.outcome == "rolled_back", bad.reason
    assert "error_rate" in bad.reason
    good = run_rollout(rollout(flags, prometheus, "good"), state_path=tmp_path / "good.db")
    assert good.outcome == "promoted", good.reason


def test_the_langchain_example_calls_the_model_the_flag_names_and_reports_it(
    tmp_path: Path, make_lab: Callable[..., Any], write_flags: Callable[..., Path]
) -> None:
    """examples/langchain_app.py: 30% of users on the canary by the flag, its calls through
    LangChain reported per model by the OpenAI instrumentation, the split within a binomial
    interval that a right split leaves once in 10 million runs (users are drawn from a pool
    large enough that nearly every one is new). It needs 600 calls to refuse a 50% split as
    surely (a 50% split falls in it with probability below 1e-6)."""
    share = 0.3
    rollout = {
        "variations": [{"variation": 0, "weight": 70_000}, {"variation": 1, "weight": 30_000}]
    }
    flags = write_flags(["base", "good"], fallthrough={"rollout": rollout})
    lab = make_lab([{"name": "base", "latency": FAST}, {"name": "good", "latency": FAST}])
    port = free_port()
    with LabStack(lab, flags_path=flags, traffic=False) as stack:
        models = [f"--model={n}={url}/v1" for n, url in stack.provider_urls.items()]
        app = subprocess.Popen(
            [sys.executable, str(LANGCHAIN_APP), "--flags", str(flags), "--flag", FLAG, *models,
             "--metrics-port", str(port), "--rate", "80", "--users", "1000000"],
            stdout=subprocess.DEVNULL, stderr=(tmp_path / "app.log").open("wb"),
        )  # fmt: skip
        try:
            calls = eventually_counted(f"http://127.0.0.1:{port}/metrics", at_least=600)
        finally:
            app.terminate()
            app.wait(timeout=30)
    total = calls.get("base", 0) + calls.get("good", 0)
    low, high = binom.interval(1 - 1e-7, total, share)
    assert low <= calls.get("good", 0) <= high, calls
    assert not (tmp_path / "app.log").read_text().strip(), "the app reported failed calls"


def eventually_counted(url: str, at_least: int) -> dict[str, float]:
    """Completed calls per requested model from the app's own /metrics, once there are
    `at_least` of them (a count, not a duration: the machine's speed only changes when)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            calls: dict[str, float] = {}
            for family in text_string_to_metric_families(httpx.get(url, timeout=5).text):
                for sample in family.samples:
                    if sample.name == "gen_ai_client_operation_duration_seconds_count":
                        model = sample.labels["gen_ai_request_model"]
                        calls[model] = calls.get(model, 0) + sample.value
            if sum(calls.values()) >= at_least:
                return calls
        time.sleep(0.5)
    pytest.fail(f"fewer than {at_least} calls reported at {url} within 120 s")
