"""Reading a shadow step's traffic: the shadow families and the judge's pairwise counts, as
prometheus_client renders them (the families of the brief's shadow contract), through the scrape
source over httpx.MockTransport, and through a real Prometheus with the canaryctl profile's
shadow queries (e2e)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    Summary,
    generate_latest,
    start_http_server,
)

from canaryctl.metrics import ScrapeMetricsSource, ShadowSource, metrics_source_for
from canaryctl.metrics.measures import measure
from canaryctl.runbook.rollout import PrometheusMetricsSpec
from tests.prometheus_server import eventually, running_prometheus

URL = "http://gw:8080/metrics"
BASE, CANDIDATE = "gpt-4-turbo", "gpt-4o-mini"
LABELS = ["route", "variant", "model", "provider", "tier"]


class Gateway:
    """The user-facing and the shadow families side by side, in one registry."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("llm_requests_total", "", [*LABELS, "outcome"], registry=r)
        self.duration = Histogram(
            "llm_request_duration_seconds", "", LABELS, buckets=(0.5, 1, 2), registry=r
        )
        self.shadow_requests = Counter(
            "llm_shadow_requests_total", "", [*LABELS, "outcome"], registry=r
        )
        self.shadow_duration = Histogram(
            "llm_shadow_request_duration_seconds", "", LABELS, buckets=(0.5, 1, 2), registry=r
        )
        self.shadow_cost = Counter("llm_shadow_cost_usd_total", "", LABELS, registry=r)
        self.shadow_quality = Summary("llm_shadow_quality_score", "", LABELS, registry=r)
        self.pairwise = Counter(
            "llm_judge_pairwise_total",
            "",
            ["route", "baseline", "candidate", "result"],
            registry=r,
        )

    def serve(self, n: int, *, shadow_outcome: str = "ok", result: str = "tie") -> None:
        """`n` requests to the baseline, each shadowed to the candidate and judged (none: the
        series are declared at zero, as Prometheus must see them before they grow)."""
        live = {"route": "support", "variant": BASE, "model": BASE, "provider": "x", "tier": "free"}
        shadow = {**live, "variant": CANDIDATE, "model": CANDIDATE}
        for family, labels in ((self.requests, live), (self.shadow_requests, shadow)):
            family.labels(**labels, outcome=shadow_outcome if labels is shadow else "ok")
        for family in (self.shadow_duration, self.shadow_cost, self.shadow_quality):
            family.labels(**shadow)
        self.duration.labels(**live)
        self.pairwise.labels("support", BASE, CANDIDATE, result)
        for _ in range(n):
            self.requests.labels(**live, outcome="ok").inc()
            self.duration.labels(**live).observe(0.4)
            self.shadow_requests.labels(**shadow, outcome=shadow_outcome).inc()
            self.shadow_duration.labels(**shadow).observe(1.5)
            self.shadow_cost.labels(**shadow).inc(0.002)
            self.shadow_quality.labels(**shadow).observe(0.75)
            self.pairwise.labels("support", BASE, CANDIDATE, result).inc()

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(
            lambda request: httpx.Response(200, content=generate_latest(self.registry))
        )


def source(gateway: Gateway, clock: list[float]) -> ScrapeMetricsSource:
    return ScrapeMetricsSource(
        [URL], client=httpx.Client(transport=gateway.transport()), clock=lambda: clock[0]
    )


def test_the_candidate_is_read_from_the_shadow_families_and_the_baseline_from_its_own() -> None:
    gateway, clock = Gateway(), [100.0]
    scrape = source(gateway, clock)
    gateway.serve(7, result="win")  # before the window: not counted
    scrape.check()
    clock[0] = 130.0
    gateway.serve(10, result="win")
    gateway.serve(4, shadow_outcome="error", result="loss")
    gateway.serve(6, result="tie")
    observed = scrape.observe_shadow(100.0, baseline=BASE, candidate=CANDIDATE)
    assert (observed.start, observed.end) == (100.0, 130.0)
    baseline, candidate = observed.of(BASE), observed.of(CANDIDATE)
    assert baseline.requests == 20 and baseline.pairs == 0
    assert measure("latency_p95_seconds", baseline) <= 0.5
    assert candidate.requests == 20 and candidate.errors == 4
    assert measure("latency_p95_seconds", candidate) > 1.0
    assert measure("cost_per_query_usd", candidate) == pytest.approx(0.002)
    assert measure("quality_score", candidate) == 0.75
    assert (candidate.pairs, candidate.pair_wins, candidate.pair_ties) == (20, 10, 6)
    assert measure("win_rate", candidate) == (10 + 6 / 2) / 20


def test_shadow_calls_never_count_as_user_facing_traffic() -> None:
    gateway, clock = Gateway(), [100.0]
    scrape = source(gateway, clock)
    scrape.check()
    clock[0] = 130.0
    gateway.serve(10, shadow_outcome="error")
    live = scrape.observe(100.0)
    assert set(live.variants) == {BASE}  # the candidate served nobody
    assert live.of(BASE).requests == 10 and live.of(BASE).errors == 0
    assert scrape.recent_requests(300) == {BASE: 10}


@pytest.mark.e2e
def test_a_real_prometheus_answers_the_shadow_queries_of_the_canaryctl_profile(
    tmp_path: Path,
) -> None:
    gateway = Gateway()
    server, thread = start_http_server(0, addr="127.0.0.1", registry=gateway.registry)
    try:
        with running_prometheus(tmp_path) as prometheus:
            for result, outcome in (("win", "ok"), ("loss", "ok"), ("tie", "error")):
                gateway.serve(0, result=result, shadow_outcome=outcome)
            created = time.time()
            prometheus.scrape(f"http://127.0.0.1:{server.server_port}/metrics")
            prometheus.scraped_after("llm_judge_pairwise_total", created)  # every series at zero
            start = time.time()
            gateway.serve(40, result="win")
            gateway.serve(40, result="loss")
            gateway.serve(20, result="tie", shadow_outcome="error")
            total = 'sum(llm_judge_pairwise_total{result="tie"})'
            eventually("Prometheus to scrape the pairs", lambda: prometheus.value(total) == 20)
            # A few more scrapes, counted, so that increase() sees the series grow.
            prometheus.scraped_after("llm_judge_pairwise_total", time.time(), scrapes=2)
            spec = PrometheusMetricsSpec(provider="prometheus", url=prometheus.url)
            source = metrics_source_for(spec)
            assert isinstance(source, ShadowSource)
            observed = source.observe_shadow(start - 5, baseline=BASE, candidate=CANDIDATE)
    finally:
        server.shutdown()
        thread.join()
    candidate, baseline = observed.of(CANDIDATE), observed.of(BASE)
    # increase() extrapolates to the window's edges: shares are exact, counts approximate.
    assert candidate.pairs > 0 and baseline.requests > 0 and baseline.pairs == 0
    assert measure("win_rate", candidate) == pytest.approx(0.5)
    assert candidate.pair_ties / candidate.pairs == pytest.approx(0.2)
    assert measure("error_rate", candidate) == pytest.approx(0.2)
    assert measure("error_rate", baseline) == 0
    assert measure("quality_score", candidate) == pytest.approx(0.75)
