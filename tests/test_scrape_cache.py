"""Runs on one controller share their scrapes: one GET of a target per interval, parsed for the
families the analyses read, each run keeping no history beyond its window.

The gateway here is a real HTTP server on loopback that counts the GETs it answers; its
exposition carries, besides the gateway's families, the process and Python families and a
large family no analysis reads, which the parse must drop.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import yaml

from canaryctl.clock import FakeClock
from canaryctl.controller.wiring import runbook_backends
from canaryctl.flags import MemoryFlagStore
from canaryctl.metrics import VariantStats
from canaryctl.metrics.scrape_cache import ScrapeCache
from canaryctl.runbook import Rollout, parse_document

ROUTES = [f"route-{i}" for i in range(6)]
BOUNDS = ("0.5", "1.0", "+Inf")
UNREAD = "llm_gateway_inflight_requests"
"""A family no analysis reads, with as many series as the rest: it must not be kept."""
READ = {
    "llm_requests_total",
    "llm_request_duration_seconds_bucket",
    "llm_tokens_total",
}


class CountingGateway:
    """Cumulative counters per route as exposition text; `gets` counts the GETs of /metrics."""

    def __init__(self) -> None:
        self.served = dict.fromkeys(ROUTES, 0)
        self.gets = 0
        self._lock = threading.Lock()

    def serve(self, route: str, n: int) -> None:
        with self._lock:
            self.served[route] += n

    def text(self) -> str:
        lines = [
            "# HELP process_cpu_seconds_total Total user and system CPU time.",
            "# TYPE process_cpu_seconds_total counter",
            "process_cpu_seconds_total 12.5",
            'python_info{implementation="CPython",major="3",minor="11"} 1.0',
            "# HELP llm_requests_total Requests.",
            "# TYPE llm_requests_total counter",
        ]
        with self._lock:
            served = dict(self.served)
        for route, n in served.items():
            labels = f'route="{route}",variant="new",model="m",provider="lab"'
            lines.append(f'llm_requests_total{{{labels},outcome="ok"}} {n}.0')
            lines += [f'llm_request_duration_seconds_bucket{{{labels},le="{le}"}} {n}.0'
                      for le in BOUNDS]  # fmt: skip
            lines.append(f"llm_request_duration_seconds_count{{{labels}}} {n}.0")
            lines.append(f"llm_request_duration_seconds_sum{{{labels}}} {0.3 * n}")
            lines.append(f'llm_tokens_total{{{labels},kind="prompt"}} {100 * n}.0')
            lines += [f'{UNREAD}{{{labels},worker="{w}"}} 1.0' for w in range(8)]
        return "\n".join(lines) + "\n"


@pytest.fixture
def gateway() -> Iterator[tuple[CountingGateway, str]]:
    gw = CountingGateway()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with gw._lock:
                gw.gets += 1
            body = gw.text().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield gw, f"http://127.0.0.1:{server.server_port}/metrics"
    server.shutdown()
    server.server_close()
    thread.join()


def rollout(route: str, url: str, interval: str = "30s") -> Rollout:
    document = {
        "apiVersion": "canaryctl/v1",
        "kind": "Rollout",
        "metadata": {"name": route},
        "spec": {
            "flag": {"provider": "file", "path": "flags.json", "key": route,
                     "baseline": "old", "canary": "new"},
            "metrics": {"provider": "scrape", "targets": [url], "route": route},
            "slos": [{"metric": "error_rate", "max": 0.02}],
            "analysis": {"interval": interval, "min_requests": 1, "method": "threshold"},
            "steps": [{"set_weight": 10}, {"pause": "10m"}, {"set_weight": 100}],
        },
    }  # fmt: skip
    return parse_document(yaml.safe_dump(document), f"{route}.yaml", expect=Rollout)


def sources(url: str, clock: FakeClock, cache: ScrapeCache) -> list[Any]:
    """Each route's metrics source as a controller wires it: the runbook's, on a shared cache."""
    return [
        runbook_backends(rollout(r, url), clock, MemoryFlagStore(r, "old", "new"), scrapes=cache)[1]
        for r in ROUTES
    ]


def test_runs_reading_one_target_within_an_interval_share_one_get(
    gateway: tuple[CountingGateway, str],
) -> None:
    gw, url = gateway
    clock = FakeClock(1000.0)
    cache = ScrapeCache(clock=clock.now)
    runs = sources(url, clock, cache)
    for source in runs:
        source.check()  # each window begins with a sample taken as its weight is set
    for i, route in enumerate(ROUTES):
        gw.serve(route, 10 * (i + 1))

    clock.sleep(30)
    before = gw.gets
    observations = []
    for source in runs:
        observations.append(source.observe(1000.0))
        clock.sleep(2)  # the analyses of different runs fall at different moments
    assert gw.gets - before == 1

    for i, obs in enumerate(observations):
        n = 10.0 * (i + 1)
        buckets = ((0.5, n), (1.0, n), (float("inf"), n))
        expected = VariantStats(requests=n, latency_buckets=buckets, prompt_tokens=100 * n)
        assert obs.variants == {"new": expected}


def test_a_sample_older_than_the_interval_is_taken_again(
    gateway: tuple[CountingGateway, str],
) -> None:
    gw, url = gateway
    clock = FakeClock(1000.0)
    cache = ScrapeCache(clock=clock.now)
    first, second = sources(url, clock, cache)[:2]
    first.check()
    second.check()
    clock.sleep(30)
    before = gw.gets
    first.observe(1000.0)
    clock.sleep(31)
    gw.serve(ROUTES[1], 7)
    assert second.observe(1000.0).of("new").requests == 7
    assert gw.gets - before == 2


def test_one_run_alone_never_reads_its_own_sample_again(
    gateway: tuple[CountingGateway, str],
) -> None:
    """A single run's analyses fall a little less than an interval apart at times: each still
    scrapes, so its window never lags by an interval."""
    gw, url = gateway
    clock = FakeClock(1000.0)
    source = sources(url, clock, ScrapeCache(clock=clock.now))[0]
    source.check()
    before = gw.gets
    for n in range(3):
        clock.sleep(29)
        gw.serve(ROUTES[0], 1)
        assert source.observe(1000.0).of("new").requests == n + 1
    assert gw.gets - before == 3


def test_only_the_families_the_analyses_read_are_kept(
    gateway: tuple[CountingGateway, str],
) -> None:
    gw, url = gateway
    for route in ROUTES:
        gw.serve(route, 3)
    clock = FakeClock(1000.0)
    cache = ScrapeCache(clock=clock.now)
    sources(url, clock, cache)[0].check()

    snapshot = cache.latest(url)
    assert snapshot is not None
    kept = [(route, name, dict(labels)) for route, series in snapshot.routes.items()
            for (name, labels) in series]  # fmt: skip
    assert {name for _, name, _ in kept} == READ
    # Per route: one requests series, three buckets, one tokens series.
    assert len(kept) == len(ROUTES) * 5
    assert {route for route, _, _ in kept} == set(ROUTES)
    assert all(labels["route"] == route for route, _, labels in kept)


def test_a_run_keeps_no_history_beyond_its_window(gateway: tuple[CountingGateway, str]) -> None:
    gw, url = gateway
    clock = FakeClock(1000.0)
    source = sources(url, clock, ScrapeCache(clock=clock.now))[0]
    source.check()
    for _ in range(50):
        clock.sleep(31)
        gw.serve(ROUTES[0], 2)
        source.observe(1000.0)
    assert source.observe(1000.0).of("new").requests == 100
    assert len(source._history) <= 2  # the window's first sample and the latest


def test_the_line_filter_reads_what_prometheus_clients_parser_reads() -> None:
    """Label values with quotes, backslashes, commas, braces and newlines; sample timestamps;
    families no analysis reads: the filter keeps the wanted samples exactly as the reference
    parser reads them, and nothing else."""
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from canaryctl.metrics.scrape_cache import WANTED, ExpositionFilter

    registry = CollectorRegistry()
    labels = ["route", "variant", "model", "provider"]
    requests = Counter("llm_requests_total", "", [*labels, "outcome"], registry=registry)
    duration = Histogram("llm_request_duration_seconds", "", labels, registry=registry)
    unread = Counter("llm_flag_errors_total", "", ["route"], registry=registry)
    odd = ['a "quoted" route', "back\\slash", "comma,{brace}", "new\nline", "plain"]
    for i, route in enumerate(odd):
        values = {"route": route, "variant": f"v{i}", "model": "m", "provider": "p"}
        requests.labels(**values, outcome="ok").inc(i + 1)
        duration.labels(**values).observe(0.1 * i)
        unread.labels(route=route).inc()
    text = generate_latest(registry).decode()
    text += 'llm_requests_total{route="stamped",variant="v",outcome="ok"} 7 1700000000000\n'

    expected = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name in WANTED
    }
    is_gateway, routes = ExpositionFilter().parse(text)
    got = {series: value for by_route in routes.values() for series, value in by_route.items()}
    assert is_gateway
    assert got == expected
    assert set(routes) == {*odd, "stamped"}
