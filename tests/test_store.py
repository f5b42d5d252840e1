"""The journal: runs and events round-trip, another terminal sees and talks to a run; leases keep
one driver per run; the schema migrates. Every test runs on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from postgres_server import PASSWORD, PostgresServer
from sqlalchemy import text

from canaryctl.controller import StateStore
from canaryctl.controller.schema import LATEST, migrate, schema_version
from canaryctl.controller.store import LeaseLost, redacted_runbook, state_engine
from canaryctl.errors import InvalidInput, StateBackendError
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


def test_runs_and_events_round_trip(state_location: str, tmp_path: Path) -> None:
    if "://" not in state_location:
        state_location = str(tmp_path / "deep" / "state.db")  # its directory is made
    with StateStore(state_location) as store:
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


def test_another_connection_sees_the_run_and_posts_requests(state_location: str) -> None:
    path = state_location
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


def test_no_secret_reaches_the_runbook_copy(state_location: str) -> None:
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
    with StateStore(state_location) as store:
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


def _old_database(location: str) -> None:
    """A database as canaryctl 0.1 left it: schema version 1, one run mid-way."""
    engine, where = state_engine(location)
    with engine.begin() as connection:
        migrate(connection, where, upto=1)
        connection.execute(
            text(
                "INSERT INTO runs (name, runbook, host, pid, version, started_at, updated_at,"
                " phase, prior_flag, flag_version, state) VALUES ('old', '{}', 'box', 1, '0.1.0',"
                " 1.5, 1.5, 'paused', :prior, 7, '{\"item\": 1}')"
            ),
            {"prior": json.dumps({"key": PRIOR.key, "version": 7, "raw": PRIOR.raw})},
        )
    engine.dispose()


def test_an_older_database_is_upgraded_and_keeps_its_runs(state_location: str) -> None:
    _old_database(state_location)
    with StateStore(state_location) as store:
        (old,) = store.runs()
        assert (old.name, old.phase, old.state, old.prior_flag) == (
            "old",
            "paused",
            {"item": 1},
            PRIOR,
        )
        assert old.owner is None and store.take_lease(old.id, "a", now=10.0, ttl=30.0)
    engine, _ = state_engine(state_location)
    with engine.connect() as connection:
        assert schema_version(connection) == LATEST
    engine.dispose()
    with StateStore(state_location) as again:  # opening an upgraded database changes nothing
        assert again.run(old.id) is not None and again.run(old.id).owner == "a"  # type: ignore[union-attr]


def test_a_newer_database_is_refused_untouched(state_location: str) -> None:
    with StateStore(state_location) as store:
        open_run(store)
    engine, _ = state_engine(state_location)
    with engine.begin() as connection:
        connection.execute(text("UPDATE schema_version SET version = :v"), {"v": LATEST + 1})
    engine.dispose()
    with pytest.raises(InvalidInput, match=f"schema version {LATEST + 1}, newer than") as caught:
        StateStore(state_location)
    assert "upgrade canaryctl" in str(caught.value)
    assert PASSWORD not in str(caught.value)
    engine, _ = state_engine(state_location)
    with engine.connect() as connection:
        assert schema_version(connection) == LATEST + 1
        assert connection.execute(text("SELECT COUNT(*) FROM runs")).scalar() == 1
    engine.dispose()


def test_a_lease_keeps_one_driver_until_it_expires(state_location: str) -> None:
    with StateStore(state_location) as store:
        run_id = open_run(store)
        assert store.take_lease(run_id, "ctl-a", now=100.0, ttl=30.0) == 1
        assert store.take_lease(run_id, "ctl-b", now=120.0, ttl=30.0) is None  # a holds it
        assert store.renew_leases("ctl-a", {run_id: 1}, now=125.0, ttl=30.0) == {run_id}
        assert store.take_lease(run_id, "ctl-b", now=150.0, ttl=30.0) is None  # renewed to 155
        assert store.take_lease(run_id, "ctl-b", now=156.0, ttl=30.0) == 2  # a stopped beating
        assert store.renew_leases("ctl-a", {run_id: 1}, now=157.0, ttl=30.0) == set()  # lost
        assert not store.release_lease(run_id, "ctl-a", epoch=1)  # a's late hand-back: nothing
        assert store.run(run_id).owner == "ctl-b"  # type: ignore[union-attr]
        assert store.release_lease(run_id, "ctl-b", epoch=2)  # b hands it back: free at once
        assert store.take_lease(run_id, "ctl-c", now=158.0, ttl=30.0) == 3
        owners = [e.data for e in store.events(run_id, "lease")]
        assert owners == [
            {"owner": "ctl-a", "previous": None, "epoch": 1},
            {"owner": "ctl-b", "previous": "ctl-a", "epoch": 2},
            {"owner": "ctl-c", "previous": None, "epoch": 3},
        ]
        store.finish_run(
            run_id,
            phase="promoted",
            outcome="promoted",
            reason="",
            exit_code=0,
            at=160.0,
            final_split=None,
            epoch=3,
        )
        assert store.take_lease(run_id, "ctl-d", now=1e12, ttl=30.0) is None  # ended: nobody's


def test_a_stale_epoch_writes_nothing_to_the_journal(state_location: str) -> None:
    """Fencing: a driver that lost its lease (epoch 1) while a newer one drives (epoch 2) has
    every write refused in the transaction that checks, and the journal is as epoch 2 left it."""
    with StateStore(state_location) as store:
        run_id = open_run(store)
        assert store.take_lease(run_id, "ctl-a", now=100.0, ttl=30.0) == 1
        event_id = store.begin_event(run_id, "flag_changed", {"n": 1}, at=101.0, epoch=1)
        assert store.take_lease(run_id, "ctl-b", now=200.0, ttl=30.0) == 2
        before = (store.run(run_id), store.events(run_id))
        stale: list[Callable[[], object]] = [
            lambda: store.record_event(run_id, "error", {}, at=201.0, epoch=1),
            lambda: store.begin_event(run_id, "flag_changed", {}, at=201.0, epoch=1),
            lambda: store.end_event(event_id, {}, at=201.0, run_id=run_id, epoch=1),
            lambda: store.save_state(run_id, phase="paused", state={}, at=201.0, epoch=1),
            lambda: store.set_flag_version(run_id, 99, epoch=1),
            lambda: store.finish_run(run_id, phase="failed", outcome="error", reason="stale",
                                     exit_code=3, at=201.0, final_split=None, epoch=1),
        ]  # fmt: skip
        for write in stale:
            with pytest.raises(LeaseLost, match="epoch 2, this driver's is 1"):
                write()
        assert (store.run(run_id), store.events(run_id)) == before
        store.record_event(run_id, "analysis", {}, at=202.0, epoch=2)  # the driver writes on
        assert [e.type for e in store.events(run_id)][-1] == "analysis"


def test_the_heartbeat_renews_only_the_runs_it_is_given(state_location: str) -> None:
    """A driver that dropped a run stops renewing it: the lease lapses by itself."""
    with StateStore(state_location) as store:
        kept, dropped = open_run(store), open_run(store)
        assert store.take_lease(kept, "ctl", now=100.0, ttl=30.0) == 1
        assert store.take_lease(dropped, "ctl", now=100.0, ttl=30.0) == 1
        assert store.renew_leases("ctl", {kept: 1}, now=120.0, ttl=30.0) == {kept}
        assert store.take_lease(dropped, "other", now=131.0, ttl=30.0) == 2
        assert store.take_lease(kept, "other", now=131.0, ttl=30.0) is None


def test_controllers_acquiring_at_once_never_share_a_run(state_location: str) -> None:
    with StateStore(state_location) as store:
        ids = [open_run(store) for _ in range(40)]
        store.take_lease(ids[0], "cli", now=100.0, ttl=30.0)  # a live `rollout run` keeps its own
    stores = [StateStore(state_location) for _ in range(4)]
    taken: dict[str, list[int]] = {}
    barrier = threading.Barrier(len(stores))

    def acquire(number: int) -> None:
        barrier.wait()
        owner = f"ctl-{number}"
        while batch := stores[number].acquire_runs(owner, now=110.0, ttl=30.0, limit=3):
            taken.setdefault(owner, []).extend(r.id for r in batch)
            assert all(r.owner == owner for r in batch)

    threads = [threading.Thread(target=acquire, args=(n,)) for n in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everyone = sorted(i for got in taken.values() for i in got)
    assert everyone == ids[1:]  # each run to exactly one controller, the leased one to none
    with stores[0] as store:
        expired = store.acquire_runs("ctl-late", now=1000.0, ttl=30.0, limit=100)
        assert [r.id for r in expired] == ids  # every lease ran out: a new controller takes all
    for other in stores[1:]:
        other.close()


def test_a_submitted_run_waits_for_a_controller(state_location: str) -> None:
    with StateStore(state_location) as store:
        run_id = store.submit_run(
            name="support-bot",
            runbook={"kind": "Rollout"},
            host="laptop",
            pid=9,
            version="0.1.0",
            at=50.0,
        )
        submitted = store.run(run_id)
        assert submitted is not None
        assert (submitted.phase, submitted.prior_flag, submitted.finished) == (
            "submitted",
            None,
            False,
        )
        (taken,) = store.acquire_runs("ctl", now=60.0, ttl=30.0, limit=10)
        assert taken.id == run_id and taken.phase == "submitted"
        store.begin_submitted(
            run_id,
            host="ctl-box",
            pid=77,
            version="0.1.0",
            started_at=61.0,
            prior_flag=PRIOR,
            phase="pending",
            state={"item": 0},
        )
        begun = store.run(run_id)
        assert begun is not None
        assert (begun.phase, begun.prior_flag, begun.flag_version, begun.host) == (
            "pending",
            PRIOR,
            7,
            "ctl-box",
        )


def test_a_bad_location_is_named_without_its_password(postgres: PostgresServer) -> None:
    with pytest.raises(InvalidInput, match="not a SQLite path nor a postgresql:// URL") as bad:
        StateStore(f"mysql://root:{PASSWORD}@127.0.0.1/x")
    assert PASSWORD not in str(bad.value) and "mysql://127.0.0.1/x" in str(bad.value)
    missing = postgres.url("no_such_database")
    with pytest.raises(StateBackendError, match="no_such_database") as gone:
        StateStore(missing)
    assert PASSWORD not in str(gone.value)
    wrong = missing.replace(PASSWORD, "wrong-pass").replace("no_such_database", "postgres")
    with pytest.raises(StateBackendError, match="password authentication failed") as denied:
        StateStore(wrong)
    assert "wrong-pass" not in str(denied.value)
