"""The scrape source on canned gateway exposition text, and on a real prometheus_client server."""

from __future__ import annotations

import math
import socket
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, Summary, start_http_server

from canaryctl.errors import MetricsBackendError
from canaryctl.metrics import (
    EMPTY,
    MetricsSource,
    ScrapeMetricsSource,
    VariantStats,
    metrics_source_for,
)
from canaryctl.metrics.measures import measure
from canaryctl.retry import RetryPolicy
from canaryctl.runbook.rollout import ScrapeMetricsSpec

URL = "http://gw-1:8080/metrics"
URL_2 = "http://gw-2:8080/metrics"
QUICK = RetryPolicy(attempts=3, backoff=0, jitter=0)
"""Three attempts that wait for nothing."""
BOUNDS = ("0.1", "0.5", "1.0", "2.5", "+Inf")
BASE, CANARY = "gpt-4-turbo", "gpt-4o-mini"


class FakeGateway:
    """Cumulative counters rendered as the gateway's exposition text (the design.md contract)."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def _inc(self, name: str, value: float, **labels: str) -> None:
        key = (name, tuple(labels.items()))
        self.values[key] = self.values.get(key, 0.0) + value

    def serve(
        self,
        variant: str,
        n: int = 1,
        *,
        outcome: str = "ok",
        seconds: float = 0.3,
        model: str | None = None,
        route: str = "support",
        cost: float = 0.001,
    ) -> None:
        labels = {"route": route, "variant": variant, "model": model or variant, "provider": "x"}
        self._inc("llm_requests_total", n, **labels, outcome=outcome)
        for le in BOUNDS:
            hit = n if seconds <= float(le) else 0
            self._inc("llm_request_duration_seconds_bucket", hit, **labels, le=le)
        self._inc("llm_tokens_total", 100 * n, **labels, kind="prompt")
        self._inc("llm_tokens_total", 50 * n, **labels, kind="completion")
        self._inc("llm_cost_usd_total", cost * n, **labels)

    def restart(self) -> None:
        self.values.clear()

    def text(self) -> str:
        lines = []
        for family, kind, prefix in [
            ("llm_requests_total", "counter", "llm_requests_total"),
            ("llm_request_duration_seconds", "histogram", "llm_request_duration_seconds_"),
            ("llm_tokens_total", "counter", "llm_tokens_total"),
            ("llm_cost_usd_total", "counter", "llm_cost_usd_total"),
        ]:
            lines += [f"# HELP {family} canned", f"# TYPE {family} {kind}"]
            for (name, labels), value in self.values.items():
                if name.startswith(prefix):
                    rendered = ",".join(f'{k}="{v}"' for k, v in labels)
                    lines.append(f"{name}{{{rendered}}} {value!r}")
        return "\n".join(lines) + "\n"


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def source_for(
    gateways: dict[str, FakeGateway], clock: Clock, *, route: str | None = None
) -> ScrapeMetricsSource:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text=gateways[str(request.url)].text())

    client = httpx.Client(transport=httpx.MockTransport(handler))
    return ScrapeMetricsSource(list(gateways), route=route, clock=clock, client=client)


@pytest.fixture
def gateway() -> FakeGateway:
    gw = FakeGateway()
    gw.serve(BASE, 500)  # traffic from before the window, which must not count
    gw.serve(CANARY, 20, outcome="error", seconds=2.0)
    return gw


def test_is_a_metrics_source() -> None:
    assert isinstance(ScrapeMetricsSource([URL]), MetricsSource)


def test_window_counts_per_variant(gateway: FakeGateway) -> None:
    clock = Clock(1000.0)
    source = source_for({URL: gateway}, clock)
    source.check()

    gateway.serve(BASE, 90)
    gateway.serve(BASE, 10, outcome="error", seconds=2.0, cost=0.0)
    gateway.serve(CANARY, 6, seconds=0.05)
    gateway.serve(CANARY, 2, outcome="fallback_ok", seconds=0.8, model=BASE)  # summed per variant
    gateway.serve(CANARY, 1, outcome="error", seconds=5.0)
    gateway.serve(CANARY, 1, outcome="rejected", seconds=0.01)
    clock.now = 1030.0
    obs = source.observe(since=1000.0)

    assert (obs.start, obs.end) == (1000.0, 1030.0)
    base = obs.of(BASE)
    assert (base.requests, base.errors, base.fallbacks) == (100, 10, 0)
    assert base.latency_buckets == ((0.1, 0), (0.5, 90), (1.0, 90), (2.5, 100), (math.inf, 100))
    assert (base.prompt_tokens, base.completion_tokens) == (10_000, 5_000)
    assert base.cost_usd == pytest.approx(0.09)
    canary = obs.of(CANARY)
    assert (canary.requests, canary.errors, canary.fallbacks) == (10, 1, 2)
    assert canary.latency_buckets == ((0.1, 7), (0.5, 7), (1.0, 9), (2.5, 9), (math.inf, 10))
    assert (canary.prompt_tokens, canary.completion_tokens) == (1_000, 500)
    assert canary.cost_usd == pytest.approx(0.01)


def test_route_filter_counts_only_that_route(gateway: FakeGateway) -> None:
    clock = Clock()
    source = source_for({URL: gateway}, clock, route="support")
    source.check()
    gateway.serve(CANARY, 5)
    gateway.serve(CANARY, 50, route="search")
    gateway.serve(BASE, 70, route="search")
    clock.now += 30
    obs = source.observe(since=1000.0)
    assert obs.of(CANARY).requests == 5
    assert BASE not in obs.variants


def test_targets_are_summed() -> None:
    one, two = FakeGateway(), FakeGateway()
    clock = Clock()
    source = source_for({URL: one, URL_2: two}, clock)
    source.check()
    one.serve(CANARY, 3, outcome="error")
    two.serve(CANARY, 4)
    clock.now += 30
    obs = source.observe(since=1000.0)
    assert (obs.of(CANARY).requests, obs.of(CANARY).errors) == (7, 3)


def test_a_restarted_gateway_counts_from_zero() -> None:
    # gw-1 restarts mid-window; gw-2 keeps growing: the sum of the two would hide the reset.
    one, two = FakeGateway(), FakeGateway()
    one.serve(CANARY, 100)
    two.serve(CANARY, 10)
    clock = Clock()
    source = source_for({URL: one, URL_2: two}, clock)
    source.check()
    one.restart()
    one.serve(CANARY, 4)
    two.serve(CANARY, 200)
    clock.now += 30
    assert source.observe(since=1000.0).of(CANARY).requests == 204


def test_window_starts_at_the_latest_sample_at_or_before_since(gateway: FakeGateway) -> None:
    clock = Clock(100.0)
    source = source_for({URL: gateway}, clock)
    source.check()  # t=100, canary has 20 requests
    gateway.serve(CANARY, 1)
    clock.now = 130.0
    source.check()  # t=130
    gateway.serve(CANARY, 10)
    clock.now = 160.0

    obs = source.observe(since=140.0)
    assert (obs.start, obs.of(CANARY).requests) == (130.0, 10)
    clock.now = 170.0
    # Nothing that old: from the oldest sample kept. Windows only move forward, so the source
    # keeps the last window's first sample (t=130) and the latest, not the one at t=100.
    oldest = source.observe(since=50.0)
    assert (oldest.start, oldest.of(CANARY).requests) == (130.0, 10)


def test_a_window_older_than_every_sample_starts_at_the_first(gateway: FakeGateway) -> None:
    clock = Clock(100.0)
    source = source_for({URL: gateway}, clock)
    source.check()
    gateway.serve(CANARY, 3)
    clock.now = 130.0
    obs = source.observe(since=50.0)
    assert (obs.start, obs.of(CANARY).requests) == (100.0, 3)


def test_a_variant_without_traffic_in_the_window_is_absent(gateway: FakeGateway) -> None:
    clock = Clock()
    source = source_for({URL: gateway}, clock)
    source.check()
    gateway.serve(BASE, 3)
    clock.now += 30
    obs = source.observe(since=1000.0)
    assert list(obs.variants) == [BASE]
    assert obs.of(CANARY) == EMPTY


def test_the_first_observe_without_a_check_is_an_empty_window(gateway: FakeGateway) -> None:
    # Counting from the gateway's start would mix in traffic from before the step.
    obs = source_for({URL: gateway}, Clock()).observe(since=990.0)
    assert obs.variants == {}


def test_a_gateway_that_served_nothing_yet_is_fine() -> None:
    source = source_for({URL: FakeGateway()}, Clock())
    source.check()
    assert source.observe(since=0.0).variants == {}


def transport_answering(answers: list[httpx.Response], calls: list[str]) -> httpx.Client:
    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        return answers.pop(0) if len(answers) > 1 else answers[0]

    return httpx.Client(transport=httpx.MockTransport(handler))


def test_a_target_that_is_not_a_gateway_fails_clearly() -> None:
    calls: list[str] = []
    other = httpx.Response(
        200, text="# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 1.5\n"
    )
    source = ScrapeMetricsSource([URL], client=transport_answering([other], calls), retry=QUICK)
    with pytest.raises(
        MetricsBackendError, match=f"{URL} answers but exposes no llm_requests_total"
    ):
        source.check()
    assert len(calls) == 1  # a definite answer, not retried


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        (httpx.Response(503, text="overloaded"), "HTTP 503 Service Unavailable"),
        (httpx.Response(200, text="<html>login</html>"), "not Prometheus exposition text"),
    ],
)
def test_bad_answers_are_retried_then_reported(response: httpx.Response, reason: str) -> None:
    calls: list[str] = []
    client = transport_answering([response], calls)
    source = ScrapeMetricsSource([URL], client=client, retry=QUICK)
    with pytest.raises(MetricsBackendError) as caught:
        source.check()
    assert str(caught.value).startswith(f"cannot read metrics from {URL} after 3 attempt(s)")
    assert reason in str(caught.value)
    assert len(calls) == 3


def test_a_failure_that_clears_within_the_retries_is_not_an_error() -> None:
    calls: list[str] = []
    good = httpx.Response(200, text=FakeGateway().text())
    client = transport_answering([httpx.Response(502), httpx.Response(502), good], calls)
    ScrapeMetricsSource([URL], client=client, retry=QUICK).check()
    assert len(calls) == 3


def test_an_unreachable_target_fails_after_retries_naming_the_url() -> None:
    with socket.socket() as sock:  # a loopback port that was free a moment ago: nobody listens
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/metrics"
    source = ScrapeMetricsSource([url], retry=QUICK, timeout=2.0)
    with pytest.raises(MetricsBackendError, match="ConnectError") as caught:
        source.check()
    assert f"cannot read metrics from {url} after 3 attempt(s)" in str(caught.value)
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


@pytest.fixture
def real_gateway_registry() -> Iterator[tuple[CollectorRegistry, str]]:
    """The gateway's metrics declared the way the gateway declares them, served over loopback."""
    registry = CollectorRegistry()
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    yield registry, f"http://127.0.0.1:{server.server_port}/metrics"
    server.shutdown()
    thread.join()


