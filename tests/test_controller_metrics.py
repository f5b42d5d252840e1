"""The controller's own metrics (`--metrics-port`), scraped over loopback while a rollout runs."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from loopback import free_port
from prometheus_client.parser import text_string_to_metric_families

import canaryctl.controller.runner as runner_module
from canaryctl.analysis import Verdict
from canaryctl.cli import main
from canaryctl.controller import Phase, RolloutObserver, run_rollout
from canaryctl.controller.exporter import RolloutExporter
from tests.rollout_world import World

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    text = httpx.get(url, timeout=10).text
    return {
        (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "rollout"))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.labels.get("rollout") == "support-bot"
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


class Scraper(RolloutObserver):
    """Listed after the exporter, so it sees what the exporter just recorded."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.at_analysis: list[Samples] = []
        self.at_rollback: Samples = {}

    def on_analysis(self, run_id: int, verdict: Verdict) -> None:
        self.at_analysis.append(scrape(self.url))

    def on_phase(self, run_id: int, phase: Phase, reason: str) -> None:
        if phase is Phase.ROLLING_BACK:
            self.at_rollback = scrape(self.url)


ERROR_RATE = "error_rate <= 0.02"


def test_exporter_follows_a_rollout_that_rolls_back(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.on_observe = lambda: setattr(
        world, "canary_error_rate", 0.1 if world.canary() >= 50 else 0
    )
    exporter = RolloutExporter(0)
    scraper = Scraper(exporter.url)
    try:
        result = run_rollout(
            world.rollout,
            state_path=world.state,
            observers=[exporter, scraper],
            clock=world.clock,
            flags=world.flags,
            metrics=world.metrics,
        )
        after = scrape(exporter.url)
    finally:
        exporter.close()
    assert result.outcome == "rolled_back"

    first = scraper.at_analysis[0]
    assert value(first, "canaryctl_rollout_canary_weight_percent") == 10
    assert value(first, "canaryctl_rollout_step_index") == 1  # the pause after set_weight 10
    assert value(first, "canaryctl_rollout_slo_verdict", slo=ERROR_RATE, outcome="pass") == 1
    assert value(first, "canaryctl_rollout_rollbacks_total") == 0

    at_rollback = scraper.at_rollback
    assert value(at_rollback, "canaryctl_rollout_canary_weight_percent") == 50
    assert value(at_rollback, "canaryctl_rollout_slo_verdict", slo=ERROR_RATE, outcome="fail") == 1
    assert value(at_rollback, "canaryctl_rollout_slo_verdict", slo=ERROR_RATE, outcome="pass") == 0
    assert value(at_rollback, "canaryctl_rollout_slo_value", slo=ERROR_RATE) == pytest.approx(0.1)
    assert value(at_rollback, "canaryctl_rollout_rollbacks_total") == 1
    assert value(at_rollback, "canaryctl_rollout_phase", phase="rolling_back") == 1

    assert value(after, "canaryctl_rollout_canary_weight_percent") == 0
    assert value(after, "canaryctl_rollout_phase", phase="rolled_back") == 1
    assert value(after, "canaryctl_rollout_phase", phase="rolling_back") == 0
    assert value(after, "canaryctl_rollout_analyses_total", outcome="fail") == 1


def test_rollout_run_metrics_port_serves_while_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = World(tmp_path)
    runbook = tmp_path / "rollout.yaml"
    runbook.write_text(world.rollout.model_dump_json(by_alias=True))
    import canaryctl.flags.factory
    import canaryctl.metrics.factory

    monkeypatch.setattr(canaryctl.flags.factory, "flag_store_for", lambda spec: world.flags)
    monkeypatch.setattr(
        canaryctl.metrics.factory, "metrics_source_for", lambda spec, **_: world.metrics
    )
    monkeypatch.setattr(runner_module, "SystemClock", lambda: world.clock)
    port = free_port()
    weights: list[float] = []

    def record_weight() -> None:
        samples = scrape(f"http://127.0.0.1:{port}/metrics")
        if ("canaryctl_rollout_canary_weight_percent", ()) in samples:  # preflight looks first
            weights.append(value(samples, "canaryctl_rollout_canary_weight_percent"))

    world.on_observe = record_weight
    result = CliRunner().invoke(
        main,
        ["rollout", "run", str(runbook), "--state", str(world.state), "-o", "json",
         "--metrics-port", str(port)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"controller metrics at http://127.0.0.1:{port}/metrics" in result.output
    assert set(weights) >= {10.0, 50.0, 100.0}
    with pytest.raises(httpx.ConnectError):  # served only while the rollout runs
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
