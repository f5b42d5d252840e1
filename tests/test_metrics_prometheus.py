"""The prometheus source against a real Prometheus server (tests/prometheus_server.py): the
`canaryctl` profile's counts, errors, auth and rollouts decided from Prometheus data."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from prometheus_client import CollectorRegistry, Counter, Histogram, Summary, start_http_server
from pydantic import ValidationError

from canaryctl.cli import main
from canaryctl.errors import InvalidInput, MetricsBackendError
from canaryctl.lab import LabStack
from canaryctl.metrics import MetricsSource, PrometheusMetricsSource, metrics_source_for
from canaryctl.runbook import Lab, parse_document
from canaryctl.runbook.rollout import PrometheusMetricsSpec
from tests.prometheus_server import PrometheusServer, eventually, running_prometheus

BASE, CANARY = "gpt-4-turbo", "gpt-4o-mini"
DEFAULTS = resources.files("canaryctl") / "defaults"


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    with running_prometheus(tmp_path_factory.mktemp("prometheus")) as server:
        yield server


class Exporter:
    """The gateway's metric families, declared as the gateway declares them, over loopback."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ["route", "variant", "model", "provider"]
        self.requests = Counter(
            "llm_requests_total", "", [*labels, "outcome"], registry=self.registry
        )
        self.duration = Histogram(
            "llm_request_duration_seconds", "", labels, buckets=(0.5, 1, 2), registry=self.registry
        )
        self.tokens = Counter("llm_tokens_total", "", [*labels, "kind"], registry=self.registry)
        self.cost = Counter("llm_cost_usd_total", "", labels, registry=self.registry)
        self.quality = Summary("llm_quality_score", "", labels, registry=self.registry)
        self._server, self._thread = start_http_server(0, addr="127.0.0.1", registry=self.registry)
        self.url = f"http://127.0.0.1:{self._server.server_port}/metrics"

    def serve(
        self, variant: str, n: int, *, outcome: str = "ok", seconds: float, route: str = "support"
    ) -> None:
        labels = {"route": route, "variant": variant, "model": variant, "provider": "lab"}
        self.requests.labels(**labels, outcome=outcome).inc(n)
        for _ in range(n):
            self.duration.labels(**labels).observe(seconds)
        self.tokens.labels(**labels, kind="prompt").inc(100 * n)
        self.tokens.labels(**labels, kind="completion").inc(50 * n)
        self.cost.labels(**labels).inc(0.01 * n)
        for _ in range(n):  # every answer scored: right unless it was an error
            self.quality.labels(**labels).observe(0.0 if outcome == "error" else 1.0)

    def close(self) -> None:
        self._server.shutdown()
        self._thread.join()


@pytest.fixture
def exporter(prometheus: PrometheusServer) -> Iterator[Exporter]:
    exporter = Exporter()
    prometheus.scrape(exporter.url)
    yield exporter
    exporter.close()


def test_is_a_metrics_source() -> None:
    assert isinstance(PrometheusMetricsSource("http://127.0.0.1:1"), MetricsSource)


