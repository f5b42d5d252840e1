"""Reading a shadow step's traffic: the shadow families and the judge's pairwise counts, as
prometheus_client renders them (the families of the brief's shadow contract), through the scrape
source over httpx.MockTransport."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, Summary, generate_latest

from canaryctl.metrics import ScrapeMetricsSource
from canaryctl.metrics.measures import measure

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
        """`n` requests to the baseline, each shadowed to the candidate and judged."""
        live = {"route": "support", "variant": BASE, "model": BASE, "provider": "x", "tier": "free"}
        shadow = {**live, "variant": CANDIDATE, "model": CANDIDATE}
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
