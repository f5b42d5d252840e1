"""Fencing in-process (issue 24): a hand-back asked for during an analysis moves no weight after
it, and a flag held by an unfinished run cannot be submitted again. That the flag's claim carries
the lease epoch and refuses a stale driver's writes is in every store's contract
(tests/test_flag_store_contract.py). The same faults with real processes are in
tests/test_fencing_e2e.py."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from sqlalchemy import text
from test_controller import T0, Harness, make_rollout, steady

from canaryctl.analysis import Verdict
from canaryctl.controller import RolloutRunner, StateStore
from canaryctl.controller.lease import RunReleased
from canaryctl.controller.runner import run_rollout, submit_rollout
from canaryctl.controller.store import state_engine
from canaryctl.errors import InvalidInput, RunTakenOver
from canaryctl.flags.base import FlagClaim
from canaryctl.runbook import Rollout, parse_document


def claim(epoch: int) -> FlagClaim:
    return FlagClaim("token-of-run-7", 7, "state.db", "elsewhere", 1, 0.0, epoch=epoch)


def test_a_hand_back_asked_during_the_closing_analysis_moves_no_weight(tmp_path: Path) -> None:
    """Issue 24, case 4: SIGTERM at the end of a pause; the closing analysis and the next
    `set_weight` are one tick, and the weight must not move after the signal."""
    harness = Harness(tmp_path, make_rollout(hooks=False), steady())
    asked: list[bool] = []

    class Sigterm:
        def __getattr__(self, name: str) -> object:
            return lambda *args: None

        def on_analysis(self, run_id: int, verdict: Verdict) -> None:
            if harness.store.events(run_id, "analysis")[-1].data["closing"]:
                asked.append(True)

    runner = RolloutRunner(
        harness.rollout,
        flags=harness.flags,
        metrics=harness.metrics,
        store=harness.store,
        clock=harness.clock,
        observers=[Sigterm()],  # type: ignore[list-item]
        hooks=harness.hooks,
        poll_interval=5.0,
        released=lambda: bool(asked),
    )
    with pytest.raises(RunReleased):
        runner.run()
    assert asked
    assert harness.weights_written() == ["canary to 10%"]  # the step due next never came


def rollout_document(tmp_path: Path, name: str) -> Rollout:
    document = {
        "apiVersion": "canaryctl/v1",
        "kind": "Rollout",
        "metadata": {"name": name},
        "spec": {
            "flag": {"provider": "file", "path": str(tmp_path / "flags.json"),
                     "key": "support-bot-model", "baseline": "a", "canary": "b"},
            "metrics": {"provider": "scrape", "targets": ["http://127.0.0.1:9/metrics"]},
            "slos": [{"metric": "error_rate", "max": 0.02}],
            "steps": [{"set_weight": 20}],
        },
    }  # fmt: skip
    return parse_document(yaml.safe_dump(document), f"{name}.yaml", expect=Rollout)


def test_a_flag_held_by_a_submitted_run_cannot_be_submitted_again(tmp_path: Path) -> None:
    """Issue 24, case 7: what `POST /api/v1/runs` answers 409 with, naming the holder."""
    state = tmp_path / "state.db"
    first, _ = submit_rollout(rollout_document(tmp_path, "first"), state_path=state)
    with pytest.raises(InvalidInput, match=f"still held by run {first} \\('first'"):
        submit_rollout(rollout_document(tmp_path, "second"), state_path=state)


def test_claims_written_before_epochs_read_as_epoch_zero() -> None:
    old = json.loads(claim(3).to_json())
    del old["epoch"], old["restored"]
    assert FlagClaim.from_json(json.dumps(old)) == replace(claim(3), epoch=0)


def test_a_terminal_run_whose_lease_was_taken_ends_with_a_plain_error(tmp_path: Path) -> None:
    """`rollout run` stalled past its lease and another process took the run: exit 3 with a
    sentence, no crash log, and nothing written after the takeover."""
    harness = Harness(tmp_path, make_rollout(hooks=False), steady())

    def take_over() -> None:
        with StateStore(harness.state_path) as other:
            assert other.take_lease(1, "elsewhere", now=time.time() + 3600, ttl=30.0) == 2

    harness.clock.call_at(T0 + 35, take_over)  # during the first pause
    with pytest.raises(RunTakenOver, match="another process drives this run now") as raised:
        run_rollout(
            harness.rollout,
            state_path=harness.state_path,
            clock=harness.clock,
            flags=harness.flags,
            metrics=harness.metrics,
        )
    assert raised.value.exit_code == 3
    assert harness.weights_written() == ["canary to 10%"]
    record = harness.store.run(1)
    assert record is not None and not record.finished and record.owner == "elsewhere"


def test_a_lease_that_ran_out_while_nobody_took_it_is_renewed_and_the_run_goes_on(
    tmp_path: Path,
) -> None:
    """A laptop lid closed past the lease with no other driver about: the epoch did not move,
    so nobody else wrote, and the run carries on under its own lease."""
    harness = Harness(tmp_path, make_rollout(hooks=False), steady())

    def lapse() -> None:
        engine, _ = state_engine(harness.state_path)
        with engine.begin() as connection:
            connection.execute(text("UPDATE runs SET lease_until = 0"))
        engine.dispose()

    harness.clock.call_at(T0 + 35, lapse)
    result = harness.run()
    assert result.outcome == "promoted", result.reason
    assert [e.data["epoch"] for e in harness.store.events(1, "lease")] == []  # never re-taken
    assert {e.data["epoch"] for e in harness.store.events(1, "flag_changed")} == {1}