def test_counts_per_variant_match_what_was_served(
    prometheus: PrometheusServer, exporter: Exporter
) -> None:
    # Every series exists before the window with more than it gains in it, so increase() has a
    # sample before the change and its extrapolation never clips at zero.
    for variant in (BASE, CANARY):
        for outcome in ("ok", "error", "fallback_ok"):
            exporter.serve(variant, 200, outcome=outcome, seconds=0.2)
    exporter.serve(BASE, 100, seconds=0.2, route="search")  # another route: never counted
    seen = 'sum(llm_requests_total{route="support"})'
    eventually("the traffic before the window", lambda: prometheus.value(seen) == 1200)

    since = time.time()
    one = f'llm_requests_total{{route="support",variant="{BASE}",outcome="ok"}}'
    prometheus.scraped_after(one, since)  # a sample inside the window before the change
    exporter.serve(BASE, 90, seconds=0.3)
    exporter.serve(BASE, 10, outcome="error", seconds=1.5)
    exporter.serve(CANARY, 30, seconds=0.7)
    exporter.serve(CANARY, 6, outcome="error", seconds=3.0)
    exporter.serve(CANARY, 4, outcome="fallback_ok", seconds=1.5)
    exporter.serve(BASE, 500, route="search", seconds=0.1)
    # Scrapes that began after the last observation, not after the last counter moved (a scrape
    # between a counter and its histogram reads half of a serve()), two so the window is several
    # samples wide: counted, not slept for, as a loaded machine scrapes late.
    prometheus.scraped_after(one, time.time(), scrapes=2)
    assert prometheus.value(seen) == 1340

    spec = PrometheusMetricsSpec(provider="prometheus", url=prometheus.url, route="support")
    source = metrics_source_for(spec)
    source.check()
    obs = source.observe(since)

    assert set(obs.variants) == {BASE, CANARY}
    window = obs.end - obs.start
    # increase() extrapolates from the first and last samples in the window towards its edges,
    # never past them: counts are the served ones scaled by at most window / (last - first),
    # taken from the samples Prometheus read (a loaded machine scrapes late, so not assumed);
    # ratios are exact, every series of one target sharing the same sample times.
    times = prometheus.sample_times(one, round(window), at=obs.end)  # whole seconds, as queried
    stretch = window / (times[-1] - times[0]) + 1e-6  # its times are whole milliseconds
    base, canary = obs.of(BASE), obs.of(CANARY)
    assert 100 <= round(base.requests, 6) <= 100 * stretch
    assert 40 <= round(canary.requests, 6) <= 40 * stretch
    factor = canary.requests / 40
    assert canary.errors == pytest.approx(6 * factor)
    assert canary.fallbacks == pytest.approx(4 * factor)
    assert base.errors == pytest.approx(base.requests / 10)
    assert base.fallbacks == 0
    assert [le for le, _ in canary.latency_buckets] == [0.5, 1.0, 2.0, float("inf")]
    counts = [count for _, count in canary.latency_buckets]
    assert counts == pytest.approx([0, 30 * factor, 34 * factor, 40 * factor])
    assert canary.prompt_tokens == pytest.approx(100 * canary.requests)
    assert canary.completion_tokens == pytest.approx(50 * canary.requests)
    assert canary.cost_usd == pytest.approx(0.01 * canary.requests)
    assert canary.quality_count == pytest.approx(canary.requests)
    assert canary.quality_sum / canary.quality_count == pytest.approx(34 / 40)
    assert base.quality_sum / base.quality_count == pytest.approx(0.9)


def test_no_traffic_in_the_window_means_absent_variants(
    prometheus: PrometheusServer, exporter: Exporter
) -> None:
    exporter.serve(CANARY, 50, seconds=0.2, route="quiet")
    total = 'sum(llm_requests_total{route="quiet"})'
    eventually("the traffic", lambda: prometheus.value(total) == 50)
    since = time.time()
    # Flat scrapes only, counted: the series exist, their increase is zero.
    prometheus.scraped_after('llm_requests_total{route="quiet"}', since, scrapes=2)
    source = PrometheusMetricsSource(prometheus.url, labels={"route": "quiet"})
    assert source.observe(since).variants == {}


def test_a_stopped_prometheus_is_a_backend_error_without_the_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROM_TOKEN", "s3cret-token")
    with running_prometheus(tmp_path) as server:
        spec = PrometheusMetricsSpec(
            provider="prometheus", url=server.url, bearer_token_env="PROM_TOKEN", timeout="2s"
        )
        source = metrics_source_for(spec)
        source.observe(time.time() - 10)  # it answers...
        server.stop()
        with pytest.raises(MetricsBackendError) as caught:
            source.observe(time.time() - 10)
    message = str(caught.value)
    assert message.startswith(f"cannot reach Prometheus at {server.url}")
    assert "s3cret-token" not in message


def test_a_prometheus_scraping_no_gateway_answers_but_shows_no_traffic(tmp_path: Path) -> None:
    with running_prometheus(tmp_path) as server:
        server.scrape(f"{server.url}/metrics")  # Prometheus scraping itself: `up` is not empty
        source = PrometheusMetricsSource(server.url)
        source.check()
        assert source.recent_requests(300) == {}


