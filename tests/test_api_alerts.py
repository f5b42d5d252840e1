"""Alerts stop rollouts: Alertmanager's webhook payload, posted over HTTP to the API, aborts a
running rollout whose `abort_on` matches, and the flag is restored; resolved alerts, repeats of
one fingerprint and alerts matching nothing change nothing. Plus the pure matching rules."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from canaryctl.api.alerts import Alert, Watched, decide, read_alerts, requester
from canaryctl.controller import StateStore
from tests.api_world import OPERATOR, LiveRollout, api_server, auth

ABORT_ON = [{"alertname": "LLMHighErrorRate", "route": "support-bot"}, {"alertname": "Budget"}]


def alert(status: str = "firing", fingerprint: str | None = "c6eadffa33fcdf37",
          **labels: str) -> dict[str, Any]:  # fmt: skip
    """One alert as Alertmanager sends it (Grafana adds silenceURL, values, ...)."""
    body: dict[str, Any] = {
        "status": status,
        "labels": labels or {"alertname": "LLMHighErrorRate", "route": "support-bot",
                             "severity": "page"},
        "annotations": {"summary": "support-bot error rate above 5%"},
        "startsAt": "2026-12-02T01:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=x",
    }  # fmt: skip
    if fingerprint is not None:
        body["fingerprint"] = fingerprint
    return body


def payload(*alerts: dict[str, Any]) -> dict[str, Any]:
    """Alertmanager's webhook body, version 4."""
    return {
        "version": "4",
        "groupKey": '{}:{alertname="LLMHighErrorRate"}',
        "truncatedAlerts": 0,
        "status": "firing" if any(a["status"] == "firing" for a in alerts) else "resolved",
        "receiver": "canaryctl",
        "groupLabels": {"alertname": "LLMHighErrorRate"},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": list(alerts),
    }


def test_a_firing_alert_aborts_the_running_rollout_and_the_flag_is_restored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="canaryctl.api")
    live = LiveRollout(tmp_path, abort_on=ABORT_ON)
    with api_server(live.world.state) as server:
        hook = f"{server.url}/api/v1/alertmanager"
        run_id = live.start(server)
        assert live.world.canary() == 10

        def post(body: dict[str, Any]) -> dict[str, Any]:
            answer = httpx.post(hook, json=body, headers=auth(OPERATOR))
            assert answer.status_code == 200, answer.text
            return dict(answer.json())

        # Resolved, and firing but for another route: nothing changes.
        assert post(payload(alert("resolved"))) == {
            "aborted": [], "repeats": [], "unmatched": [], "resolved": 1}  # fmt: skip
        other = alert(fingerprint="0000aaaa", alertname="LLMHighErrorRate", route="search")
        assert post(payload(other))["unmatched"] == [
            {"alertname": "LLMHighErrorRate", "fingerprint": "0000aaaa"}]  # fmt: skip
        assert "alert LLMHighErrorRate (fingerprint 0000aaaa) matches no running" in caplog.text
        with StateStore(live.world.state) as store:
            assert store.pending_requests(run_id) == []
        assert live.world.canary() == 10

        # The alert fires (twice: Alertmanager repeats a group): one abort. The run is held
        # inside its next analysis meanwhile, so the repeat meets it still running however
        # slowly the machine lets the test send it (an event, not a race with the run).
        held, go = threading.Event(), threading.Event()

        def hold() -> None:
            held.set()
            go.wait(60)

        live.world.on_observe = hold
        assert held.wait(60), "the run never analysed again"
        first = post(payload(alert()))
        assert first["aborted"] == [{"run_id": run_id, "alertname": "LLMHighErrorRate",
                                     "fingerprint": "c6eadffa33fcdf37"}]  # fmt: skip
        again = post(payload(alert()))
        assert again["aborted"] == [] and [r["run_id"] for r in again["repeats"]] == [run_id]
        live.world.on_observe = lambda: None
        go.set()
        result = live.finish()
        assert post(payload(alert())) == {
            "aborted": [], "repeats": [], "unmatched": [
                {"alertname": "LLMHighErrorRate", "fingerprint": "c6eadffa33fcdf37"}],
            "resolved": 0}  # fmt: skip: the run has ended: nothing runs to match
    assert result.outcome == "aborted" and result.exit_code == 1
    assert live.world.canary() == 0
    assert live.world.flags.snapshot().raw == live.world.prior
    with StateStore(live.world.state) as store:
        requests = [e.data for e in store.events(run_id, "request")]
        assert store.pending_requests(run_id) == []
    assert requests == [{"kind": "abort", "by": requester(read_alerts(payload(alert()))[0])}]
    assert requests[0]["by"] == "alertmanager: LLMHighErrorRate (fingerprint c6eadffa33fcdf37)"


def test_an_operator_approves_over_http_and_the_run_is_promoted(tmp_path: Path) -> None:
    live = LiveRollout(tmp_path)
    with api_server(live.world.state) as server:
        run_id = live.start(server)
        answer = httpx.post(f"{server.url}/api/v1/runs/{run_id}/approve", headers=auth(OPERATOR))
        assert answer.status_code == 202
        result = live.finish()
        detail = httpx.get(f"{server.url}/api/v1/runs/{run_id}", headers=auth(OPERATOR)).json()
    assert result.outcome == "promoted" and live.world.canary() == 100
    assert detail["run"]["outcome"] == "promoted"
    assert {"kind": "approve", "by": "ops (api)"} in [
        e["data"] for e in detail["events"] if e["type"] == "request"]  # fmt: skip


def watched(run_id: int, *asked: str) -> Watched:
    return Watched(run_id, ABORT_ON, asked)


def test_matching_every_label_of_one_matcher() -> None:
    def fire(**labels: str) -> Alert:
        return read_alerts({"alerts": [alert(**labels)]})[0]

    hit = fire(alertname="LLMHighErrorRate", route="support-bot", severity="page")
    partial = fire(alertname="LLMHighErrorRate")
    budget = fire(alertname="Budget", team="ml")
    decisions, unmatched = decide([hit, partial, budget], [watched(1), watched(2)])
    assert [(d.run_id, d.alert.labels["alertname"], d.action) for d in decisions] == [
        (1, "LLMHighErrorRate", "abort"), (2, "LLMHighErrorRate", "abort"),
        (1, "Budget", "abort"), (2, "Budget", "abort")]  # fmt: skip
    assert unmatched == [partial]


def test_a_fingerprint_already_acted_on_is_a_repeat_and_one_is_made_when_missing() -> None:
    fired = read_alerts({"alerts": [alert(fingerprint=None)]})[0]
    same = read_alerts({"alerts": [alert(fingerprint=None)]})[0]
    assert len(fired.fingerprint) == 16 and fired.fingerprint == same.fingerprint
    decisions, _ = decide([fired, same], [watched(1), watched(2, requester(fired))])
    assert [(d.run_id, d.action) for d in decisions] == [
        (1, "abort"), (2, "repeat"), (1, "repeat"), (2, "repeat")]  # fmt: skip


def test_resolved_alerts_decide_nothing() -> None:
    resolved = read_alerts(payload(alert("resolved")))
    assert decide(resolved, [watched(1)]) == ([], [])
