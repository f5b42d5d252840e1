"""A state database that goes away mid-run: the flag is put back all the same, and the failure is
reported plainly (exit 3 at the CLI), on a real PostgreSQL server stopped under the run."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from postgres_server import PASSWORD, PostgresServer
from test_controller import T0, Harness, make_rollout, steady

from canaryctl.controller import StateStore
from canaryctl.errors import StateBackendError
from canaryctl.retry import RetryPolicy

QUICK = RetryPolicy(attempts=3, backoff=0.05, max_wait=0.1, jitter=0.0)
"""The backends' policy, shortened: the test needs the give-up, not the waiting."""


def test_a_state_database_that_dies_mid_run_still_gets_the_flag_restored(
    tmp_path: Path, own_postgres: PostgresServer
) -> None:
    harness = Harness(tmp_path, make_rollout(hooks=False), steady())
    harness.store = StateStore(own_postgres.database(), retry_policy=QUICK)
    harness.clock.call_at(T0 + 35, own_postgres.stop)  # at 10%, during the first pause
    with pytest.raises(StateBackendError) as raised:
        harness.run()
    message = str(raised.value)
    assert harness.weights_written() == ["canary to 10%", "restore"]
    assert harness.restored()
    assert "the flag was restored, but the state database could not record it" in message
    assert "after 3 attempts" in message
    assert PASSWORD not in message


def test_a_store_that_cannot_reach_its_server_says_where_and_how_often_it_tried(
    own_postgres: PostgresServer,
) -> None:
    store = StateStore(own_postgres.database(), retry_policy=QUICK)
    own_postgres.stop()
    with pytest.raises(StateBackendError) as raised:
        store.runs()
    message = str(raised.value)
    assert message.startswith(f"state database {store.where}: ")
    assert "after 3 attempts" in message and PASSWORD not in message


def test_a_restore_made_while_the_journal_was_away_is_journaled_as_the_runs_own(
    tmp_path: Path, own_postgres: PostgresServer
) -> None:
    """Issue 24, case 5: the run restores its flag while PostgreSQL is down; once it is back,
    `resume` writes that restore down as the run's own (not "someone else changed it")."""
    harness = Harness(tmp_path, make_rollout(hooks=False), steady())
    harness.store = StateStore(own_postgres.database(), retry_policy=QUICK)
    harness.clock.call_at(T0 + 35, own_postgres.kill)  # at 10%, during the first pause
    first = harness.runner()
    with pytest.raises(StateBackendError) as raised:
        first.run()
    assert "`canaryctl rollout resume 1`" in str(raised.value)
    assert harness.restored()
    restored_at = harness.flags.snapshot().version
    own_postgres.start()
    resumer = harness.runner()
    resumer.leases.owner = first.leases.owner  # its lease is still there: the same driver resumes
    result = resumer.resume(1)
    assert result.outcome == "error" and result.exit_code == 3
    assert "this run restored the flag" in result.reason
    assert "someone else" not in result.reason
    last = harness.store.events(1, "flag_changed")[-1]
    assert last.data["action"] == "restore" and last.result is not None
    assert last.result["version"] == restored_at
    assert harness.flags.claimed_by is None  # the run ended: its claim is gone
    assert harness.flags.snapshot().version == restored_at  # and nothing moved again


def test_a_frozen_server_fails_the_call_instead_of_hanging_it(own_postgres: PostgresServer) -> None:
    """Every PostgreSQL process stopped (SIGSTOP): the server's own timeouts cannot fire, the
    store's watchdog and connect timeout do; once thawed, the same store works again."""
    store = StateStore(own_postgres.database(), retry_policy=QUICK, timeout=1.0)
    assert store.runs() == []  # a pooled connection, open when the server freezes
    own_postgres.signal_all(signal.SIGSTOP)
    try:
        with pytest.raises(StateBackendError) as raised:
            store.runs()
    finally:
        own_postgres.signal_all(signal.SIGCONT)
    assert str(raised.value).startswith(f"state database {store.where}: ")
    assert PASSWORD not in str(raised.value)
    assert store.runs() == []