def test_the_check_and_recent_traffic_follow_the_runbooks_route_and_selector(
    prometheus: PrometheusServer, exporter: Exporter
) -> None:
    total = 'sum(llm_requests_total{route="checked"})'
    exporter.serve(BASE, 1, seconds=0.2, route="checked")
    exporter.serve(CANARY, 1, seconds=0.2, route="checked")
    eventually("the series", lambda: prometheus.value(total) == 2)
    # A series' first sample is not an increase: traffic comes after another one.
    prometheus.scraped_after('llm_requests_total{route="checked"}', time.time())
    exporter.serve(BASE, 20, seconds=0.2, route="checked")
    exporter.serve(CANARY, 5, seconds=0.2, route="checked")
    eventually("the traffic", lambda: prometheus.value(total) == 27)
    good = PrometheusMetricsSpec(provider="prometheus", url=prometheus.url, route="checked")
    source = metrics_source_for(good)
    source.check()
    seen = source.recent_requests(300)
    assert set(seen) == {BASE, CANARY} and seen[BASE] > seen[CANARY] > 0
    wrong = PrometheusMetricsSpec(
        provider="prometheus", url=prometheus.url, route="checked", selector={"job": "nope"}
    )
    elsewhere = metrics_source_for(wrong)
    elsewhere.check()  # Prometheus answers the selector's query...
    assert elsewhere.recent_requests(300) == {}  # ...which finds no traffic there


def test_a_rollout_whose_selector_matches_no_traffic_is_exit_2_naming_it(
    prometheus: PrometheusServer, exporter: Exporter, tmp_path: Path
) -> None:
    exporter.serve(BASE, 3, seconds=0.2, route="real-route")
    flags = tmp_path / "flags.json"
    flags.write_text((DEFAULTS / "flags.json").read_text())
    document = {
        "apiVersion": "canaryctl/v1",
        "kind": "Rollout",
        "metadata": {"name": "misrouted"},
        "spec": {
            "flag": {"provider": "file", "path": str(flags), "key": "support-bot-model",
                     "baseline": "gpt-4-turbo", "canary": "gpt-4o-mini"},
            "metrics": {"provider": "prometheus", "url": prometheus.url, "route": "typo-route",
                        "selector": {"job": "gateway"}},
            "slos": [{"metric": "error_rate", "max": 0.05}],
            "analysis": {"interval": "1s"},
            "steps": [{"set_weight": 10}],
        },
    }  # fmt: skip
    path = tmp_path / "misrouted.yaml"
    path.write_text(yaml.safe_dump(document))
    result = CliRunner().invoke(
        main, ["rollout", "run", str(path), "--state", str(tmp_path / "s.db")]
    )
    assert result.exit_code == 2, result.output
    assert "no recent requests for the baseline 'gpt-4-turbo'" in result.output
    assert "route 'typo-route', selector {job=\"gateway\"}" in result.output
    assert flags.read_text() == (DEFAULTS / "flags.json").read_text()


