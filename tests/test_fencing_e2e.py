"""Issue 24's faults with real processes over loopback: `canaryctl controller serve` processes
(lease 3 s; 6 s in 3.) on a real PostgreSQL, the lab's gateway and traffic, file flags.

1. A controller frozen (SIGSTOP) past its lease, thawed after the other one moved the flag on:
   it writes nothing, and the run ends under the other driver.
2. PostgreSQL frozen (every server process SIGSTOPped) under a run: the flag is restored while
   the database is frozen, and once it thaws the restore is journaled as the run's own.
3. PostgreSQL SIGKILLed under a run and restarted: no zombie lease; the run ends by itself and
   the flag takes a new run.

Every wait is on an event, bounded by WAIT (a failure bound, not a measurement)."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest
import yaml
from postgres_server import PostgresServer
from test_e2e_controller import ControllerProcess, eventually, submit, world

from canaryctl.controller.store import EventRecord, StateStore

pytestmark = pytest.mark.e2e

BASELINE, CANARY = "gpt-4-turbo", "gpt-4o-mini"


def runbook(tmp_path: Path, flags: Path, metrics_url: str, steps: list[dict[str, Any]]) -> Path:
    document = {
        "apiVersion": "canaryctl/v1",
        "kind": "Rollout",
        "metadata": {"name": "to-gpt4o-mini"},
        "spec": {
            "flag": {"provider": "file", "path": str(flags), "key": "support-bot-model",
                     "baseline": BASELINE, "canary": CANARY},
            "metrics": {"provider": "scrape", "targets": [metrics_url], "route": "support-bot"},
            "slos": [{"metric": "error_rate", "max": 0.03}],
            "analysis": {"interval": "1s", "min_requests": 40, "inconclusive_limit": 30,
                         "method": "threshold"},
            "steps": steps,
        },
    }  # fmt: skip
    path = tmp_path / "rollout.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def canary_share(flags: Path) -> float:
    """Percent of default-rule traffic the flag file serves the canary now."""
    flag = json.loads(flags.read_text())["flags"]["support-bot-model"]
    canary = flag["variations"].index(CANARY)
    rule = flag["fallthrough"]
    if "variation" in rule:
        return 100.0 if rule["variation"] == canary else 0.0
    weights = {v["variation"]: v["weight"] for v in rule["rollout"]["variations"]}
    return weights.get(canary, 0) / 1000


def landed(events: list[EventRecord], target: float) -> bool:
    return any(e.result is not None and e.data["target_canary"] == target for e in events)


def assert_no_crash(*controllers: ControllerProcess) -> None:
    for controller in controllers:
        text = controller.log.read_text()
        assert "Traceback" not in text and "please report this bug" not in text, text


def test_a_controller_frozen_past_its_lease_writes_nothing_when_thawed(
    tmp_path: Path, postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps = [{"set_weight": 20}, {"pause": "4s"}, {"set_weight": 50}, {"pause": "approval"}]
    with world(tmp_path, postgres) as (url, flags, stack):
        path = runbook(tmp_path, flags, stack.metrics_url, steps)
        a, b = ControllerProcess(url, tmp_path, "a"), ControllerProcess(url, tmp_path, "b")
        try:
            run_id = submit(url, path, monkeypatch)
            with StateStore(url) as store:
                changes = lambda: store.events(run_id, "flag_changed")  # noqa: E731
                eventually("20% to land", lambda: landed(changes(), 20))
                record = store.run(run_id)
                assert record is not None
                frozen, other = (a, b) if record.owner == a.owner else (b, a)
                frozen.process.send_signal(signal.SIGSTOP)
                # Waiting there is the phase and the journaled start of the approval step,
                # which lands just after the phase on a loaded machine.
                waiting = lambda: any(  # noqa: E731
                    e.type == "step_started" and e.data.get("index") == len(steps) - 1
                    for e in store.events(run_id)
                )
                eventually("the other controller to move the flag to 50% and wait there",
                           lambda: landed(changes(), 50) and store.run(run_id).phase  # type: ignore[union-attr]
                           == "awaiting_approval" and waiting())  # fmt: skip
                journal = store.events(run_id)
                frozen.process.send_signal(signal.SIGCONT)
                eventually("the thawed controller to let the run go",
                           lambda: frozen.driving() == [])  # fmt: skip
                record = store.run(run_id)
                assert record is not None and not record.finished and record.owner == other.owner
                # The thawed one wrote nothing: what follows the snapshot is only the driver's
                # own looks while it waits for approval, at its weight (the thawed one held 20%).
                after = store.events(run_id)
                assert after[: len(journal)] == journal
                assert all(e.type == "analysis" and e.data["weight"] == 50
                           for e in after[len(journal):]), after[len(journal):]  # fmt: skip
                assert canary_share(flags) == 50
                store.request(run_id, "approve", by="test", at=0.0)
                eventually("the run to end", lambda: store.run(run_id).finished)  # type: ignore[union-attr]
                record = store.run(run_id)
                leases = [e.data for e in store.events(run_id, "lease")]
                epochs = [e.data["epoch"] for e in changes()]
        finally:
            for controller in (a, b):
                if controller.process.poll() is None:
                    controller.process.send_signal(signal.SIGCONT)
                controller.stop()
        assert record is not None and record.outcome == "promoted", record.reason
        assert [lease["owner"] for lease in leases] == [frozen.owner, other.owner]
        assert epochs == sorted(epochs) and set(epochs) == {1, 2}
        assert canary_share(flags) == 100
        assert_no_crash(a, b)


def test_a_frozen_database_gets_the_flag_restored_and_journaled_once_it_thaws(
    tmp_path: Path, own_postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with world(tmp_path, own_postgres) as (url, flags, stack):
        path = runbook(tmp_path, flags, stack.metrics_url, [{"set_weight": 20}, {"pause": "600s"}])
        a = ControllerProcess(url, tmp_path, "a")
        try:
            run_id = submit(url, path, monkeypatch)
            with StateStore(url) as store:
                eventually("20% to land", lambda: landed(store.events(run_id, "flag_changed"), 20))
            own_postgres.signal_all(signal.SIGSTOP)
            try:
                eventually("the flag restored while the database is frozen",
                           lambda: canary_share(flags) == 0)  # fmt: skip
            finally:
                own_postgres.signal_all(signal.SIGCONT)
            with StateStore(url) as store:
                eventually("the run to end", lambda: store.run(run_id).finished)  # type: ignore[union-attr]
                record = store.run(run_id)
                last = store.events(run_id, "flag_changed")[-1]
        finally:
            a.stop()
        assert record is not None and record.outcome == "error"
        assert "this run restored the flag" in record.reason, record.reason
        assert last.data["action"] == "restore" and last.data["journaled_late"]
        assert canary_share(flags) == 0 and not list(tmp_path.glob("*.canaryctl-claim"))
        assert_no_crash(a)


def test_a_database_killed_and_restarted_leaves_no_zombie_lease(
    tmp_path: Path, durable_postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server keeps what it acknowledged (durable_postgres): with the tests' fast server,
    the kill lost the run's last commits, the run read back as submitted, and the next driver
    began it again on the flag the first one had restored."""
    with world(tmp_path, durable_postgres) as (url, flags, stack):
        path = runbook(tmp_path, flags, stack.metrics_url, [{"set_weight": 20}, {"pause": "600s"}])
        # A 6 s lease bounds each database call by 2 s: on a loaded machine, a 1 s bound lets
        # the run end (flag restored) before the database is killed at all.
        a, b = (ControllerProcess(url, tmp_path, name, lease=6.0) for name in ("a", "b"))
        try:
            run_id = submit(url, path, monkeypatch)
            with StateStore(url) as store:
                eventually("20% to land", lambda: landed(store.events(run_id, "flag_changed"), 20))
            durable_postgres.kill()
            eventually("the flag restored", lambda: canary_share(flags) == 0)
            durable_postgres.start()
            with StateStore(url) as store:
                eventually("the run to end by itself", lambda: store.run(run_id).finished)  # type: ignore[union-attr]
                record = store.run(run_id)
                second = submit(url, path, monkeypatch)  # the flag is free again
                eventually("the next run to move the flag",
                           lambda: landed(store.events(second, "flag_changed"), 20))  # fmt: skip
                store.request(second, "abort", by="test", at=0.0)
                eventually("the next run to end", lambda: store.run(second).finished)  # type: ignore[union-attr]
                aborted = store.run(second)
        finally:
            a.stop()
            b.stop()
        assert record is not None and record.outcome == "error"
        assert "this run restored the flag" in record.reason, record.reason
        assert aborted is not None and aborted.outcome == "aborted"
        assert canary_share(flags) == 0
        assert_no_crash(a, b)
