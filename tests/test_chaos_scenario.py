"""`canaryctl chaos run` end to end over loopback: a lab primary behind the fault proxy, a lab
backup, the gateway with (or without) a fallback chain, traffic, and the shipped example
scenario scenarios/primary-503.yaml pointed at them. Plus the runner's always-remove paths with
fakes and a fake clock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from canaryctl.chaos.journal import Journal, junit_xml
from canaryctl.chaos.scenario import run_scenario
from canaryctl.cli import main
from canaryctl.clock import FakeClock
from canaryctl.errors import Interrupted, MetricsBackendError
from canaryctl.metrics import Observation, VariantStats
from canaryctl.metrics.scripted import ScriptedMetricsSource
from canaryctl.runbook import ChaosScenario, load_document, parse_document
from canaryctl.runbook.scenario import FaultSpec
from tests.chaos_world import EXAMPLE, TOKEN, World, chaos_world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with chaos_world(tmp_path_factory.mktemp("chaos")) as world:
        yield world


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANARYCTL_CHAOS_TOKEN", TOKEN)


@pytest.fixture
def counted(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows that hold enough requests by construction (see tests/chaos_world.py): a 2 s
    window of a loaded lab held fewer than min_requests, and the run ended "not_steady"."""
    world.count_windows(monkeypatch)


def run_cli(args: list[str]) -> tuple[int, list[dict[str, Any]]]:
    result = CliRunner().invoke(main, ["chaos", "run", *args, "-o", "json"])
    events = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    return result.exit_code, events


@pytest.mark.e2e
def test_fallback_keeps_users_whole_and_no_fault_is_left(
    world: World, token: None, counted: None
) -> None:
    world.serve("primary")
    journal, junit = world.tmp / "held.json", world.tmp / "held.xml"
    # The fault outlives the checks however long a slow lab makes their counted windows last.
    path = world.scenario(ttl_margin="60s")
    code, events = run_cli([str(path), "--journal", str(journal), "--junit", str(junit)])
    record = json.loads(journal.read_text())
    assert code == 0, record["reason"]
    assert record["outcome"] == "held"
    assert world.admin.faults() == []
    [injection] = record["injections"]
    assert injection["fault"]["status"] == 503 and injection["result"]["expires_in"] <= 64
    assert [r["result"]["found"] for r in record["removals"]] == [True]
    phases = [c["phase"] for c in record["checks"]]
    assert phases[0] == "before" and phases[-1] == "after" and phases.count("during") >= 3
    during = [c for c in record["checks"] if c["phase"] == "during" and c["outcome"] == "held"]
    fallback = [r["value"] for c in during for r in c["checks"] if "fallback_rate" in r["check"]]
    assert fallback and min(fallback) >= 0.9  # the backup really answered
    assert events[-1] == {
        "event": "finished",
        "outcome": "held",
        "reason": "the steady state held before, during and after",
    }
    xml = junit.read_text()
    assert 'failures="0"' in xml and "fallback_rate &gt;= 0.9" in xml


@pytest.mark.e2e
def test_without_fallback_the_hypothesis_is_violated_and_faults_removed(
    world: World, token: None, counted: None
) -> None:
    world.serve("primary-direct")
    try:
        journal = world.tmp / "violated.json"
        code, events = run_cli([str(world.scenario("direct")), "--journal", str(journal)])
    finally:
        world.serve("primary")
    record = json.loads(journal.read_text())
    assert code == 1, record["reason"]
    assert record["outcome"] == "violated"
    assert "during the faults: success_rate >= 0.99 but was" in record["reason"]
    assert any(e["event"] == "abort" for e in events)
    assert [r["result"]["found"] for r in record["removals"]] == [True]
    assert world.admin.faults() == []


@pytest.mark.e2e
def test_not_steady_before_means_nothing_is_injected(world: World, token: None) -> None:
    path = world.scenario("unsteady")
    document = yaml.safe_load(path.read_text())
    document["spec"]["hypothesis"]["min_requests"] = 100000
    path.write_text(yaml.safe_dump(document))
    journal = world.tmp / "unsteady.json"
    code, _ = run_cli([str(path), "--journal", str(journal)])
    record = json.loads(journal.read_text())
    assert code == 1 and record["outcome"] == "not_steady"
    assert record["injections"] == [] and world.admin.faults() == []


@pytest.mark.e2e
def test_dry_run_injects_nothing(world: World, token: None) -> None:
    code, events = run_cli([str(world.scenario("dry")), "--dry-run"])
    assert code == 0
    [plan] = events
    assert plan["inject"][0]["fault"] == "error" and plan["inject"][0]["ttl"] == 34.0
    assert plan["checks"]["during"][-1] == "fallback_rate >= 0.9"
    dry = ["chaos", "run", str(world.scenario("dry")), "--dry-run", "-o", "text"]
    text = CliRunner().invoke(main, dry)
    assert text.exit_code == 0 and "2. inject error (status=503) on 100% of requests" in text.output
    assert world.admin.faults() == []