def test_a_missing_secret_is_invalid_input_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NO_SUCH_TOKEN", raising=False)
    spec = PrometheusMetricsSpec(
        provider="prometheus", url="http://127.0.0.1:9", bearer_token_env="NO_SUCH_TOKEN"
    )
    with pytest.raises(InvalidInput, match="NO_SUCH_TOKEN"):
        metrics_source_for(spec)


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"url": "127.0.0.1:9090"}, "url"),
        ({"selector": {"bad-name": "x"}}, "not a Prometheus label name"),
        ({"route": "a", "selector": {"route": "b"}}, "give the route once"),
        ({"basic_auth_username_env": "U"}, "needs both"),
        ({"ca_file": "/tmp/ca.pem", "insecure_skip_verify": True}, "contradict"),
        ({"bearer_token_env": "token with spaces"}, "bearer_token_env"),
    ],
)
def test_the_spec_rejects_what_cannot_work(fields: dict[str, object], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        PrometheusMetricsSpec.model_validate(
            {"provider": "prometheus", "url": "http://127.0.0.1:9090", **fields}
        )


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("canary", "steps", "exit_code", "outcome"),
    [
        (
            "mixtral-8x7b",
            [{"set_weight": 20}, {"pause": "20s"}, {"set_weight": 100}],
            1,
            "rolled_back",
        ),
        (
            "gpt-4o-mini",
            [{"set_weight": 20}, {"pause": "8s"}, {"set_weight": 100}, {"pause": "4s"}],
            0,
            "promoted",
        ),
    ],
)
def test_rollout_run_decides_from_prometheus_data(
    prometheus: PrometheusServer,
    tmp_path: Path,
    canary: str,
    steps: list[dict[str, object]],
    exit_code: int,
    outcome: str,
) -> None:
    flags = tmp_path / "flags.json"
    original = (DEFAULTS / "flags.json").read_text()
    flags.write_text(original)
    lab = parse_document((DEFAULTS / "lab.yaml").read_text(), "lab.yaml", expect=Lab)
    with LabStack(lab, flags_path=flags) as stack:
        prometheus.scrape(stack.metrics_url)
        # Preflight wants recent baseline traffic on the route, as Prometheus sees it.
        recent = 'sum(increase(llm_requests_total{route="support-bot"}[1m]))'
        eventually("baseline traffic in Prometheus", lambda: (prometheus.value(recent) or 0) > 0)
        document = {
            "apiVersion": "canaryctl/v1",
            "kind": "Rollout",
            "metadata": {"name": f"to-{canary}"},
            "spec": {
                "flag": {
                    "provider": "file",
                    "path": str(flags),
                    "key": "support-bot-model",
                    "baseline": "gpt-4-turbo",
                    "canary": canary,
                },
                "metrics": {
                    "provider": "prometheus",
                    "url": prometheus.url,
                    "route": "support-bot",
                },
                "slos": [
                    {"metric": "error_rate", "max": 0.03},
                    {"metric": "latency_p95_seconds", "max": 2.0},
                ],
                "analysis": {
                    "interval": "2s",
                    "min_requests": 40,
                    "inconclusive_limit": 40,  # a bound, not a pace
                    "method": "threshold",
                },
                "steps": steps,
            },
        }
        path = tmp_path / f"to-{canary}.yaml"
        path.write_text(yaml.safe_dump(document))
        state = tmp_path / "state.db"
        result = CliRunner().invoke(
            main, ["rollout", "run", str(path), "--state", str(state), "-o", "json"]
        )
    assert result.exit_code == exit_code, result.output
    events = [json.loads(line) for line in result.output.splitlines()]
    assert events[-1]["event"] == "finish"
    assert events[-1]["outcome"] == outcome
    checks = [c["outcome"] for e in events if e["event"] == "analysis" for c in e["checks"]]
    if outcome == "rolled_back":
        assert "fail" in checks
        # The prior bytes, at a version past the step's (1 -> 2 at the step, 3 restored).
        assert flags.read_text() == original.replace('"version": 1', '"version": 3')
    else:
        assert "pass" in checks  # judged on Prometheus' numbers, not only inconclusive ones
        flag = json.loads(flags.read_text())["flags"]["support-bot-model"]
        assert flag["variations"][flag["fallthrough"]["variation"]] == canary
    # Its own runbook, replayed on the counts it journaled, decides as it did, analyses taken
    # in real time (each a little late) and windows from Prometheus included.
    replayed = CliRunner().invoke(
        main, ["backtest", str(path), "--run", "1", "--state", str(state), "-o", "json"]
    )
    assert replayed.exit_code == 0, replayed.output
    backtest = json.loads(replayed.output)
    assert backtest["replay"]["outcome"] == outcome, backtest["replay"]["reason"]
    # One for one, however late a loaded machine took some of them: the replay's clock follows
    # the run's (tests/test_backtest.py has a run 7 s late, on a fake clock).
    assert len(backtest["replay"]["analyses"]) == backtest["run"]["analyses"]


@pytest.mark.parametrize("value", ["-50", "+Inf", "-Inf"])
def test_a_count_that_cannot_be_one_is_a_backend_error_never_a_pass(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A profile's query gives a negative or infinite count (a recording rule using delta() on a
    gauge, a division by zero): read as errors, -50 made the canary's error rate negative and
    passed every bound, +Inf requests made every rate 0. No real Prometheus answers increase()
    so, hence the library's answer is stubbed: the rows as Prometheus' JSON has them."""
    source = PrometheusMetricsSource("http://127.0.0.1:9")

    def answer(query: str, params: object) -> list[dict[str, object]]:
        rows = [
            {"metric": {"variant": CANARY, "outcome": "ok"}, "value": [1.0, "100"]},
            {"metric": {"variant": CANARY, "outcome": "error"}, "value": [1.0, value]},
        ]
        return rows if "llm_requests_total" in query else []

    monkeypatch.setattr(source._client, "custom_query", answer)
    with pytest.raises(MetricsBackendError) as caught:
        source.observe(time.time() - 60)
    message = str(caught.value)
    assert f"gave {float(value):g} for variant '{CANARY}'" in message
    assert "not a count" in message
