"""The controller service in-process, on SQLite and a real PostgreSQL: it drives every submitted
run at once, hands runs back on stop without touching their flags, and another controller
continues them from the journal. Backends are fakes (one memory flag per run, scripted metrics
on the real clock); the lab, subprocesses and SIGKILL are in tests/test_e2e_controller.py."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from prometheus_server import eventually
from sqlalchemy import text

from canaryctl.analysis import Verdict
from canaryctl.controller.defaults import wait_bound
from canaryctl.controller.events import RolloutObserver
from canaryctl.controller.runner import submit_rollout
from canaryctl.controller.service import Controller, ReleasingClock, RequestInbox
from canaryctl.controller.store import StateStore, state_engine
from canaryctl.flags import MemoryFlagStore
from canaryctl.metrics import Observation, ScriptedMetricsSource, VariantStats
from canaryctl.runbook import Rollout, parse_document


def rollout(name: str, *, pause: str = "1s") -> Rollout:
    document = {
        "apiVersion": "canaryctl/v1",
        "kind": "Rollout",
        "metadata": {"name": name},
        "spec": {
            "flag": {"provider": "file", "path": f"{name}.json", "key": name,
                     "baseline": "old", "canary": "new"},
            "metrics": {"provider": "scrape", "targets": ["http://127.0.0.1:9/metrics"]},
            "slos": [{"metric": "error_rate", "max": 0.02}],
            "analysis": {"interval": "0.5s", "min_requests": 5, "method": "threshold"},
            "steps": [{"set_weight": 20}, {"pause": pause}, {"set_weight": 100}],
        },
    }  # fmt: skip
    return parse_document(yaml.safe_dump(document), f"{name}.yaml", expect=Rollout)


def healthy(since: float, now: float) -> Observation:
    n = 100 * max(now - since, 0.1)
    return Observation(
        since, now, {"old": VariantStats(requests=n), "new": VariantStats(requests=n)}
    )


class Fleet:
    """One memory flag per flag key, shared by every controller of a test (as a real flag is)."""

    def __init__(self) -> None:
        self.flags: dict[str, MemoryFlagStore] = {}

    def flag(self, key: str) -> MemoryFlagStore:
        return self.flags.setdefault(key, MemoryFlagStore(key, "old", "new"))

    def backends(self, rollout: Rollout, clock: ReleasingClock) -> tuple[Any, Any]:
        metrics = ScriptedMetricsSource(healthy, clock.now, recent={"old": 600.0})
        return self.flag(rollout.spec.flag.key), metrics

    def canary(self, key: str) -> float:
        flag = self.flag(key)
        return flag.split(flag.snapshot()).canary


def controller(store: StateStore, fleet: Fleet, **options: Any) -> Controller:
    options = {"lease_ttl": 2.0, "poll_interval": 0.1, **options}
    return Controller(store, backends=fleet.backends, **options)


def ended(store: StateStore, run_ids: list[int]) -> Callable[[], bool]:
    return lambda: all(store.run(i).finished for i in run_ids)  # type: ignore[union-attr]


def test_one_controller_drives_every_submitted_run_at_once(state_location: str) -> None:
    fleet = Fleet()
    names = [f"route-{i}" for i in range(5)]
    ids = [submit_rollout(rollout(n, pause="2s"), state_path=state_location)[0] for n in names]
    with StateStore(state_location) as store:
        service = controller(store, fleet).start()
        try:
            eventually("every run to be driven", lambda: service.driving() == ids)
            eventually("every run to end", ended(store, ids))
        finally:
            service.stop()
        for run_id, name in zip(ids, names, strict=True):
            record = store.run(run_id)
            assert record is not None and record.outcome == "promoted", record
            assert fleet.canary(name) == 100
            leases = [e.data for e in store.events(run_id, "lease")]
            assert leases == [{"owner": service.owner, "previous": None, "epoch": 1}]


def test_stop_hands_runs_back_untouched_and_another_controller_finishes_them(
    state_location: str,
) -> None:
    fleet = Fleet()
    run_id, _ = submit_rollout(rollout("support-bot", pause="30s"), state_path=state_location)
    with StateStore(state_location) as store:
        first = controller(store, fleet).start()
        eventually("the first weight", lambda: fleet.canary("support-bot") == 20)
        versions = len(fleet.flag("support-bot").history)
        first.stop()
        record = store.run(run_id)
        assert record is not None and not record.finished
        assert (record.owner, record.phase) == (None, "paused")
        assert fleet.canary("support-bot") == 20  # handed back, not rolled back
        assert len(fleet.flag("support-bot").history) == versions
        assert store.events(run_id, "handed_back")[0].data["owner"] == first.owner

        second = controller(store, fleet).start()
        try:
            eventually("the second controller to take it", lambda: second.driving() == [run_id])
            # The resumed hold restarts from scratch; skip the 30 s by aborting it.
            store.request(run_id, "abort", by="alice", at=time.time())
            eventually("the run to end", ended(store, [run_id]))
        finally:
            second.stop()
        record = store.run(run_id)
        assert record is not None and record.outcome == "aborted"
        assert fleet.canary("support-bot") == 0  # the abort restored it
        owners = [e.data["owner"] for e in store.events(run_id, "lease")]
        assert owners == [first.owner, second.owner]
        assert [e.type for e in store.events(run_id) if e.type in ("resumed", "handed_back")] == [
            "handed_back",
            "resumed",
        ]


def test_a_submitted_run_whose_preflight_fails_ends_with_the_reason(
    state_location: str,
) -> None:
    fleet = Fleet()
    fleet.flag("support-bot").set_canary_weight(50, expect_version=1, comment="a human")
    run_id, _ = submit_rollout(rollout("support-bot"), state_path=state_location)
    with StateStore(state_location) as store:
        service = controller(store, fleet).start()
        try:
            eventually("the run to end", ended(store, [run_id]))
        finally:
            service.stop()
        record = store.run(run_id)
    assert record is not None
    assert (record.phase, record.outcome, record.exit_code) == ("failed", "error", 2)
    assert "serves new 50%" in record.reason
    assert fleet.canary("support-bot") == 50  # refused before anything moved


def test_a_run_a_controller_does_not_hold_is_left_to_its_driver(state_location: str) -> None:
    fleet = Fleet()
    run_id, _ = submit_rollout(rollout("support-bot"), state_path=state_location)
    with StateStore(state_location) as store:
        assert store.take_lease(run_id, "cli-elsewhere", now=time.time(), ttl=3600.0)
        service = controller(store, fleet).start()
        try:
            assert service.scan() == []
            time.sleep(1.0)
            assert service.driving() == [] and fleet.canary("support-bot") == 0
        finally:
            service.stop()


def test_a_scan_takes_a_dead_local_drivers_run_at_once_and_wakes_as_a_live_lease_lapses(
    state_location: str,
) -> None:
    """Issue 24's bound on unjudged time after a takeover: a driver of this host whose process
    is gone is replaced at once, not once its lease runs out; one that may live (another host,
    a live pid) keeps its run, and the next scan is due when its lease lapses, not a scan
    period later."""
    fleet = Fleet()
    dead_run, live_run, local_run, contained_run = (
        submit_rollout(rollout(name), state_path=state_location)[0]
        for name in ("route-dead", "route-remote", "route-local", "route-contained")
    )
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = f"{socket.gethostname()}:{gone.pid}:cafe"
    with StateStore(state_location) as store:
        now = time.time()
        assert store.take_lease(dead_run, dead, now=now, ttl=3600.0)
        assert store.take_lease(live_run, "elsewhere:1:beef", now=now, ttl=0.8)
        assert store.take_lease(
            local_run, f"{socket.gethostname()}:{os.getpid()}:f00d", now=now, ttl=3600.0
        )
        # A container sharing the host's name (host networking) but not its pids: that pid
        # means nothing here, so its run waits for its lease.
        assert store.take_lease(contained_run, f"{dead}:4026000000", now=now, ttl=3600.0)
        lapse = store.run(live_run).lease_until  # type: ignore[union-attr]
        service = controller(store, fleet, lease_ttl=60.0)
        try:
            before = time.time()
            # Its own owner id names its PID namespace, for the others to compare.
            assert service.owner.split(":")[3] == os.readlink("/proc/self/ns/pid")[5:-1]
            assert service.scan() == [dead_run]
            assert store.events(dead_run, "lease")[-1].data["previous"] == dead
            assert service.leases.next_lapse == lapse
            assert service.scan_interval == 5.0
            assert 0 < service.next_scan_in() <= lapse - before + 0.01
        finally:
            service.stop()


@pytest.mark.parametrize("state_location", ["postgresql"], indirect=True)
def test_a_renewal_slowed_past_a_third_of_the_lease_succeeds_within_it(
    state_location: str,
) -> None:
    """A heartbeat waiting on a row lock (a slow transaction elsewhere) for 2.3 s under a 6 s
    lease renews the lease: a database call that ends within the lease is not cut short, which
    would end its run (the bound was a third of the lease, 2 s here)."""
    run_id, _ = submit_rollout(rollout("support-bot"), state_path=state_location)
    lease = 6.0
    with StateStore(state_location, timeout=wait_bound(lease)) as store:
        epoch = store.take_lease(run_id, "ctl", now=time.time(), ttl=lease)
        assert epoch is not None
        engine, _ = state_engine(state_location)
        locked, done = threading.Event(), threading.Event()

        def slow_transaction() -> None:
            with engine.begin() as connection:
                connection.execute(text(f"SELECT id FROM runs WHERE id = {run_id} FOR UPDATE"))
                locked.set()
                done.wait(2.3)

        holder = threading.Thread(target=slow_transaction)
        holder.start()
        try:
            assert locked.wait(30.0)
            renewed = store.renew_leases("ctl", {run_id: epoch}, now=time.time(), ttl=lease)
        finally:
            done.set()
            holder.join()
            engine.dispose()
        assert renewed == {run_id}


@pytest.mark.parametrize("state_location", ["sqlite"], indirect=True)
def test_a_stop_during_the_closing_analysis_hands_back_before_the_weight_due_in_that_tick(
    state_location: str,
) -> None:
    """Issue 24, case 4, through the service: SIGTERM (here `stop()`) arrives while the pause's
    closing analysis runs; that analysis passes, so the tick it ends decides the next weight,
    and the run must be handed back with the flag still at 20%."""
    fleet = Fleet()
    run_id, _ = submit_rollout(rollout("support-bot", pause="2s"), state_path=state_location)
    with StateStore(state_location) as store:
        stopping: list[threading.Thread] = []

        class StopOnClosingAnalysis(RolloutObserver):
            def on_analysis(self, run_id: int, verdict: Verdict) -> None:
                if stopping or not store.events(run_id, "analysis")[-1].data["closing"]:
                    return
                drive = service._drives[run_id]
                stopping.append(threading.Thread(target=service.stop))
                stopping[0].start()
                assert drive.release.wait(30.0)  # asked before the tick decides the next step

        service = controller(store, fleet, observers=[StopOnClosingAnalysis()]).start()
        try:
            eventually("the stop", lambda: bool(stopping))
            stopping[0].join()
        finally:
            service.stop()
        record = store.run(run_id)
        closing = [e for e in store.events(run_id, "analysis") if e.data["closing"]]
    assert closing and closing[-1].data["outcome"] == "pass"  # the next weight was due
    assert record is not None and not record.finished and record.owner is None
    assert fleet.canary("support-bot") == 20
    assert [c.split(": ", 1)[1] for c, _ in fleet.flag("support-bot").history] == ["canary to 20%"]
    assert [e.data["owner"] for e in store.events(run_id, "handed_back")] == [service.owner]


@pytest.mark.parametrize("state_location", ["sqlite"], indirect=True)
def test_a_controller_that_loses_a_lease_stops_without_touching_the_flag(
    state_location: str,
) -> None:
    fleet = Fleet()
    run_id, _ = submit_rollout(rollout("support-bot", pause="30s"), state_path=state_location)
    with StateStore(state_location) as store:
        service = controller(store, fleet).start()
        try:
            eventually("the first weight", lambda: fleet.canary("support-bot") == 20)
            engine, _ = state_engine(state_location)
            with engine.begin() as connection:  # another driver took it over meanwhile
                connection.execute(text("UPDATE runs SET owner = 'other', lease_until = 1e12"))
            engine.dispose()
            eventually("the run to be let go", lambda: service.driving() == [])
        finally:
            service.stop()
        assert fleet.canary("support-bot") == 20
        assert store.run(run_id).owner == "other"  # type: ignore[union-attr]


def test_an_abort_posted_before_any_controller_took_the_run_moves_nothing(
    state_location: str,
) -> None:
    fleet = Fleet()
    run_id, _ = submit_rollout(rollout("support-bot"), state_path=state_location)
    with StateStore(state_location) as store:
        store.request(run_id, "abort", by="alice", at=time.time())
        service = controller(store, fleet).start()
        try:
            eventually("the run to end", ended(store, [run_id]))
        finally:
            service.stop()
        record = store.run(run_id)
        assert record is not None and record.outcome == "aborted"
        assert "aborted by alice" in record.reason
        assert fleet.flag("support-bot").history == []  # never written
        assert store.events(run_id, "flag_changed") == []


def test_the_inbox_reads_every_runs_requests_in_one_statement(state_location: str) -> None:
    with StateStore(state_location) as store:
        ids = [submit_rollout(rollout(f"r{i}"), state_path=state_location)[0] for i in range(3)]
        store.request(ids[1], "approve", by="bob", at=1.0)
        inbox = RequestInbox(store, lambda: ids, interval=3600.0)
        before = store.queries
        seen = {run_id: [r.kind for r in inbox.pending(run_id)] for run_id in ids}
        assert seen == {ids[0]: [], ids[1]: ["approve"], ids[2]: []}
        assert store.queries - before == 1
        store.request(ids[0], "abort", by="carol", at=2.0)
        before = store.queries
        assert inbox.pending(ids[0]) == []  # until the next read, an interval later
        assert store.queries == before
        late = ids[2] + 1000  # a run the last read did not cover is read at once
        assert inbox.pending(late) == [] and store.queries == before + 1
        assert [r.kind for r in inbox.pending(ids[0])] == ["abort"]
