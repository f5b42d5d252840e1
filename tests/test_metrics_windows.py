"""Windows of the scrape source that move: a chaos hypothesis' sliding window and a guard's
windows one after another. A real clock moves between a reader's "now" and the scrape it asks
for, so every sample is stamped a little after the moment a reader names; each test's clock
does the same. Before, both kinds of window grew from their first sample at every analysis, so
a failure that began late was diluted by all the healthy traffic before it."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import yaml
from test_chaos_scenario import EXAMPLE, FakeInjector
from test_guard_watch import guard_document
from test_metrics_scrape import CANARY, URL, FakeGateway

from canaryctl.chaos.journal import Journal
from canaryctl.chaos.scenario import hypothesis_metrics, run_scenario
from canaryctl.clock import FakeClock
from canaryctl.controller.hooks import HookRunner
from canaryctl.flags import MemoryFlagStore
from canaryctl.guard import GuardJournal, GuardPhase, GuardWatch
from canaryctl.metrics import ScrapeMetricsSource
from canaryctl.runbook import parse_document
from canaryctl.runbook.scenario import ChaosScenario

SCRAPE_DELAY, SCRAPE_TIME = 0.001, 0.01
"""How long after a reader's clock reading its scrape begins (the sample's stamp), and how long
the scrape then takes."""


def scrape_source(
    gateway: FakeGateway, clock: FakeClock, *, slide: float = 0.0
) -> ScrapeMetricsSource:
    def scrape(request: httpx.Request) -> httpx.Response:
        clock.sleep(SCRAPE_DELAY + SCRAPE_TIME)
        return httpx.Response(200, text=gateway.text())

    client = httpx.Client(transport=httpx.MockTransport(scrape))
    return ScrapeMetricsSource(
        [URL], clock=lambda: clock.now() + SCRAPE_DELAY, client=client, slide=slide
    )


def test_a_sliding_window_keeps_its_length_as_it_slides() -> None:
    """scenario.py's `during` phase: from a floor, judge the last 10 s every 5 s."""
    gateway, clock = FakeGateway(), FakeClock()
    source = scrape_source(gateway, clock, slide=10)
    source.check()
    floor = clock.now()
    windows = []
    for _ in range(6):
        gateway.serve(CANARY, 50)  # 10 requests a second
        clock.sleep(5)
        observation = source.observe(max(floor, clock.now() - 10))
        windows.append(observation.of(CANARY).requests)
    assert windows == [50, 100, 100, 100, 100, 100]


def test_a_guard_trips_on_errors_that_begin_after_an_hour_of_healthy_traffic(
    tmp_path: Path,
) -> None:
    gateway, clock = FakeGateway(), FakeClock()
    flags = MemoryFlagStore("support-bot-model", "gpt-4-turbo", "gpt-4o-mini", canary_weight=100)
    hooks = HookRunner(httpx.Client(transport=httpx.MockTransport(lambda _: httpx.Response(200))))
    watch = GuardWatch(guard_document(), flags=flags, metrics=scrape_source(gateway, clock),
                       journal=GuardJournal(tmp_path / "guard.jsonl"), clock=clock,
                       rollouts=lambda: [], hooks=hooks)  # fmt: skip

    def run_for(seconds: float, errors: int) -> None:
        """`seconds` of 5 requests a second, `errors` of each 50 failing."""
        for _ in range(int(seconds // 10)):
            gateway.serve(CANARY, 50 - errors)
            if errors:
                gateway.serve(CANARY, errors, outcome="error")
            end = clock.now() + 10
            watch.run(until=lambda end=end: clock.now() >= end)

    run_for(3600, errors=0)
    assert watch.phase is GuardPhase.WATCHING
    run_for(30, errors=10)  # 20% errors against a bound of 5%: two windows fail
    assert watch.phase is GuardPhase.TRIPPED and flags.split(flags.snapshot()).canary == 0
    # Each failed window is one interval's traffic (10 s: 50 requests, 10 failed), not two.
    failed = [e for e in watch.journal.entries() if e["event"] == "analysis"]
    assert [(c["canary_requests"], c["canary_value"]) for e in failed for c in e["checks"]] == [
        (50, 0.2),
        (50, 0.2),
    ]


class TimedGateway(ThreadingHTTPServer):
    """A gateway on loopback serving 10 successful requests a second of `clock`'s time."""

    def __init__(self, clock: FakeClock) -> None:
        start = clock.now()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                gateway = FakeGateway()
                gateway.serve(CANARY, int(10 * (clock.now() - start)), route="support-bot")
                body = gateway.text().encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}/metrics"


def test_a_chaos_scenario_judges_the_last_window_during_the_faults() -> None:
    """docs/chaos.md: after `settle`, every `interval` judges the last `window`. The counts of
    `canaryctl chaos run` on the lab grew by a window each check instead (179, 346, 532...)."""
    clock = FakeClock()
    server = TimedGateway(clock)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        document = yaml.safe_load(EXAMPLE.read_text())
        hypothesis = document["spec"]["hypothesis"]
        hypothesis["metrics"]["targets"] = [server.url]
        hypothesis["checks"] = [{"metric": "success_rate", "min": 0.99}]
        document["spec"].update(duration="30s", settle="0s")
        scenario = parse_document(yaml.safe_dump(document), str(EXAMPLE), expect=ChaosScenario)
        result = run_scenario(scenario, injector=FakeInjector(),
                              metrics=hypothesis_metrics(scenario, clock.now),
                              journal=Journal(scenario), clock=clock)  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
    assert result.outcome == "held"
    during = [c["requests"] for c in result.journal["checks"] if c["phase"] == "during"]
    assert during == [50, 100, 100, 100, 100, 100]  # window 10 s, interval 5 s, 10 req/s