def test_a_real_prometheus_client_exposition(
    real_gateway_registry: tuple[CollectorRegistry, str],
) -> None:
    registry, url = real_gateway_registry
    labels = ["route", "variant", "model", "provider"]
    requests = Counter("llm_requests_total", "", [*labels, "outcome"], registry=registry)
    duration = Histogram(
        "llm_request_duration_seconds", "", labels, buckets=(0.5, 1, 2), registry=registry
    )
    tokens = Counter("llm_tokens_total", "", [*labels, "kind"], registry=registry)
    cost = Counter("llm_cost_usd_total", "", labels, registry=registry)
    clock = Clock()
    spec = ScrapeMetricsSpec(provider="scrape", targets=[url], route="support", timeout="2s")
    source = metrics_source_for(spec, clock=clock)
    source.check()  # declared families, no samples yet: a gateway that has served nothing

    canary = {"route": "support", "variant": CANARY, "model": CANARY, "provider": "ollama"}
    for seconds, outcome in [(0.2, "ok"), (0.7, "ok"), (1.5, "error"), (3.0, "fallback_ok")]:
        requests.labels(**canary, outcome=outcome).inc()
        duration.labels(**canary).observe(seconds)
        tokens.labels(**canary, kind="prompt").inc(120)
        tokens.labels(**canary, kind="completion").inc(30)
        cost.labels(**canary).inc(0.25)
    requests.labels(**{**canary, "route": "search"}, outcome="ok").inc(99)
    clock.now += 30

    obs = source.observe(since=1000.0)
    assert obs.variants == {
        CANARY: VariantStats(
            requests=4,
            errors=1,
            fallbacks=1,
            latency_buckets=((0.5, 1), (1.0, 2), (2.0, 3), (math.inf, 4)),
            prompt_tokens=480,
            completion_tokens=120,
            cost_usd=1.0,
        )
    }


