"""p95 and tokens per model for `cost optimize` from a real Prometheus scraping the gateway's
own metric families (GatewayMetrics, served over loopback), over a window."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from prometheus_client import start_http_server

from canaryctl.cli.main import main
from canaryctl.cost.observed import prometheus_observed, prometheus_traffic
from canaryctl.errors import InvalidInput, MetricsBackendError
from canaryctl.gateway.metrics import GatewayMetrics
from canaryctl.runbook.optimize import PrometheusFactsSpec
from tests.cost_lab import write_document
from tests.loopback import free_port
from tests.prometheus_server import PrometheusServer, eventually, running_prometheus


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    with running_prometheus(tmp_path_factory.mktemp("prometheus")) as server:
        yield server


def _labels(model: str, route: str = "support-bot", tier: str = "free") -> dict[str, str]:
    return {"route": route, "variant": "a", "model": model, "provider": "openai", "tier": tier}


def test_p95_tokens_and_traffic_over_a_window(
    prometheus: PrometheusServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    metrics = GatewayMetrics()
    server, thread = start_http_server(0, addr="127.0.0.1", registry=metrics.registry)
    try:
        for model in ("fast", "slow"):  # series exist at zero before the traffic
            metrics.requests.labels(**_labels(model), outcome="ok").inc(0)
            metrics.tokens.labels(**_labels(model), kind="prompt").inc(0)
            metrics.tokens.labels(**_labels(model), kind="completion").inc(0)
            metrics.duration.labels(**_labels(model))
        metrics.requests.labels(**_labels("fast", tier="paid"), outcome="ok").inc(0)
        prometheus.scrape(f"http://127.0.0.1:{server.server_port}/metrics")
        time_two_scrapes = "count_over_time(up[1m])"
        eventually("two scrapes", lambda: (prometheus.value(time_two_scrapes) or 0) >= 2)
        for model, seconds, completion in (("fast", 0.3, 100), ("slow", 2.6, 300)):
            for i in range(200):
                metrics.duration.labels(**_labels(model)).observe(seconds * (0.5 + i / 200))
            metrics.requests.labels(**_labels(model), outcome="ok").inc(200)
            metrics.requests.labels(**_labels(model), outcome="rejected").inc(50)
            metrics.tokens.labels(**_labels(model), kind="prompt").inc(200 * 20)
            metrics.tokens.labels(**_labels(model), kind="completion").inc(200 * completion)
        metrics.requests.labels(**_labels("fast", "elsewhere"), outcome="ok").inc(999)
        metrics.requests.labels(**_labels("fast", tier="paid"), outcome="ok").inc(100)
        query = 'sum(increase(llm_requests_total{route="support-bot",tier="paid"}[1m]))'
        eventually("the traffic", lambda: (prometheus.value(query) or 0) > 50)
        spec = PrometheusFactsSpec(url=prometheus.url, window=60)
        observed = prometheus_observed(spec, "support-bot")
        traffic = prometheus_traffic(spec, "support-bot")
        folder = tmp_path_factory.mktemp("plan")
        document = write_document(
            folder,
            monthly_queries=None,
            prometheus={"url": prometheus.url, "window": "1m"},
            tiers={"free": {"p95": "2s", "min_accuracy": 0.6}, "paid": {"min_accuracy": 0.8}},
        )
        result = CliRunner().invoke(main, ["cost", "optimize", str(document), "-o", "json"])
    finally:
        server.shutdown()
        thread.join()
    fast, slow = observed["fast"], observed["slow"]
    assert fast.source == "prometheus"
    assert 0.3 < (fast.p95_seconds or 0) < 0.6
    assert 2.5 < (slow.p95_seconds or 0) < 5.0
    # increase() extrapolates to the window's edges, per series: ratios are close, not exact
    assert slow.completion_tokens == pytest.approx(300, rel=0.05)
    assert slow.prompt_tokens == pytest.approx(20, rel=0.05)
    # per tier, rejected requests left out, scaled from the 1-minute window to 30 days
    assert traffic["free"] / traffic["paid"] == pytest.approx(4, rel=0.1)
    assert traffic["paid"] == pytest.approx(100 * 30 * 24 * 60, rel=0.5)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["traffic_source"] == "prometheus"
    tiers = {t["tier"]: t["monthly_queries"] for t in report["tiers"]}
    assert tiers == pytest.approx({"free": traffic["free"], "paid": traffic["paid"]}, rel=0.2)
    models = {m["model"]: m for m in report["models"]}
    assert models["gpt-4-turbo"]["sources"]["p95"] == "eval", "Prometheus saw no such model"


def test_a_prometheus_that_is_down_or_needs_a_token_is_a_clear_error(tmp_path: Path) -> None:
    down = PrometheusFactsSpec(url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(MetricsBackendError, match="cannot query Prometheus"):
        prometheus_observed(down, "bot", client=httpx.Client(timeout=1))
    secret = PrometheusFactsSpec(url="http://127.0.0.1:9", bearer_token_env="PROM_TOKEN")
    with pytest.raises(InvalidInput, match="PROM_TOKEN is not set"):
        prometheus_observed(secret, "bot", environ={})