def start_run(world: World, path: Path, journal: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "CANARYCTL_CHAOS_TOKEN": TOKEN}
    command = [sys.executable, "-m", "canaryctl", "chaos", "run", str(path), "-o", "text"]
    return subprocess.Popen(
        [*command, "--journal", str(journal)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def judged_during(journal: Path) -> bool:
    """Has the run journaled a check during its faults? (The journal is replaced whole.)"""
    if not journal.exists():
        return False
    return any(c["phase"] == "during" for c in json.loads(journal.read_text())["checks"])


@pytest.mark.e2e
def test_sigterm_mid_scenario_removes_the_fault(world: World) -> None:
    world.serve("primary")
    journal = world.tmp / "sigterm.json"
    # Another process, whose clock cannot be counted: one request a window is steady enough
    # here (this test is about removing the fault, not the verdict), so the fault goes in
    # however few requests a loaded lab sends in 2 s.
    path = world.scenario("sigterm", min_requests=1, duration="30s")
    run = start_run(world, path, journal)
    try:
        # A check during the faults: the injection is done and said, not half way (a signal
        # between the proxy taking the fault and its answer leaves no "injected" line).
        wait_for(lambda: judged_during(journal), 60, "a check during the faults")
        run.send_signal(signal.SIGTERM)
        stdout, stderr = run.communicate(timeout=20)
    finally:
        run.kill()
    assert run.returncode == 130, stderr
    assert "injected f-" in stdout and "removed  f-" in stdout and "interrupted" in stderr
    assert world.admin.faults() == []
    assert json.loads(journal.read_text())["outcome"] == "interrupted"


@pytest.mark.e2e
def test_sigkill_leaves_the_fault_to_expire_by_its_ttl(world: World) -> None:
    world.serve("primary")
    journal = world.tmp / "sigkill.json"
    # the fault lives 6 s; one request a window is steady enough (see the SIGTERM test)
    path = world.scenario("sigkill", min_requests=1, duration="3s", ttl_margin="3s")
    run = start_run(world, path, journal)
    try:
        wait_for(lambda: bool(world.admin.faults()), 30, "the fault to be injected")
        run.kill()
        run.wait(10)
    finally:
        run.kill()
    [left] = world.admin.faults()  # nobody removed it...
    assert left["expires_in"] <= 6
    record = json.loads(journal.read_text())
    # The intent was journaled before the proxy was asked; the answer only if it came in time.
    [injection] = record["injections"]
    assert record["status"] == "running" and injection["fault"]["status"] == 503
    assert injection["result"] is None or injection["result"]["id"] == left["id"]
    wait_for(lambda: not world.admin.faults(), 15, "the fault's TTL")  # ...the proxy ended it


# -- the runner's always-remove paths, with fakes --


class FakeInjector:
    def __init__(self) -> None:
        self.faults: dict[str, FaultSpec] = {}

    def add(self, spec: FaultSpec, fault_id: str | None = None) -> dict[str, Any]:
        fault_id = fault_id or f"f{len(self.faults)}"
        self.faults[fault_id] = spec
        return {"id": fault_id, "fault": spec.fault, "expires_in": spec.ttl}

    def remove(self, fault_id: str) -> bool:
        return self.faults.pop(fault_id, None) is not None


def steady(since: float, now: float) -> Observation:
    n = 10 * (now - since)
    buckets = ((0.5, n), (float("inf"), n))
    stats = VariantStats(requests=n, errors=0, fallbacks=n, latency_buckets=buckets)
    return Observation(since, now, {"primary": stats})


def fake_scenario(**spec: Any) -> ChaosScenario:
    document = yaml.safe_load(EXAMPLE.read_text())
    document["spec"].update(duration="30s", **spec)
    return parse_document(yaml.safe_dump(document), str(EXAMPLE), expect=ChaosScenario)


def test_runner_held_with_fakes_gives_the_fault_a_ttl() -> None:
    clock, injector = FakeClock(), FakeInjector()
    metrics = ScriptedMetricsSource(steady, clock.now)
    scenario = fake_scenario()
    result = run_scenario(
        scenario, injector=injector, metrics=metrics, journal=Journal(scenario), clock=clock
    )
    assert result.outcome == "held" and result.exit_code == 0
    assert injector.faults == {}
    assert result.journal["injections"][0]["result"]["expires_in"] == 60.0  # 30 s + 30 s margin
    assert "<testsuite" in junit_xml(result.journal)


def test_runner_removes_faults_when_metrics_fail_mid_run() -> None:
    clock, injector = FakeClock(), FakeInjector()
    metrics = ScriptedMetricsSource(steady, clock.now)
    clock.call_at(clock.now() + 15, lambda: setattr(metrics, "down", True))
    scenario = fake_scenario()
    journal = Journal(scenario)
    with pytest.raises(MetricsBackendError):
        run_scenario(scenario, injector=injector, metrics=metrics, journal=journal, clock=clock)
    assert injector.faults == {}
    assert journal.data["outcome"] == "error" and journal.data["exit_code"] == 3


def test_runner_removes_faults_on_ctrl_c() -> None:
    clock, injector = FakeClock(), FakeInjector()
    metrics = ScriptedMetricsSource(steady, clock.now)

    def ctrl_c() -> None:
        raise KeyboardInterrupt

    clock.call_at(clock.now() + 15, ctrl_c)
    scenario = fake_scenario()
    journal = Journal(scenario)
    with pytest.raises(Interrupted):
        run_scenario(scenario, injector=injector, metrics=metrics, journal=journal, clock=clock)
    assert injector.faults == {}
    assert journal.data["outcome"] == "interrupted" and len(journal.data["removals"]) == 1


def test_example_scenario_validates_and_has_a_schema() -> None:
    scenario = load_document(EXAMPLE, expect=ChaosScenario)
    assert scenario.spec.schedule == "30 10 * * mon-fri"
    result = CliRunner().invoke(main, ["schema", "ChaosScenario"])
    assert result.exit_code == 0 and "fallback_rate" in result.output


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"duration": "10m"}, "faults[0].ttl: shorter than the duration"),
        ({"schedule": "every day"}, "spec.schedule: 'every day' is not a cron expression"),
        ({"window": {"start": "18:00", "end": "09:00"}}, "spec.window.end: must be after start"),
    ],
)
def test_bad_scenarios_name_the_field(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    document = yaml.safe_load(EXAMPLE.read_text())
    document["spec"]["faults"][0]["ttl"] = "5m"
    document["spec"].update(change)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(document))
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2
    assert message in result.output