def test_quality_scores_are_summed_per_variant_from_the_gateways_summary(
    real_gateway_registry: tuple[CollectorRegistry, str],
) -> None:
    """The gateway meters scores as a Summary (`llm_quality_score_sum` and `_count`), per model:
    the source adds them up per variant over the window, and quality_score is their mean."""
    registry, url = real_gateway_registry
    labels = ["route", "variant", "model", "provider", "tier"]
    requests = Counter("llm_requests_total", "", [*labels, "outcome"], registry=registry)
    quality = Summary("llm_quality_score", "", labels, registry=registry)
    clock = Clock()
    source = metrics_source_for(
        ScrapeMetricsSpec(provider="scrape", targets=[url], timeout="2s"), clock=clock
    )
    base = {"route": "support", "variant": BASE, "model": BASE, "provider": "x", "tier": "free"}
    quality.labels(**base).observe(1.0)  # before the window: not counted
    source.check()
    clock.now += 30
    requests.labels(**base, outcome="ok").inc(10)
    for score in (1.0, 0.0, 1.0, 1.0):
        quality.labels(**base).observe(score)
    canary = {**base, "variant": CANARY, "model": CANARY}
    quality.labels(**canary).observe(0.5)
    quality.labels(**{**canary, "model": "fallback", "tier": "paid"}).observe(0.0)

    obs = source.observe(since=1000.0)
    assert (obs.of(BASE).quality_sum, obs.of(BASE).quality_count) == (3.0, 4.0)
    assert (obs.of(CANARY).quality_sum, obs.of(CANARY).quality_count) == (0.5, 2.0)
    assert measure("quality_score", obs.of(BASE)) == 0.75
    assert measure("quality_score", obs.of(CANARY)) == 0.25
    assert measure("quality_score", EMPTY) is None
