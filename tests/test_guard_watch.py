"""A guard between rollouts, on fakes (memory flag, scripted metrics, fake clock): it trips on a
failed SLO or a matching alert, sends everything to the safe variation, journals and calls its
hooks, then does nothing until re-armed; it stands aside while a rollout holds its flag; a
metrics outage or a flag write that fails is never a trip half done."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from canaryctl.api.alerts import read_alerts
from canaryctl.clock import FakeClock
from canaryctl.controller.hooks import HookRunner
from canaryctl.controller.store import RunRecord
from canaryctl.errors import FlagBackendError, InvalidDocument
from canaryctl.flags import MemoryFlagStore
from canaryctl.flags.base import FlagSnapshot
from canaryctl.guard import GuardJournal, GuardPhase, GuardWatch
from canaryctl.metrics import Observation, ScriptedMetricsSource, VariantStats
from canaryctl.runbook import Guard, parse_document

FLAG = {"provider": "file", "path": "flags.json", "key": "support-bot-model",
        "baseline": "gpt-4-turbo", "canary": "gpt-4o-mini"}  # fmt: skip
GUARD: dict[str, Any] = {
    "apiVersion": "canaryctl/v1",
    "kind": "Guard",
    "metadata": {"name": "support-bot-guard"},
    "spec": {
        "flag": FLAG,
        "metrics": {"provider": "scrape", "targets": ["http://127.0.0.1:9/metrics"]},
        "slos": [{"metric": "error_rate", "max": 0.05}],
        "analysis": {"interval": "10s", "min_requests": 20, "failure_limit": 1},
        "trip_on": [{"alertname": "LLMHighErrorRate", "route": "support-bot"}],
        "on_trip": [{"webhook": {"url": "http://hooks.test/guard"}}],
    },
}


def guard_document(**spec: Any) -> Guard:
    data = {**GUARD, "spec": {**GUARD["spec"], **spec}}
    return parse_document(yaml.safe_dump(data), "guard.yaml", expect=Guard)


class Watched:
    """The promoted model serves everyone; `error_rate` steers it; rollouts are a list."""

    def __init__(self, tmp_path: Path, **spec: Any) -> None:
        self.clock = FakeClock()
        self.flags = MemoryFlagStore("support-bot-model", "gpt-4-turbo", "gpt-4o-mini",
                                     canary_weight=100)  # fmt: skip
        self.error_rate = 0.0
        self.metrics = ScriptedMetricsSource(self._script, self.clock.now)
        self.journal = GuardJournal(tmp_path / "guard.jsonl")
        self.running: list[RunRecord] = []
        self.posted: list[dict[str, Any]] = []
        hooks = HookRunner(httpx.Client(transport=httpx.MockTransport(self._hook)))
        self.watch = GuardWatch(guard_document(**spec), flags=self.flags, metrics=self.metrics,
                                journal=self.journal, clock=self.clock,
                                rollouts=lambda: self.running, hooks=hooks)  # fmt: skip

    def _hook(self, request: httpx.Request) -> httpx.Response:
        import json

        self.posted.append(json.loads(request.content))
        return httpx.Response(200)

    def _script(self, since: float, now: float) -> Observation:
        n = 5 * (now - since)
        stats = VariantStats(requests=n, errors=n * self.error_rate)
        return Observation(since, now, {"gpt-4o-mini": stats, "gpt-4-turbo": VariantStats(0)})

    def canary(self) -> float:
        return self.flags.split(self.flags.snapshot()).canary

    def run_for(self, seconds: float) -> None:
        end = self.clock.now() + seconds
        self.watch.run(until=lambda: self.clock.now() >= end)

    def events(self) -> list[str]:
        return [e["event"] for e in self.journal.entries()]


def rollout_record(flag: dict[str, Any], run_id: int = 7) -> RunRecord:
    return RunRecord(id=run_id, name="to-gpt4o-mini", runbook={"spec": {"flag": flag}},
                     host="h", pid=1, version="t", started_at=0, updated_at=0, ended_at=None,
                     phase="progressing", outcome=None, reason="", exit_code=None,
                     prior_flag=FlagSnapshot("k", 1, ""), flag_version=1, state={},
                     final_split=None)  # fmt: skip


def test_a_failing_slo_trips_the_guard_after_failure_limit_windows(tmp_path: Path) -> None:
    w = Watched(tmp_path)
    w.run_for(60)
    assert w.watch.phase is GuardPhase.WATCHING and w.canary() == 100
    assert w.events() == ["watching"]
    w.error_rate = 0.2
    w.run_for(5)  # one failed window (the one ending now): failure_limit 1 tolerates it
    assert w.canary() == 100 and w.events()[-1] == "analysis"
    w.run_for(10)
    assert w.watch.phase is GuardPhase.TRIPPED and w.canary() == 0
    entries = w.journal.entries()
    assert [e["event"] for e in entries] == ["watching", "analysis", "analysis", "tripped",
                                             "flag_safe", "hook"]  # fmt: skip
    trip = entries[3]
    assert trip["reason"] == "SLO failed: error_rate = 0.2 is above the maximum 0.05"
    assert entries[4]["before"]["canary"] == 100 and entries[4]["after"]["baseline"] == 100
    assert [p["event"] for p in w.posted] == ["guard_tripped"]
    assert w.posted[0]["safe"] == "gpt-4-turbo" and w.posted[0]["reason"] == trip["reason"]

    # Tripped: nothing more, whatever happens, until re-armed.
    w.flags.edit_by_someone_else(100)
    w.error_rate = 0.9
    w.watch.fire(read_alerts({"alerts": [{"status": "firing", "labels": {
        "alertname": "LLMHighErrorRate", "route": "support-bot"}}]}))  # fmt: skip
    w.run_for(120)
    assert w.canary() == 100 and len(w.journal.entries()) == 6 and len(w.posted) == 1

    w.journal.append("rearmed", at=w.clock.now(), by="alice")
    w.error_rate = 0.0
    w.run_for(60)
    assert w.watch.phase is GuardPhase.WATCHING and w.canary() == 100
    assert w.events()[-2:] == ["rearmed", "watching"]


def test_a_passing_window_resets_the_count_and_inconclusive_ones_trip_nothing(
    tmp_path: Path,
) -> None:
    w = Watched(tmp_path)
    w.run_for(5)
    for rate in (0.5, 0.0, 0.5):  # fail, pass, fail: never two failures in a row
        w.error_rate = rate
        w.run_for(10)
    assert w.watch.phase is GuardPhase.WATCHING and w.canary() == 100
    w.run_for(10)
    assert w.watch.phase is GuardPhase.TRIPPED and w.canary() == 0

    few = Watched(tmp_path / "few", analysis={"interval": "10s", "min_requests": 100})
    few.error_rate = 0.5
    few.run_for(300)  # 50 requests a window: too few to judge
    assert few.watch.phase is GuardPhase.WATCHING and few.canary() == 100
    assert few.events() == ["watching"]


def test_a_matching_alert_trips_it_and_others_do_not(tmp_path: Path) -> None:
    w = Watched(tmp_path)
    w.run_for(5)
    other = read_alerts({"alerts": [
        {"status": "firing", "labels": {"alertname": "LLMHighErrorRate", "route": "search"}},
        {"status": "resolved", "labels": {"alertname": "LLMHighErrorRate",
                                          "route": "support-bot"}}]})  # fmt: skip
    assert w.watch.fire(other) == []
    w.run_for(5)
    assert w.canary() == 100
    hit = read_alerts({"alerts": [{"status": "firing", "fingerprint": "abc", "labels": {
        "alertname": "LLMHighErrorRate", "route": "support-bot", "team": "ml"}}]})  # fmt: skip
    assert w.watch.fire(hit) == hit
    w.run_for(1.5)
    assert w.canary() == 0
    trip = next(e for e in w.journal.entries() if e["event"] == "tripped")
    assert trip["reason"] == "alert LLMHighErrorRate fired"
    assert trip["alert"]["fingerprint"] == "abc"


def test_it_stands_aside_while_a_rollout_holds_its_flag(tmp_path: Path) -> None:
    w = Watched(tmp_path)
    w.run_for(5)
    w.running = [rollout_record(FLAG)]
    w.error_rate = 0.5
    w.run_for(120)
    assert w.watch.phase is GuardPhase.STANDING_ASIDE and w.canary() == 100
    assert w.events() == ["watching", "standing_aside"]
    assert w.journal.entries()[-1]["run_id"] == 7
    # A rollout of another flag does not count; once ours ends the watch starts afresh.
    w.running = [rollout_record({**FLAG, "key": "other-flag"})]
    w.run_for(1.5)
    assert w.watch.phase is GuardPhase.WATCHING
    w.run_for(25)
    assert w.watch.phase is GuardPhase.TRIPPED and w.canary() == 0


def firing(fingerprint: str, status: str = "firing") -> list[Any]:
    return read_alerts({"alerts": [{"status": status, "fingerprint": fingerprint, "labels": {
        "alertname": "LLMHighErrorRate", "route": "support-bot"}}]})  # fmt: skip


def test_an_alert_that_fires_while_it_stands_aside_trips_it_once_the_rollout_ends(
    tmp_path: Path,
) -> None:
    w = Watched(tmp_path)
    w.run_for(5)
    w.running = [rollout_record(FLAG)]
    w.run_for(2)
    assert w.watch.fire(firing("abc")) == firing("abc")
    w.watch.fire(firing("abc"))  # Alertmanager's repeat of the same alert
    w.run_for(60)
    assert w.watch.phase is GuardPhase.STANDING_ASIDE and w.canary() == 100
    held = [e for e in w.journal.entries() if e["event"] == "alert_held"]
    assert [(e["fingerprint"], e["run_id"]) for e in held] == [("abc", 7)]
    w.running = []
    w.run_for(2.5)
    assert w.watch.phase is GuardPhase.TRIPPED and w.canary() == 0
    trip = next(e for e in w.journal.entries() if e["event"] == "tripped")
    assert trip["alert"]["fingerprint"] == "abc"


def test_a_held_alert_that_resolves_before_the_rollout_ends_trips_nothing(tmp_path: Path) -> None:
    w = Watched(tmp_path)
    w.run_for(5)
    w.running = [rollout_record(FLAG)]
    w.run_for(2)
    w.watch.fire(firing("abc"))
    w.run_for(10)
    w.watch.fire(firing("abc", status="resolved"))
    w.running = []
    w.run_for(30)
    assert w.watch.phase is GuardPhase.WATCHING and w.canary() == 100
    assert "tripped" not in w.events()


def test_a_flag_write_that_fails_is_retried_until_the_flag_is_safe(tmp_path: Path) -> None:
    w = Watched(tmp_path)
    w.run_for(5)
    real = w.flags.set_canary_weight
    failures = iter([FlagBackendError("LaunchDarkly answered 503")] * 3)

    def flaky(percent: float, **kwargs: Any) -> FlagSnapshot:
        error = next(failures, None)
        if error is not None:
            raise error
        return real(percent, **kwargs)

    w.flags.set_canary_weight = flaky  # type: ignore[method-assign]
    w.error_rate = 0.5
    w.run_for(22)
    assert w.canary() == 0
    events = w.events()
    assert events.count("error") == 3 and events[-2:] == ["flag_safe", "hook"]
    assert events.index("tripped") < events.index("error")


def test_a_metrics_outage_is_journaled_and_never_trips(tmp_path: Path) -> None:
    w = Watched(tmp_path)
    w.run_for(5)
    w.metrics.down = True
    w.error_rate = 0.5
    w.run_for(60)
    assert w.watch.phase is GuardPhase.WATCHING and w.canary() == 100
    assert set(w.events()[1:]) == {"error"}


def test_a_guard_restarted_after_a_trip_stays_tripped(tmp_path: Path) -> None:
    w = Watched(tmp_path)
    w.error_rate = 0.5
    w.run_for(40)
    assert w.canary() == 0
    again = Watched(tmp_path)
    again.flags.edit_by_someone_else(100)
    again.run_for(60)
    assert again.watch.phase is GuardPhase.TRIPPED and again.canary() == 100  # done already
    assert again.posted == []


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"slos": [{"metric": "error_rate", "compare": "baseline", "max_increase": 0.01}]},
         "spec.slos[0]: a guard's SLOs are absolute"),
        ({"trip_on": [{"alertname": "X", "bad-label": "y"}]},
         "spec.trip_on[0]: 'bad-label' is not a Prometheus label name"),
        ({"slos": [{"name": "x", "query": "sum(up{v={{variant}}})", "max": 1}]},
         "custom PromQL SLOs need metrics.provider prometheus"),
    ],
)  # fmt: skip
def test_bad_guards_are_refused_naming_the_field(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidDocument) as raised:
        guard_document(**spec)
    assert message in str(raised.value)


def test_the_webhook_answers_a_held_alert_as_held_not_tripping(tmp_path: Path) -> None:
    from api_world import OPERATOR, TOKENS, auth
    from starlette.testclient import TestClient

    from canaryctl.guard.server import guard_app

    w = Watched(tmp_path)
    w.run_for(5)
    w.running = [rollout_record(FLAG)]
    w.run_for(2)
    body = {"version": "4", "status": "firing", "alerts": [{"status": "firing",
            "fingerprint": "abc", "labels": {"alertname": "LLMHighErrorRate",
                                             "route": "support-bot"}}]}  # fmt: skip
    with TestClient(guard_app(w.watch, TOKENS)) as client:
        answer = client.post("/api/v1/alertmanager", json=body, headers=auth(OPERATOR))
    assert answer.status_code == 200, answer.text
    shown = answer.json()
    assert shown["phase"] == "standing_aside" and shown["tripping"] == []
    assert shown["held"] == [{"alertname": "LLMHighErrorRate", "fingerprint": "abc"}]
    w.running = []
    w.run_for(2.5)
    assert w.watch.phase is GuardPhase.TRIPPED and w.canary() == 0


def test_the_guard_serves_its_state_for_prometheus(tmp_path: Path) -> None:
    from api_world import TOKENS
    from prometheus_client.parser import text_string_to_metric_families
    from starlette.testclient import TestClient

    from canaryctl.guard.server import guard_app

    def gauges(client: TestClient) -> dict[tuple[str, ...], float]:
        text = client.get("/metrics").text
        return {
            (s.name, *sorted(s.labels.values())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    w = Watched(tmp_path, analysis={"interval": "10s", "min_requests": 20, "failure_limit": 0})
    w.run_for(5)
    with TestClient(guard_app(w.watch, TOKENS)) as client:
        before = gauges(client)
        assert before[("canaryctl_guard_tripped", "support-bot-guard")] == 0
        assert before[("canaryctl_guard_phase", "support-bot-guard", "watching")] == 1
        w.error_rate = 0.5
        w.run_for(15)
        assert w.watch.phase is GuardPhase.TRIPPED
        after = gauges(client)
    assert after[("canaryctl_guard_tripped", "support-bot-guard")] == 1
    assert after[("canaryctl_guard_phase", "support-bot-guard", "tripped")] == 1
    assert after[("canaryctl_guard_phase", "support-bot-guard", "watching")] == 0
