"""Preflight: a flag that does not serve the baseline, --from-current, baseline traffic, and the
claim on the flag that keeps two runs (with two state databases) off one flag."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import test_controller
from test_controller import BASELINE, CANARY, T0, Crashed, Harness, steady

from canaryctl.controller import RolloutRunner, StateStore
from canaryctl.errors import FlagClaimed, FlagMismatch, InvalidInput
from canaryctl.flags import FlagClaim
from canaryctl.metrics import ScriptedMetricsSource
from tests.processes import dead_pid

make = test_controller.make  # the harness fixture

STEPS = [{"set_weight": 10}, {"pause": 30}, {"set_weight": 50}, {"pause": 30},
         {"set_weight": 100}, {"pause": 30}]  # fmt: skip


def runner(h: Harness, **options: bool) -> RolloutRunner:
    return RolloutRunner(
        h.rollout, flags=h.flags, metrics=h.metrics, store=h.store, clock=h.clock, **options
    )


def moved_to(h: Harness, canary: float) -> None:
    h.flags.edit_by_someone_else(canary)
    h.prior = h.flags.snapshot()


def test_a_flag_already_serving_the_canary_is_refused_before_anything_moves(
    make: Callable[..., Harness],
) -> None:
    h = make(steps=STEPS)
    h.flags.promote(expect_version=1, comment="an earlier run")
    h.prior = h.flags.snapshot()
    with pytest.raises(FlagMismatch) as caught:
        h.run()
    message = str(caught.value)
    assert f"serves {CANARY} 100%, {BASELINE} 0%" in message
    assert "promoted already" in message
    assert h.flags.snapshot() == h.prior and h.store.latest_run() is None
    assert h.flags.claimed_by is None  # released on the way out


def test_a_split_this_runbook_did_not_leave_says_resume_or_from_current(
    make: Callable[..., Harness],
) -> None:
    h = make(steps=STEPS)
    moved_to(h, 20)
    with pytest.raises(FlagMismatch) as caught:
        h.run()
    message = str(caught.value)
    assert f"serves {CANARY} 20%, {BASELINE} 80%, not {BASELINE} to everyone" in message
    assert "canaryctl rollout resume RUN" in message and "--from-current" in message
    assert h.flags.snapshot() == h.prior


def test_from_current_skips_the_steps_below_and_restores_the_split_it_found(
    make: Callable[..., Harness],
) -> None:
    h = make(steady(0.05), steps=STEPS)  # a bad canary: the run rolls back
    moved_to(h, 20)
    result = runner(h, from_current=True).run()
    assert result.outcome == "rolled_back"
    writes = [h.flags.split(snapshot).canary for _, snapshot in h.flags.history]
    assert writes == [50.0, 20.0]  # 10% was skipped; the rollback put back 20%
    assert h.restored() and h.flags.snapshot().version > h.prior.version


def test_from_current_refuses_a_third_variation_and_a_split_above_every_step(
    make: Callable[..., Harness],
) -> None:
    h = make(steps=[{"set_weight": 10}, {"pause": 30}, {"set_weight": 50}])
    moved_to(h, 60)
    with pytest.raises(FlagMismatch, match="no set_weight step of this rollout is above 60%"):
        runner(h, from_current=True).run()
    assert h.flags.history == []


def test_no_baseline_traffic_names_the_route_the_selector_and_what_the_metrics_show(
    make: Callable[..., Harness],
) -> None:
    h = make(steps=STEPS)
    h.metrics = ScriptedMetricsSource(h.script, h.clock.now, recent={CANARY: 12.0})
    with pytest.raises(InvalidInput) as caught:
        h.run()
    message = str(caught.value)
    assert f"no recent requests for the baseline '{BASELINE}'" in message
    assert "every route at http://127.0.0.1:8080/metrics (looked for 10s)" in message
    assert f"the metrics show requests for {CANARY} 12 there" in message
    assert h.flags.history == [] and h.store.latest_run() is None
    assert h.flags.claimed_by is None


def test_two_runs_on_one_flag_with_two_state_databases_cannot_both_drive_it(
    make: Callable[..., Harness], tmp_path: Path
) -> None:
    h = make(steady(0.05), steps=STEPS)
    refused: list[str] = []

    def second() -> None:
        with StateStore(tmp_path / "other.db") as other, pytest.raises(FlagClaimed) as caught:
            RolloutRunner(
                h.rollout, flags=h.flags, metrics=h.metrics, store=other, clock=h.clock
            ).run()
        refused.append(str(caught.value))

    h.clock.call_at(h.clock.now() + 5, second)
    result = h.run()
    assert result.outcome == "rolled_back" and h.restored()
    assert f"claimed by run 1 (state {(tmp_path / 'state.db').resolve()}" in refused[0]
    assert [h.flags.split(s).canary for _, s in h.flags.history] == [10.0, 0.0]
    assert h.flags.claimed_by is None


def test_a_dead_runs_claim_refuses_a_new_run_until_broken(
    make: Callable[..., Harness], tmp_path: Path
) -> None:
    h = make(steps=STEPS)
    crashed: list[Harness] = []

    def crash() -> None:  # what a killed process leaves: the journal and the flag, claim included
        frozen = copy.copy(h)
        frozen.flags = copy.deepcopy(h.flags)
        crashed.append(frozen)

    h.clock.call_at(h.clock.now() + 15, crash)
    h.run()
    flags = crashed[0].flags
    held = flags.claimed_by
    assert isinstance(held, FlagClaim) and held.run_id == 1
    flags.claimed_by = FlagClaim(held.token, 1, held.state, held.host, 999_999_999, held.at)
    with StateStore(tmp_path / "new.db") as other, pytest.raises(FlagClaimed) as caught:
        RolloutRunner(h.rollout, flags=flags, metrics=h.metrics, store=other, clock=h.clock).run()
    assert "whose process is gone" in str(caught.value)
    assert f"canaryctl rollout resume 1 --state {held.state}" in str(caught.value)
    with StateStore(tmp_path / "new2.db") as other:
        forced = RolloutRunner(
            h.rollout, flags=flags, metrics=h.metrics, store=other, clock=h.clock,
            break_claim=True,
        )  # fmt: skip
        with pytest.raises(FlagMismatch, match="serves"):  # the claim goes, the split stays
            forced.run()


def test_resume_retakes_the_claim_its_dead_process_left(make: Callable[..., Harness]) -> None:
    h = make(steps=STEPS)
    crash = Crashed(h)
    h.clock.call_at(T0 + 15, crash.now)
    h.run()
    assert crash.flags is not None and crash.flags.claimed_by is not None
    crash.flags.claimed_by = replace(crash.flags.claimed_by, pid=dead_pid())
    result, flags = crash.resume()
    assert result.outcome == "promoted"
    assert flags.claimed_by is None
