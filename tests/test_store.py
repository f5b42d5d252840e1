"""The journal: runs and events round-trip, another terminal sees and talks to a run."""

from __future__ import annotations

from pathlib import Path

from canaryctl.controller import StateStore
from canaryctl.controller.store import redacted_runbook
from canaryctl.flags import FlagSnapshot

PRIOR = FlagSnapshot("support-bot-model", 7, '{"canary_weight": 0}')


def open_run(store: StateStore) -> int:
    return store.create_run(
        name="support-bot",
        runbook={"kind": "Rollout", "spec": {}},
        host="box",
        pid=4242,
        version="0.1.0",
        started_at=100.0,
        prior_flag=PRIOR,
        phase="pending",
        state={"phase": "pending", "item": 0},
    )


def test_runs_and_events_round_trip(tmp_path: Path) -> None:
    with StateStore(tmp_path / "deep" / "state.db") as store:
        run_id = open_run(store)
        event = store.begin_event(run_id, "flag_changed", {"target_canary": 5}, at=101.0)
        assert store.events(run_id)[0].result is None  # the intent is journaled before acting
        store.end_event(event, {"version": 8}, at=102.0)
        store.set_flag_version(run_id, 8)
        store.record_event(run_id, "analysis", {"outcome": "pass"}, at=110.0)
        store.save_state(run_id, phase="paused", state={"item": 1}, at=111.0)
        store.finish_run(
            run_id,
            phase="promoted",
            outcome="promoted",
            reason="",
            exit_code=0,
            at=120.0,
            final_split={"baseline": 0.0, "canary": 100.0, "other": 0.0},
        )
        record = store.run(run_id)
        assert record is not None
        assert record.prior_flag == PRIOR
        assert (record.phase, record.outcome, record.exit_code, record.flag_version) == (
            "promoted",
            "promoted",
            0,
            8,
        )
        assert record.finished and record.state == {"item": 1}
        events = store.events(run_id)
        assert [(e.type, e.result) for e in events] == [
            ("flag_changed", {"version": 8}),
            ("analysis", {}),
        ]
        assert store.events(run_id, "analysis")[0].data == {"outcome": "pass"}
        assert store.latest_run() == record
        assert store.run(99) is None


def test_another_connection_sees_the_run_and_posts_requests(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with StateStore(path) as runner, StateStore(path) as terminal:
        run_id = open_run(runner)
        runner.save_state(run_id, phase="awaiting_approval", state={}, at=105.0)
        seen = terminal.run(run_id)
        assert seen is not None and seen.phase == "awaiting_approval"
        terminal.request(run_id, "approve", by="alice@box", at=106.0)
        terminal.request(run_id, "abort", by="bob@box", at=107.0)
        pending = runner.pending_requests(run_id)
        assert [(r.kind, r.requested_by) for r in pending] == [
            ("approve", "alice@box"),
            ("abort", "bob@box"),
        ]
        runner.mark_handled(pending[0].id, at=108.0)
        assert [r.kind for r in terminal.pending_requests(run_id)] == ["abort"]
        assert [r.id for r in terminal.runs()] == [run_id]


def test_no_secret_reaches_the_runbook_copy(tmp_path: Path) -> None:
    hook = {
        "webhook": {
            "url": "https://user:pw@hooks.test:8443/services/T0/B0/pathsecret?token=s3cret#x",
            "headers": {"Authorization": "Bearer s3cret"},
        }
    }
    metrics = {"provider": "prometheus", "url": "https://user:pw@prom.test/base?token=s3cret"}
    runbook = {
        "kind": "Rollout",
        "spec": {"on_rollback": [hook], "on_promote": [hook], "metrics": metrics},
    }
    with StateStore(tmp_path / "state.db") as store:
        run_id = store.create_run(
            name="x",
            runbook=runbook,
            host="box",
            pid=1,
            version="0.1.0",
            started_at=0.0,
            prior_flag=PRIOR,
            phase="pending",
            state={},
        )
        record = store.run(run_id)
    assert record is not None
    stored = str(record.runbook)
    assert "s3cret" not in stored and "pw" not in stored and "pathsecret" not in stored
    assert record.runbook["spec"]["on_promote"][0]["webhook"] == {
        "url": "https://hooks.test:8443",  # a webhook's path may be its secret
        "headers": {"Authorization": "<redacted>"},
    }
    assert record.runbook["spec"]["metrics"]["url"] == "https://prom.test/base"
    assert runbook["spec"]["on_rollback"][0]["webhook"]["headers"]["Authorization"] == (
        "Bearer s3cret"
    )  # the caller's copy is left as it was
    assert redacted_runbook({}) == {}


def test_the_database_is_in_wal_mode(tmp_path: Path) -> None:
    import sqlite3

    with StateStore(tmp_path / "state.db"):
        mode = sqlite3.connect(tmp_path / "state.db").execute("PRAGMA journal_mode").fetchone()
    assert mode == ("wal",)
