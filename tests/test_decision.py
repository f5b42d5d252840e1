"""The decision pinned: every path of the pure tick and every boundary of the threshold judge.

Each test names the rule it holds and fails when that rule moves: a limit tripping one early or
one late, a hold one interval short, a counter that stops resetting, a margin read the wrong way.
The tick is driven as the runner drives it (perform the action, feed back what happened) on a
fake clock, with scripted verdicts, so a test states the whole timeline it expects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from canaryctl.analysis import Check, Evidence, Outcome, Verdict, assess, judge
from canaryctl.analysis.guard import LEDGER_KEY
from canaryctl.clock import FakeClock
from canaryctl.controller import RolloutRunner, StateStore
from canaryctl.controller.phases import Phase
from canaryctl.controller.step import (
    AbortRequested,
    Analyze,
    Analyzed,
    Approved,
    ChaosItem,
    ChaosPlayed,
    Decision,
    Finish,
    Hold,
    MetricsFailed,
    Promote,
    Promoted,
    Resumed,
    Rollback,
    RolledBack,
    RolloutState,
    RunChaos,
    SetWeight,
    Wait,
    WeightItem,
    WeightSet,
    plan,
    tick,
)
from canaryctl.flags import MemoryFlagStore
from canaryctl.metrics import Observation, ScriptedMetricsSource, VariantStats
from canaryctl.runbook import Rollout
from canaryctl.runbook.rollout import AnalysisSpec, RolloutSpec, SloSpec

T0 = 1_000.0
INTERVAL = 10.0
W10, W50, W100 = {"set_weight": 10}, {"set_weight": 50}, {"set_weight": 100}


def spec(steps: list[dict[str, Any]], **analysis: Any) -> RolloutSpec:
    return Rollout.model_validate(
        {
            "kind": "Rollout",
            "metadata": {"name": "decision"},
            "spec": {
                "flag": {
                    "provider": "file",
                    "path": "/tmp/flags.json",
                    "key": "k",
                    "baseline": "old",
                    "canary": "new",
                },
                "metrics": {"provider": "scrape", "targets": ["http://127.0.0.1:9/metrics"]},
                "slos": [{"metric": "error_rate", "max": 0.02}],
                "analysis": {"interval": INTERVAL, "min_requests": 1, **analysis},
                "steps": steps,
            },
        }
    ).spec


def verdict(outcome: Outcome, why: str = "", start: float = 0.0, end: float = 0.0) -> Verdict:
    check = Check("slo", "error_rate", outcome, why or outcome.value, None, None, None, 0, 0)
    return Verdict(outcome, (check,), start, end)


# A script answers one analysis: (now, since, closing, weight) -> an outcome, or None for a
# metrics backend that cannot be read.
Script = Callable[[float, float, bool, float], Outcome | None]


def passing(now: float, since: float, closing: bool, weight: float) -> Outcome:
    return Outcome.PASS


def answers(*outcomes: Outcome | None) -> Script:
    """The analyses' outcomes in order, then passes."""
    queue = list(outcomes)

    def script(now: float, since: float, closing: bool, weight: float) -> Outcome | None:
        return queue.pop(0) if queue else Outcome.PASS

    return script


class Drive:
    """The runner's loop without I/O: do each action on a fake clock, feed back the event.

    `log` is the timeline, offsets from T0: ("set", weight, t), ("analyze", t, since, closing),
    ("chaos", scenario, t), ("promote", t), ("rollback", outcome, reason, t).
    """

    def __init__(
        self,
        rollout: RolloutSpec,
        script: Script = passing,
        *,
        approve_at: float | None = None,
        chaos: tuple[bool, str, float] = (True, "", 30.0),
        abort_at: float | None = None,
    ) -> None:
        self.spec, self.script = rollout, script
        self.approve_at, self.chaos, self.abort_at = approve_at, chaos, abort_at
        self.now = T0
        self.state = RolloutState()
        self.log: list[tuple[Any, ...]] = []
        self.finish: Finish | None = None

    def run(self, event: Any = None, limit: int = 500) -> Drive:
        for _ in range(limit):
            decision = tick(self.spec, self.state, self.now, event)
            self.state = decision.state
            if isinstance(decision.action, Finish):
                self.finish = decision.action
                return self
            event = self.perform(decision.action)
        raise AssertionError(f"no end after {limit} ticks: {self.log[-5:]}")

    def perform(self, action: Any) -> Any:
        t = self.now - T0
        match action:
            case SetWeight(percent=percent):
                self.log.append(("set", percent, t))
                return WeightSet(self.now)
            case Analyze(since=since, closing=closing):
                self.log.append(("analyze", t, since - T0, closing))
                outcome = self.script(t, since - T0, closing, self.state.weight)
                if outcome is None:
                    return MetricsFailed("connection refused")
                return Analyzed(verdict(outcome, f"{outcome.value} at {t:g}", since, self.now))
            case Wait(until=until):
                for at, event in (
                    (self.abort_at, AbortRequested("alice")),
                    (self.approve_at, Approved("bob")),
                ):
                    if at is not None and (until is None or T0 + at <= until):
                        self.now = max(self.now, T0 + at)
                        if event == AbortRequested("alice"):
                            self.abort_at = None
                        else:
                            self.approve_at = None
                        return event
                assert until is not None, f"waiting forever at {t:g}"
                assert until > self.now, f"a Wait that does not move time at {t:g}"
                self.now = until
                return None
            case RunChaos(scenario=scenario):
                self.log.append(("chaos", scenario, t))
                held, reason, seconds = self.chaos
                self.now += seconds
                return ChaosPlayed(held, reason, self.now)
            case Promote():
                self.log.append(("promote", t))
                return Promoted()
            case Rollback(outcome=outcome, reason=reason):
                self.log.append(("rollback", outcome, reason, t))
                return RolledBack()
        raise AssertionError(f"unknown action {action!r}")

    @property
    def analyses(self) -> list[tuple[Any, ...]]:
        return [entry[1:] for entry in self.log if entry[0] == "analyze"]


# -- the plan -------------------------------------------------------------------------------------


def test_plan_holds_every_weight_one_interval_unless_a_pause_follows() -> None:
    items = plan(spec([W10, W50, {"pause": 60}, W100]))
    assert items == (
        WeightItem(10, 0),
        Hold(0.0, None),
        WeightItem(50, 1),
        Hold(60.0, 2),
        WeightItem(100, 3),
        Hold(0.0, None),
    )
    assert [i.describe() for i in items] == [
        "set_weight 10%",
        "hold for one analysis",
        "set_weight 50%",
        "pause 60s",
        "set_weight 100%",
        "hold for one analysis",
    ]


def test_plan_holds_the_weight_before_a_chaos_step_and_names_the_scenario_file() -> None:
    items = plan(spec([W10, {"chaos": "/srv/scenarios/outage.yaml"}, {"pause": "approval"}, W100]))
    assert items == (
        WeightItem(10, 0),
        Hold(0.0, None),
        ChaosItem("/srv/scenarios/outage.yaml", 1),
        Hold(None, 2),
        WeightItem(100, 3),
        Hold(0.0, None),
    )
    assert items[2].describe() == "chaos outage.yaml"
    assert ChaosItem("outage.yaml", 0).describe() == "chaos outage.yaml"
    assert items[3].describe() == "pause until approved"


# -- holds ----------------------------------------------------------------------------------------


def test_every_weight_is_held_one_interval_and_judged_before_the_next_weight() -> None:
    d = Drive(spec([W10, W50, W100])).run()
    assert d.log == [
        ("set", 10, 0),
        ("analyze", 10, 0, True),
        ("set", 50, 10),
        ("analyze", 20, 10, True),
        ("set", 100, 20),
        ("analyze", 30, 20, True),
        ("promote", 30),
    ]
    assert d.finish == Finish("promoted", "")
    assert (d.state.phase, d.state.outcome, d.state.weight) == (Phase.PROMOTED, "promoted", 100)


def test_a_pause_is_analysed_every_interval_and_closed_by_one_analysis_at_its_end() -> None:
    d = Drive(spec([W10, {"pause": 25}])).run()
    assert d.analyses == [(10, 0, False), (20, 0, False), (25, 0, True)]
    assert d.log[-1] == ("promote", 25)


def test_a_pause_shorter_than_an_interval_still_lasts_one_interval() -> None:
    d = Drive(spec([W10, {"pause": 3}])).run()
    assert d.analyses == [(10, 0, True)]


def test_a_short_pause_seen_late_closes_one_interval_after_its_weight_not_after_the_tick() -> None:
    # The weight landed at T0 and the tick that learns it comes 4 s later (a slow write): a
    # 3 s pause still closes one interval after the weight, at T0 + 10, not at T0 + 14.
    rollout = spec([W10, {"pause": 3}])
    setting = RolloutState(phase=Phase.PROGRESSING)
    decision = tick(rollout, setting, T0 + 4, WeightSet(T0))
    assert decision.state.hold_ends == T0 + 10
    assert decision.action == Wait(T0 + 10)


def test_a_pause_of_exactly_one_interval_closes_with_its_first_analysis() -> None:
    d = Drive(spec([W10, {"pause": INTERVAL}])).run()
    assert d.analyses == [(10, 0, True)]


def test_a_pause_before_the_first_weight_waits_without_analysing() -> None:
    d = Drive(spec([{"pause": 30}, W10])).run()
    assert d.log[:2] == [("set", 10, 30), ("analyze", 40, 30, True)]


def test_pauses_before_the_first_weight_follow_one_another_as_plain_waits() -> None:
    d = Drive(spec([{"pause": 30}, {"pause": 20}, W10])).run()
    assert d.log[:2] == [("set", 10, 50), ("analyze", 60, 50, True)]
    zero = Drive(spec([{"pause": 0}, {"pause": 0}, W10])).run()
    assert zero.log[:2] == [("set", 10, 0), ("analyze", 10, 0, True)]


def test_consecutive_pauses_after_a_weight_each_close_with_their_own_analysis() -> None:
    d = Drive(spec([W10, {"pause": 20}, {"pause": 20}])).run()
    assert d.analyses == [(10, 0, False), (20, 0, True), (30, 0, False), (40, 0, True)]
    assert d.log[-1] == ("promote", 40)


def test_the_first_tick_sets_the_first_weight_and_repeats_it_until_it_is_set() -> None:
    rollout = spec([W10, W100])
    first = tick(rollout, RolloutState(), T0, None)
    assert first == Decision(RolloutState(phase=Phase.PROGRESSING), SetWeight(10))
    assert tick(rollout, first.state, T0 + 5, None) == first
    at_weight = tick(rollout, first.state, T0 + 1, WeightSet(T0 + 1))
    assert at_weight.state == RolloutState(
        phase=Phase.PAUSED,
        item=1,
        weight=10,
        window_start=T0 + 1,
        hold_ends=T0 + 1 + INTERVAL,
        next_analysis=T0 + 1 + INTERVAL,
    )
    assert at_weight.action == Wait(T0 + 1 + INTERVAL)


def test_an_analysis_due_now_is_not_a_wait_and_a_tick_without_news_repeats_the_wait() -> None:
    rollout = spec([W10, {"pause": 30}])
    state = tick(rollout, tick(rollout, RolloutState(), T0, None).state, T0, WeightSet(T0)).state
    early = tick(rollout, state, T0 + 9.5, None)
    assert early == Decision(state, Wait(T0 + 10))
    due = tick(rollout, state, T0 + 10, None)
    assert due == Decision(state, Analyze(T0, False))


# -- failures -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "fails", "outcome"),
    [
        (0, 1, "rolled_back"),
        (1, 1, "promoted"),
        (1, 2, "rolled_back"),
        (2, 2, "promoted"),
        (2, 3, "rolled_back"),
    ],
)
def test_failure_limit_tolerates_exactly_that_many_failed_analyses_over_the_run(
    limit: int, fails: int, outcome: str
) -> None:
    # One failed analysis mid-pause at each weight in turn: the count is the run's, not a step's.
    def script(now: float, since: float, closing: bool, weight: float) -> Outcome:
        failing_weight = {10: 1, 50: 2, 100: 3}[int(weight)] <= fails
        return Outcome.FAIL if failing_weight and now - since == 10 else Outcome.PASS

    d = Drive(
        spec([W10, {"pause": 30}, W50, {"pause": 30}, W100, {"pause": 30}], failure_limit=limit),
        script,
    ).run()
    assert d.finish is not None and d.finish.outcome == outcome
    assert d.state.failures == fails
    if outcome == "rolled_back":
        at = {1: 10, 2: 40, 3: 70}[fails]
        assert d.log[-1] == ("rollback", "rolled_back", f"SLO failed: fail at {at}", at)
        assert d.state.phase is Phase.ROLLED_BACK


def test_a_failed_analysis_rolls_back_at_once_with_the_verdicts_reason() -> None:
    rollout = spec([W10, {"pause": 30}])
    d = Drive(rollout, answers(Outcome.PASS, Outcome.FAIL))
    d.run()
    assert d.log[-1] == ("rollback", "rolled_back", "SLO failed: fail at 20", 20)
    state = RolloutState(
        phase=Phase.PAUSED,
        item=1,
        weight=10,
        window_start=T0,
        hold_ends=T0 + 30,
        next_analysis=T0 + 20,
        metrics_errors=2,
    )
    decision = tick(rollout, state, T0 + 20, Analyzed(verdict(Outcome.FAIL, "too many errors")))
    assert decision == Decision(
        replace(
            state,
            phase=Phase.ROLLING_BACK,
            failures=1,
            metrics_errors=0,
            outcome="rolled_back",
            reason="SLO failed: too many errors",
        ),
        Rollback("rolled_back", "SLO failed: too many errors"),
    )


def test_a_tolerated_failure_mid_pause_keeps_the_schedule() -> None:
    d = Drive(spec([W10, {"pause": 30}], failure_limit=1), answers(Outcome.FAIL)).run()
    assert d.analyses == [(10, 0, False), (20, 0, False), (30, 0, True)]
    assert d.finish == Finish("promoted", "")


def test_a_tolerated_failure_at_the_closing_analysis_extends_the_hold_uncounted() -> None:
    # inconclusive_limit 0: had the failure counted as an extension, it would roll back.
    d = Drive(spec([W10, W100], failure_limit=1, inconclusive_limit=0), answers(Outcome.FAIL))
    d.run()
    assert d.analyses == [(10, 0, True), (20, 0, True), (30, 20, True)]
    assert d.finish == Finish("promoted", "")


# -- inconclusive and extensions ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "inconclusive", "outcome"),
    [(0, 0, "promoted"), (0, 1, "rolled_back"), (2, 2, "promoted"), (2, 3, "rolled_back")],
)
def test_inconclusive_limit_allows_exactly_that_many_extensions_of_a_hold(
    limit: int, inconclusive: int, outcome: str
) -> None:
    d = Drive(
        spec([W10, {"pause": 20}], inconclusive_limit=limit),
        answers(*[Outcome.INCONCLUSIVE] * (1 + inconclusive)),
    ).run()
    # The pause's mid analysis is inconclusive too, and that is fine while the pause lasts.
    closings = [a for a in d.analyses if a[2]]
    expected = [
        (20 + 10 * n, 0, True)
        for n in range(min(inconclusive, limit + 1) + (outcome == "promoted"))
    ]
    assert closings == expected
    assert d.finish is not None and d.finish.outcome == outcome
    if outcome == "rolled_back":
        at = 20 + 10 * limit
        assert d.log[-1] == (
            "rollback",
            "rolled_back",
            f"inconclusive: not enough data (inconclusive at {at})",
            at,
        )
        assert d.state.extensions == limit + 1


def test_an_extension_lasts_one_interval_and_is_analysed_as_closing() -> None:
    rollout = spec([W10, {"pause": 20}])
    state = RolloutState(
        phase=Phase.PAUSED,
        item=1,
        weight=10,
        window_start=T0,
        hold_ends=T0 + 20,
        next_analysis=T0 + 20,
        closing=True,
    )
    decision = tick(rollout, state, T0 + 21, Analyzed(verdict(Outcome.INCONCLUSIVE)))
    assert decision == Decision(
        replace(state, hold_ends=T0 + 31, next_analysis=T0 + 31, closing=False, extensions=1),
        Wait(T0 + 31),
    )


def test_extensions_start_again_at_zero_on_every_step() -> None:
    # One extension allowed: each weight uses it once, and the run still promotes.
    d = Drive(
        spec([W10, W50, W100], inconclusive_limit=1),
        answers(
            Outcome.INCONCLUSIVE,
            Outcome.PASS,
            Outcome.INCONCLUSIVE,
            Outcome.PASS,
            Outcome.INCONCLUSIVE,
        ),
    ).run()
    assert d.finish == Finish("promoted", "")
    assert [entry[:2] for entry in d.log if entry[0] == "set"] == [
        ("set", 10),
        ("set", 50),
        ("set", 100),
    ]


def test_the_state_after_a_passing_closing_analysis_is_clean_for_the_next_weight() -> None:
    rollout = spec([W10, W100])
    state = RolloutState(
        phase=Phase.PAUSED,
        item=1,
        weight=10,
        window_start=T0,
        hold_ends=T0 + 10,
        next_analysis=T0 + 30,
        closing=True,
        extensions=2,
        failures=1,
    )
    decision = tick(rollout, state, T0 + 30, Analyzed(verdict(Outcome.PASS), {"tests": {"x": 1}}))
    assert decision == Decision(
        RolloutState(
            phase=Phase.PROGRESSING,
            item=2,
            weight=10,
            window_start=T0,
            failures=1,
            ledger={"tests": {"x": 1}},
        ),
        SetWeight(100),
    )


def test_an_analysis_without_a_ledger_keeps_the_one_stored() -> None:
    rollout = spec([W10, {"pause": 30}])
    state = RolloutState(
        phase=Phase.PAUSED,
        item=1,
        weight=10,
        window_start=T0,
        hold_ends=T0 + 30,
        next_analysis=T0 + 10,
        ledger={"kept": True},
    )
    after = tick(rollout, state, T0 + 10, Analyzed(verdict(Outcome.PASS))).state
    assert after.ledger == {"kept": True}
    assert after.next_analysis == T0 + 20


# -- metrics backend errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "errors", "outcome"),
    [(0, 1, "error"), (2, 2, "promoted"), (2, 3, "error"), (4, 4, "promoted"), (4, 5, "error")],
)
def test_consecutive_error_limit_tolerates_exactly_that_many_errors_in_a_row(
    limit: int, errors: int, outcome: str
) -> None:
    d = Drive(spec([W10, W100], consecutive_error_limit=limit), answers(*[None] * errors)).run()
    assert d.finish is not None and d.finish.outcome == outcome
    if outcome == "error":
        reason = (
            f"metrics backend error, not an SLO verdict: {errors} analyses in a row could not "
            f"read metrics (consecutive_error_limit {limit}): connection refused"
        )
        assert d.log[-1] == ("rollback", "error", reason, 10 * errors)
        assert d.state.phase is Phase.FAILED
    else:  # each failed read is retried one interval later
        assert [a[0] for a in d.analyses[: errors + 1]] == [10 * (n + 1) for n in range(errors + 1)]


def test_a_successful_read_resets_the_error_count_so_only_errors_in_a_row_count() -> None:
    # Limit 1: two errors in a row trip it; errors that a read interrupts never do, whatever
    # the read's outcome.
    script = answers(None, Outcome.INCONCLUSIVE, None, Outcome.PASS, None, Outcome.FAIL, None)
    d = Drive(spec([W10, {"pause": 100}], consecutive_error_limit=1, failure_limit=1), script)
    d.run()
    assert d.finish == Finish("promoted", "")
    assert d.state.metrics_errors == 0


def test_a_metrics_error_is_retried_one_interval_later_even_past_the_end_of_the_hold() -> None:
    rollout = spec([W10, {"pause": 15}])
    state = RolloutState(
        phase=Phase.PAUSED,
        item=1,
        weight=10,
        window_start=T0,
        hold_ends=T0 + 15,
        next_analysis=T0 + 10,
        metrics_errors=1,
    )
    decision = tick(rollout, state, T0 + 10, MetricsFailed("timeout"))
    assert decision == Decision(
        replace(state, metrics_errors=2, next_analysis=T0 + 20), Wait(T0 + 20)
    )


# -- approval -------------------------------------------------------------------------------------


def test_an_approval_pause_analyses_every_interval_until_approved_and_never_closes_alone() -> None:
    d = Drive(spec([W10, {"pause": "approval"}, W100]), approve_at=35).run()
    assert d.log[:6] == [
        ("set", 10, 0),
        ("analyze", 10, 0, False),
        ("analyze", 20, 0, False),
        ("analyze", 30, 0, False),
        ("analyze", 35, 0, True),  # approval closes the hold now, with one analysis
        ("set", 100, 35),
    ]
    assert d.finish == Finish("promoted", "")


def test_an_approval_pause_waits_in_its_own_phase() -> None:
    rollout = spec([W10, {"pause": "approval"}, W100])
    state = tick(rollout, RolloutState(phase=Phase.PROGRESSING), T0, WeightSet(T0)).state
    assert (state.phase, state.hold_ends, state.next_analysis) == (
        Phase.AWAITING_APPROVAL,
        None,
        T0 + 10,
    )
    inconclusive = tick(rollout, state, T0 + 10, Analyzed(verdict(Outcome.INCONCLUSIVE)))
    assert inconclusive == Decision(replace(state, next_analysis=T0 + 20), Wait(T0 + 20))


def test_an_early_approval_still_holds_the_weight_one_interval() -> None:
    d = Drive(spec([W10, {"pause": "approval"}, W100]), approve_at=4).run()
    assert d.log[:3] == [("set", 10, 0), ("analyze", 10, 0, True), ("set", 100, 10)]


def test_approval_moves_the_due_analysis_no_later_than_the_end_of_the_hold() -> None:
    rollout = spec([W10, {"pause": "approval"}, W100])
    state = RolloutState(
        phase=Phase.AWAITING_APPROVAL, item=1, weight=10, window_start=T0, next_analysis=T0 + 40
    )
    decision = tick(rollout, state, T0 + 33, Approved("bob"))
    assert decision == Decision(
        replace(state, phase=Phase.PAUSED, hold_ends=T0 + 33, next_analysis=T0 + 33, closing=True),
        Analyze(T0, True),
    )
    early = tick(rollout, replace(state, next_analysis=T0 + 10), T0 + 2, Approved("bob"))
    assert early.state.hold_ends == T0 + 10 and early.action == Wait(T0 + 10)


def test_an_approval_before_any_weight_ends_the_pause_at_once() -> None:
    d = Drive(spec([{"pause": "approval"}, W10]), approve_at=50).run()
    assert d.log[:2] == [("set", 10, 50), ("analyze", 60, 50, True)]


def test_an_approval_before_any_weight_moves_on_to_the_next_pause() -> None:
    d = Drive(spec([{"pause": "approval"}, {"pause": 15}, W10]), approve_at=50).run()
    assert d.log[:2] == [("set", 10, 65), ("analyze", 75, 65, True)]


def test_an_approval_outside_an_approval_pause_changes_nothing() -> None:
    rollout = spec([W10, {"pause": 30}])
    state = RolloutState(
        phase=Phase.PAUSED,
        item=1,
        weight=10,
        window_start=T0,
        hold_ends=T0 + 30,
        next_analysis=T0 + 10,
    )
    assert tick(rollout, state, T0 + 5, Approved("bob")) == Decision(state, Wait(T0 + 10))


def test_a_failure_while_awaiting_approval_rolls_back_without_waiting_for_it() -> None:
    d = Drive(spec([W10, {"pause": "approval"}, W100]), answers(Outcome.PASS, Outcome.FAIL))
    d.run()
    assert d.log[-1] == ("rollback", "rolled_back", "SLO failed: fail at 20", 20)


# -- abort ----------------------------------------------------------------------------------------


def test_abort_rolls_back_from_a_hold_and_ends_aborted() -> None:
    d = Drive(spec([W10, {"pause": 60}]), abort_at=25).run()
    assert d.log[-1] == ("rollback", "aborted", "aborted by alice", 25)
    assert d.finish == Finish("aborted", "aborted by alice")
    assert (d.state.phase, d.state.outcome) == (Phase.ABORTED, "aborted")


@pytest.mark.parametrize("phase", [Phase.PROMOTING, Phase.ROLLING_BACK])
def test_abort_cannot_interrupt_a_promotion_or_a_rollback_under_way(phase: Phase) -> None:
    rollout = spec([W10])
    state = RolloutState(phase=phase, item=2, weight=10, outcome="error", reason="why")
    action = Promote() if phase is Phase.PROMOTING else Rollback("error", "why")
    assert tick(rollout, state, T0, AbortRequested("alice")) == Decision(state, action)


def test_rolling_back_is_retried_until_done_and_defaults_to_rolled_back() -> None:
    rollout = spec([W10])
    state = RolloutState(phase=Phase.ROLLING_BACK, reason="SLO failed: x")
    assert tick(rollout, state, T0, None) == Decision(
        state, Rollback("rolled_back", "SLO failed: x")
    )
    done = tick(rollout, state, T0, RolledBack())
    assert done == Decision(
        replace(state, phase=Phase.ROLLED_BACK, outcome="rolled_back"),
        Finish("rolled_back", "SLO failed: x"),
    )


# -- the end --------------------------------------------------------------------------------------


def test_after_the_last_hold_passes_the_canary_is_promoted_and_the_run_is_over() -> None:
    rollout = spec([W10])
    state = RolloutState(
        phase=Phase.PAUSED,
        item=1,
        weight=10,
        window_start=T0,
        hold_ends=T0 + 10,
        next_analysis=T0 + 10,
        closing=True,
    )
    promoting = tick(rollout, state, T0 + 10, Analyzed(verdict(Outcome.PASS)))
    assert promoting == Decision(
        RolloutState(phase=Phase.PROMOTING, item=2, weight=10, window_start=T0), Promote()
    )
    assert tick(rollout, promoting.state, T0 + 11, None) == promoting  # retried until done
    done = tick(rollout, promoting.state, T0 + 11, Promoted())
    assert done.state == replace(promoting.state, phase=Phase.PROMOTED, outcome="promoted")
    assert done.action == Finish("promoted", "")


@pytest.mark.parametrize(
    ("phase", "outcome", "shown"),
    [
        (Phase.PROMOTED, "promoted", "promoted"),
        (Phase.ROLLED_BACK, "rolled_back", "rolled_back"),
        (Phase.FAILED, "error", "error"),
        (Phase.INTERRUPTED, None, "interrupted"),
    ],
)
def test_a_finished_run_only_ever_answers_finish(
    phase: Phase, outcome: str | None, shown: str
) -> None:
    rollout = spec([W10])
    state = RolloutState(phase=phase, outcome=outcome, reason="the reason")
    for event in (
        None,
        WeightSet(T0),
        Analyzed(verdict(Outcome.FAIL)),
        AbortRequested("a"),
        MetricsFailed("x"),
        Approved("b"),
        Resumed(T0),
    ):
        assert tick(rollout, state, T0, event) == Decision(state, Finish(shown, "the reason"))


def test_a_metrics_error_rollback_ends_failed_with_exit_outcome_error() -> None:
    rollout = spec([W10])
    state = RolloutState(phase=Phase.ROLLING_BACK, outcome="error", reason="metrics backend error")
    assert tick(rollout, state, T0, RolledBack()).state.phase is Phase.FAILED


# -- chaos ----------------------------------------------------------------------------------------


def test_chaos_plays_after_the_weights_hold_and_the_window_restarts_when_it_ends() -> None:
    d = Drive(spec([W10, {"chaos": "/s/outage.yaml"}, {"pause": 20}]), chaos=(True, "", 30)).run()
    assert d.log == [
        ("set", 10, 0),
        ("analyze", 10, 0, True),
        ("chaos", "/s/outage.yaml", 10),
        ("analyze", 50, 40, False),  # the faults' errors are not held against the canary
        ("analyze", 60, 40, True),
        ("promote", 60),
    ]


def test_a_violated_chaos_hypothesis_rolls_back() -> None:
    d = Drive(spec([W10, {"chaos": "/s/outage.yaml"}, W100]), chaos=(False, "p95 3s > 2s", 5))
    d.run()
    assert d.log[-1] == ("rollback", "rolled_back", "chaos: p95 3s > 2s", 15)
    assert d.finish == Finish("rolled_back", "chaos: p95 3s > 2s")


def test_a_chaos_step_before_any_weight_keeps_waiting_for_one() -> None:
    rollout = spec([{"chaos": "/s/outage.yaml"}, W10])
    first = tick(rollout, RolloutState(), T0, None)
    assert first == Decision(RolloutState(phase=Phase.CHAOS), RunChaos("/s/outage.yaml"))
    assert tick(rollout, first.state, T0 + 1, None) == first  # replayed until it reports
    after = tick(rollout, first.state, T0 + 9, ChaosPlayed(True, "", T0 + 9))
    assert after == Decision(RolloutState(phase=Phase.PROGRESSING, item=1), SetWeight(10))


def test_a_chaos_report_outside_a_chaos_step_changes_nothing() -> None:
    rollout = spec([W10, {"pause": 30}])
    state = RolloutState(
        phase=Phase.PAUSED,
        item=1,
        weight=10,
        window_start=T0,
        hold_ends=T0 + 30,
        next_analysis=T0 + 10,
    )
    for held in (True, False):
        event = ChaosPlayed(held, "late", T0 + 5)
        assert tick(rollout, state, T0 + 5, event) == Decision(state, Wait(T0 + 10))


# -- resume ---------------------------------------------------------------------------------------


def test_a_resume_in_a_hold_restarts_its_window_and_the_hold_in_full() -> None:
    rollout = spec([W10, {"pause": 30}])
    state = RolloutState(
        phase=Phase.PAUSED,
        item=1,
        weight=10,
        window_start=T0,
        hold_ends=T0 + 30,
        next_analysis=T0 + 30,
        closing=True,
        extensions=2,
        failures=1,
    )
    decision = tick(rollout, state, T0 + 100, Resumed(T0 + 99))
    # The analysis the dead driver had due at T0 + 30 is long overdue: judged at once.
    assert decision == Decision(
        replace(
            state,
            window_start=T0 + 99,
            hold_ends=T0 + 130,
            next_analysis=T0 + 30,
            closing=False,
            extensions=0,
        ),
        Analyze(T0 + 99, False),
    )


def test_a_taken_over_hold_is_judged_when_its_last_driver_would_have_judged_it() -> None:
    """The bound on unjudged time counts from the last analysis, not from the takeover: the
    first analysis after a resume is the one the last driver had due (at once when that time
    has passed), never later than an interval after the resume."""
    rollout = spec([W10, {"pause": 60}])  # analysis interval 10 s
    # The last driver analysed at T0 + 20 and had the next one due at T0 + 30.
    state = RolloutState(
        phase=Phase.PAUSED, item=1, weight=10, window_start=T0, hold_ends=T0 + 60,
        next_analysis=T0 + 30,
    )  # fmt: skip
    early = tick(rollout, state, T0 + 24, Resumed(T0 + 24))
    assert early.action == Wait(T0 + 30) and early.state.window_start == T0 + 24
    late = tick(rollout, state, T0 + 33, Resumed(T0 + 33))
    assert late.action == Analyze(T0 + 33, False)
    # Nothing due sooner (a successor whose clock is behind): an interval after the resume.
    fresh = replace(state, next_analysis=T0 + 100)
    assert tick(rollout, fresh, T0 + 33, Resumed(T0 + 33)).action == Wait(T0 + 43)
    # The same in an undecided pause waiting for a human.
    paused = replace(
        state, phase=Phase.AWAITING_APPROVAL, hold_ends=T0 + 15, undecided_until=T0 + 200
    )
    assert tick(rollout, paused, T0 + 24, Resumed(T0 + 24)).action == Wait(T0 + 30)
    assert tick(rollout, paused, T0 + 33, Resumed(T0 + 33)).action == Analyze(T0 + 33, True)
    # A successor whose clock is behind the dead driver's still judges within an interval.
    skewed = tick(rollout, replace(paused, next_analysis=T0 + 100), T0 + 33, Resumed(T0 + 33))
    assert skewed.action == Wait(T0 + 43) and skewed.state.next_analysis == T0 + 43


def test_after_a_resume_the_closing_analysis_comes_when_the_hold_ends_not_an_interval_later() -> (
    None
):
    # The window restarted 1 s before this tick: the hold ends at 109, one interval of data.
    rollout = spec([W10, {"pause": 5}])
    # The last driver set the weight at T0 + 95, its first analysis due at T0 + 105.
    state = RolloutState(
        phase=Phase.PAUSED,
        item=1,
        weight=10,
        window_start=T0 + 95,
        hold_ends=T0 + 105,
        next_analysis=T0 + 105,
    )
    decision = tick(rollout, state, T0 + 100, Resumed(T0 + 99))
    assert decision.state.hold_ends == T0 + 109
    assert decision.action == Wait(T0 + 105)
    analysed = tick(rollout, decision.state, T0 + 105, Analyzed(verdict(Outcome.INCONCLUSIVE)))
    assert analysed.action == Wait(T0 + 109)


def test_a_resume_before_any_weight_keeps_the_pause_a_plain_wait() -> None:
    rollout = spec([{"pause": 30}, W10])
    state = RolloutState(phase=Phase.PAUSED, hold_ends=T0 + 30)
    decision = tick(rollout, state, T0 + 10, Resumed(T0 + 10))
    assert decision == Decision(replace(state, hold_ends=T0 + 40), Wait(T0 + 40))


def test_a_resume_while_setting_a_weight_or_playing_chaos_does_it_again() -> None:
    rollout = spec([W10, {"chaos": "/s/x.yaml"}])
    setting = RolloutState(phase=Phase.PROGRESSING)
    assert tick(rollout, setting, T0, Resumed(T0)) == Decision(setting, SetWeight(10))
    playing = RolloutState(phase=Phase.CHAOS, item=2, weight=10, window_start=T0)
    assert tick(rollout, playing, T0 + 50, Resumed(T0 + 50)) == Decision(
        playing, RunChaos("/s/x.yaml")
    )


def test_state_round_trips_through_its_stored_form() -> None:
    state = RolloutState(
        phase=Phase.AWAITING_APPROVAL,
        item=3,
        weight=50,
        window_start=T0,
        next_analysis=T0 + 10,
        failures=1,
        extensions=2,
        metrics_errors=3,
        outcome=None,
        reason="",
        ledger={"a": [1, 2]},
    )
    stored = state.to_dict()
    assert stored["phase"] == "awaiting_approval"
    assert RolloutState.from_dict(stored) == state


# -- the threshold judge: boundaries ---------------------------------------------------------------

ANALYSIS = AnalysisSpec(interval=10, min_requests=100, method="threshold")  # the path pinned here
LATENCY_METRICS = {
    "latency_p50_seconds": 0.50,
    "latency_p90_seconds": 0.90,
    "latency_p95_seconds": 0.95,
    "latency_p99_seconds": 0.99,
}


def judged(
    slo: dict[str, Any], canary: VariantStats, baseline: VariantStats | None = None, **kwargs: Any
) -> Check:
    variants = {"canary": canary} | ({} if baseline is None else {"baseline": baseline})
    observation = Observation(5.0, 65.0, variants)
    result = judge(
        [SloSpec(**slo)], ANALYSIS, observation, baseline="baseline", canary="canary", **kwargs
    )
    assert (result.window_start, result.window_end) == (5.0, 65.0)
    [check] = result.checks
    assert result.outcome is check.outcome
    return check


def with_value(metric: str, value: float, requests: float = 1000) -> VariantStats:
    """A variant whose `metric` is exactly `value` (computed here by hand, not by canaryctl)."""
    if metric in ("error_rate", "fallback_rate"):
        count = value * requests
        return VariantStats(
            requests=requests,
            errors=count if metric == "error_rate" else 0,
            fallbacks=count if metric == "fallback_rate" else 0,
        )
    if metric == "cost_per_query_usd":
        return VariantStats(requests=requests, cost_usd=value * requests)
    if metric == "tokens_per_query":
        total = value * requests
        return VariantStats(
            requests=requests, prompt_tokens=total * 0.25, completion_tokens=total * 0.75
        )
    if metric == "quality_score":
        return VariantStats(requests=requests, quality_sum=value * 200, quality_count=200)
    # Latency: every request in (0, 2v] spread evenly, so linear interpolation inside the one
    # bucket puts quantile q at exactly 2v * q; scale the edge so the quantile is `value`.
    q = LATENCY_METRICS[metric]
    edge = value / q
    return VariantStats(
        requests=requests, latency_buckets=((edge, requests), (float("inf"), requests))
    )


ALL_LOWER_IS_BETTER = [
    "error_rate",
    "fallback_rate",
    *LATENCY_METRICS,
    "cost_per_query_usd",
    "tokens_per_query",
]


@pytest.mark.parametrize("metric", ALL_LOWER_IS_BETTER)
@pytest.mark.parametrize(
    ("canary", "outcome"), [(0.4, Outcome.PASS), (0.5, Outcome.PASS), (0.5001, Outcome.FAIL)]
)
def test_max_passes_at_and_under_the_bound_and_fails_just_over(
    metric: str, canary: float, outcome: Outcome
) -> None:
    check = judged({"metric": metric, "max": 0.5}, with_value(metric, canary))
    assert check.outcome is outcome, check.reason
    assert check.canary_value == pytest.approx(canary, rel=1e-12)
    assert (check.bound, check.baseline_value, check.canary_requests) == (0.5, None, 1000)
    if outcome is Outcome.FAIL:
        assert check.reason == f"{metric} = {canary:.4g} is above the maximum 0.5"
    else:
        assert check.reason == f"{metric} = {canary:.4g} is within {metric} <= 0.5"


@pytest.mark.parametrize("metric", [*ALL_LOWER_IS_BETTER, "quality_score"])
@pytest.mark.parametrize(
    ("canary", "outcome"), [(0.6, Outcome.PASS), (0.5, Outcome.PASS), (0.4999, Outcome.FAIL)]
)
def test_min_passes_at_and_over_the_bound_and_fails_just_under(
    metric: str, canary: float, outcome: Outcome
) -> None:
    check = judged({"metric": metric, "min": 0.5}, with_value(metric, canary))
    assert check.outcome is outcome, check.reason
    assert check.bound == 0.5
    if outcome is Outcome.FAIL:
        assert check.reason == f"{metric} = {canary:.4g} is below the minimum 0.5"


@pytest.mark.parametrize(
    ("canary", "outcome"),
    [
        (0.01, Outcome.FAIL),
        (0.02, Outcome.PASS),
        (0.035, Outcome.PASS),
        (0.05, Outcome.PASS),
        (0.0501, Outcome.FAIL),
    ],
)
def test_min_and_max_together_bound_both_sides(canary: float, outcome: Outcome) -> None:
    check = judged(
        {"metric": "error_rate", "min": 0.02, "max": 0.05}, with_value("error_rate", canary)
    )
    assert check.outcome is outcome
    assert check.slo == "error_rate >= 0.02 and <= 0.05"
    assert check.bound == 0.05  # shown: the max


# Relative bounds: baseline 0.4, so max_increase 0.1 and max_ratio 1.25 both allow 0.5.
@pytest.mark.parametrize("metric", ALL_LOWER_IS_BETTER)
@pytest.mark.parametrize("bound", [{"max_increase": 0.1}, {"max_ratio": 1.25}])
@pytest.mark.parametrize(
    ("canary", "outcome"), [(0.45, Outcome.PASS), (0.5, Outcome.PASS), (0.5001, Outcome.FAIL)]
)
def test_relative_bounds_pass_at_the_baseline_plus_margin_and_fail_just_over(
    metric: str, bound: dict[str, float], canary: float, outcome: Outcome
) -> None:
    slo = {"metric": metric, "compare": "baseline", **bound}
    check = judged(slo, with_value(metric, canary), with_value(metric, 0.4, requests=800))
    assert check.outcome is outcome, check.reason
    assert check.bound == pytest.approx(0.5, rel=1e-12)
    assert check.baseline_value == pytest.approx(0.4, rel=1e-12)
    assert (check.canary_requests, check.baseline_requests) == (1000, 800)
    described = SloSpec(**slo).describe()
    if outcome is Outcome.FAIL:
        assert check.reason == f"{metric} = {canary:.4g} is above 0.5 (baseline 0.4, {described})"
    else:
        assert check.reason == f"{metric} = {canary:.4g} is within {described} (0.5)"


def test_a_latency_margin_is_added_to_the_baselines_own_quantile() -> None:
    # p95 of the baseline 1.9 s, margin 0.5 s: 2.4 s passes, 2.41 s fails; measured from
    # histograms with several buckets, interpolated by hand below.
    def latency(p95_edge_low: float, p95_edge_high: float) -> VariantStats:
        # 90 of 100 requests at or under `low`, all 100 at or under `high`: p95 is the midpoint.
        return VariantStats(
            requests=100,
            latency_buckets=(
                (0.5, 40.0),
                (p95_edge_low, 90.0),
                (p95_edge_high, 100.0),
                (float("inf"), 100.0),
            ),
        )

    slo = {"metric": "latency_p95_seconds", "compare": "baseline", "max_increase": 0.5}
    baseline = latency(1.8, 2.0)  # p95 = 1.8 + 0.2 * 5 / 10 = 1.9
    at_edge = judged(slo, latency(2.3, 2.5), baseline)  # p95 = 2.4
    assert at_edge.outcome is Outcome.PASS, at_edge.reason
    assert (at_edge.canary_value, at_edge.baseline_value) == pytest.approx((2.4, 1.9))
    over = judged(slo, latency(2.3, 2.52), baseline)  # p95 = 2.41
    assert over.outcome is Outcome.FAIL
    assert over.reason == (
        "latency_p95_seconds = 2.41 is above 2.4 "
        "(baseline 1.9, latency_p95_seconds <= baseline + 0.5)"
    )


@pytest.mark.parametrize(
    ("canary", "outcome"), [(0.9, Outcome.PASS), (0.85, Outcome.PASS), (0.8499, Outcome.FAIL)]
)
def test_max_decrease_passes_at_the_baseline_minus_margin_and_fails_just_under(
    canary: float, outcome: Outcome
) -> None:
    slo = {"metric": "quality_score", "compare": "baseline", "max_decrease": 0.05}
    check = judged(slo, with_value("quality_score", canary), with_value("quality_score", 0.9))
    assert check.outcome is outcome, check.reason
    assert check.bound == pytest.approx(0.85)


def test_float_noise_at_a_bound_counts_as_at_it_and_a_real_excess_does_not() -> None:
    # 3/200 = 0.015 is not exactly 0.01 + 0.005 in floating point.
    slo = {"metric": "error_rate", "compare": "baseline", "max_increase": 0.005}
    noisy = judged(slo, VariantStats(requests=200, errors=3), VariantStats(requests=100, errors=1))
    assert noisy.outcome is Outcome.PASS
    bound = 0.01 + 0.005
    tiny = judged(
        {"metric": "error_rate", "max": bound},
        VariantStats(requests=1e6, errors=bound * 1e6 * (1 + 1e-8)),
    )
    assert tiny.outcome is Outcome.FAIL
    # At a bound of 0 only an absolute tolerance can tell noise (1e-13) from an excess (1e-11).
    noise = judged({"metric": "error_rate", "max": 0.0}, VariantStats(requests=1e6, errors=1e-7))
    assert noise.outcome is Outcome.PASS
    excess = judged({"metric": "error_rate", "max": 0.0}, VariantStats(requests=1e6, errors=1e-5))
    assert excess.outcome is Outcome.FAIL


@pytest.mark.parametrize(
    ("requests", "outcome"), [(99, Outcome.INCONCLUSIVE), (100, Outcome.PASS), (101, Outcome.PASS)]
)
def test_min_requests_is_met_at_exactly_that_many_requests(
    requests: float, outcome: Outcome
) -> None:
    check = judged({"metric": "error_rate", "max": 0.02}, VariantStats(requests=requests))
    assert check.outcome is outcome
    if outcome is Outcome.INCONCLUSIVE:
        assert check.reason == "error_rate <= 0.02: too few requests for 'canary' (99 < 100)"
        assert check.canary_value == 0.0 and check.canary_requests == 99


@pytest.mark.parametrize(("requests", "outcome"), [(99, Outcome.INCONCLUSIVE), (100, Outcome.PASS)])
def test_a_relative_slo_needs_min_requests_from_the_baseline_too(
    requests: float, outcome: Outcome
) -> None:
    slo = {"metric": "error_rate", "compare": "baseline", "max_ratio": 2}
    check = judged(slo, VariantStats(requests=1000), VariantStats(requests=requests))
    assert check.outcome is outcome
    if outcome is Outcome.INCONCLUSIVE:
        assert check.reason == (
            "error_rate <= baseline x 2: too few requests for 'baseline' (99 < 100)"
        )


@pytest.mark.parametrize(("scores", "outcome"), [(99, Outcome.INCONCLUSIVE), (100, Outcome.PASS)])
def test_quality_counts_scored_answers_against_min_requests(
    scores: float, outcome: Outcome
) -> None:
    stats = VariantStats(requests=10, quality_sum=0.9 * scores, quality_count=scores)
    check = judged({"metric": "quality_score", "min": 0.8}, stats)
    assert check.outcome is outcome
    if outcome is Outcome.INCONCLUSIVE:
        assert check.reason.endswith(": too few quality scores for 'canary' (99 < 100)")


def test_an_absolute_bound_ignores_the_baselines_traffic() -> None:
    check = judged({"metric": "error_rate", "max": 0.02}, VariantStats(requests=100))
    assert check.outcome is Outcome.PASS and check.baseline_requests == 0
    # Baseline traffic is counted in the evidence but its value is no part of an absolute check.
    both = judged(
        {"metric": "error_rate", "max": 0.02},
        VariantStats(requests=100),
        VariantStats(requests=10, errors=5),
    )
    assert (both.outcome, both.baseline_value, both.baseline_requests) == (Outcome.PASS, None, 10)


def test_a_relative_quality_slo_needs_min_requests_in_scores_from_the_baseline_too() -> None:
    slo = {"metric": "quality_score", "compare": "baseline", "max_decrease": 0.05}
    baseline = VariantStats(requests=5000, quality_sum=0.9 * 99, quality_count=99)
    check = judged(slo, with_value("quality_score", 0.9), baseline)
    assert check.outcome is Outcome.INCONCLUSIVE
    assert check.reason.endswith("too few quality scores for 'baseline' (99 < 100)")


def test_a_custom_query_slo_is_judged_on_its_own_number_and_named_by_it() -> None:
    slo = SloSpec(name="refusals", query="rate(x{v={{variant}}}[{{window}}])", max=0.1)
    both = {"canary": VariantStats(requests=500), "baseline": VariantStats(requests=500)}

    def check_of(values: dict[str, float], relative: bool = False) -> Check:
        spec_ = (
            slo
            if not relative
            else SloSpec(name="refusals", query=slo.query, compare="baseline", max_increase=0.05)
        )
        observation = Observation(0, 60, both, {"refusals": values})
        result = judge([spec_], ANALYSIS, observation, baseline="baseline", canary="canary")
        return result.checks[0]

    over = check_of({"canary": 0.2})
    assert (over.outcome, over.metric, over.reason) == (
        Outcome.FAIL,
        "refusals",
        "refusals = 0.2 is above the maximum 0.1",
    )
    assert check_of({"canary": 0.1}).outcome is Outcome.PASS
    missing = check_of({"baseline": 0.0})
    assert (missing.outcome, missing.reason) == (
        Outcome.INCONCLUSIVE,
        "refusals: no value for canary 'canary'",
    )
    no_baseline = check_of({"canary": 0.0}, relative=True)
    assert (no_baseline.outcome, no_baseline.reason) == (
        Outcome.INCONCLUSIVE,
        "refusals: no value for baseline 'baseline'",
    )
    assert no_baseline.bound is None
    floor = SloSpec(name="refusals", query=slo.query, compare="baseline", max_decrease=0.05)
    observation = Observation(0, 60, both, {"refusals": {"canary": 0.5}})
    [no_floor] = judge([floor], ANALYSIS, observation, baseline="baseline", canary="canary").checks
    assert (no_floor.outcome, no_floor.bound) == (Outcome.INCONCLUSIVE, None)
    relative = check_of({"canary": 0.15, "baseline": 0.1}, relative=True)
    assert relative.outcome is Outcome.PASS and relative.bound == pytest.approx(0.15)


def test_relative_slos_step_aside_only_when_the_baseline_is_not_served() -> None:
    slos = [
        SloSpec(metric="error_rate", compare="baseline", max_ratio=1.0),
        SloSpec(metric="error_rate", max=0.02),
    ]
    at_full = Observation(0, 60, {"canary": VariantStats(requests=500, errors=5)})
    served = judge(slos, ANALYSIS, at_full, baseline="baseline", canary="canary")
    assert [c.outcome for c in served.checks] == [Outcome.INCONCLUSIVE, Outcome.PASS]
    alone = judge(
        slos, ANALYSIS, at_full, baseline="baseline", canary="canary", baseline_served=False
    )
    assert [c.slo for c in alone.checks] == ["error_rate <= 0.02"]
    assert alone.outcome is Outcome.PASS


@pytest.mark.parametrize(
    ("canary_error_rate", "outcome"), [(0.005, "promoted"), (0.03, "rolled_back")]
)
def test_at_100_percent_the_runner_judges_relative_slos_against_the_baselines_last_window(
    tmp_path: Path, canary_error_rate: float, outcome: str
) -> None:
    # The baseline serves nothing at 100%: judged against this window, the relative SLO could
    # only ever be inconclusive and roll back; skipped (as before issue 23), nothing held the
    # canary to the baseline there. Traffic follows the flag's weight.
    rollout = Rollout.model_validate(
        {
            "kind": "Rollout",
            "metadata": {"name": "full"},
            "spec": {
                "flag": {
                    "provider": "file",
                    "path": "/tmp/f.json",
                    "key": "k",
                    "baseline": "old",
                    "canary": "new",
                },
                "metrics": {"provider": "scrape", "targets": ["http://127.0.0.1:9/metrics"]},
                "slos": [
                    {"metric": "error_rate", "compare": "baseline", "max_increase": 0.01},
                    {"metric": "error_rate", "max": 0.05},
                ],
                "analysis": {
                    "interval": 10,
                    "min_requests": 50,
                    "inconclusive_limit": 0,
                    "method": "threshold",
                },
                "steps": [{"set_weight": 50}, {"set_weight": 100}],
            },
        }
    )
    clock = FakeClock(T0)
    flags = MemoryFlagStore("k", "old", "new")

    def script(since: float, now: float) -> Observation:
        share = flags.split(flags.snapshot()).canary / 100
        served = 20 * (now - since)
        variants = {
            "new": VariantStats(requests=served * share, errors=served * share * canary_error_rate)
        }
        if share < 1:
            variants["old"] = VariantStats(requests=served * (1 - share))
        return Observation(since, now, variants)

    with StateStore(tmp_path / "state.db") as store:
        runner = RolloutRunner(
            rollout,
            flags=flags,
            metrics=ScriptedMetricsSource(script, clock.now),
            store=store,
            clock=clock,
            poll_interval=5.0,
        )
        result = runner.run()
        analyses = [a.data for a in store.events(result.run_id, "analysis")]
    assert result.outcome == outcome
    if outcome == "promoted":
        # At 100% the relative SLO is judged against the baseline's last window (at 50%).
        assert [(a["weight"], len(a["checks"])) for a in analyses] == [(50, 2), (100, 2)]
        relative, absolute = analyses[1]["checks"]
        assert absolute["slo"] == "error_rate <= 0.05"
        assert relative["slo"] == "error_rate <= baseline + 0.01"
        assert "judged against the baseline's last window" in relative["reason"]
        # One 10 s interval at 50% of 20 requests/s: the baseline's 100.
        assert relative["outcome"] == "pass" and relative["baseline_requests"] == 100
    else:  # below 100% the relative bound is still judged: 3% is over the baseline + 0.01
        assert [(a["weight"], a["outcome"]) for a in analyses] == [(50, "fail")]
        assert [c["outcome"] for c in analyses[0]["checks"]] == ["fail", "pass"]


# -- verdicts -------------------------------------------------------------------------------------


def a_check(outcome: Outcome, reason: str, evidence: Evidence | None = None) -> Check:
    return Check("s", "error_rate", outcome, reason, 0.1, 0.05, 0.2, 100, 200, evidence)


def test_a_verdict_fails_on_any_failure_else_is_inconclusive_on_any_doubt_else_passes() -> None:
    fail, unsure, ok = (
        a_check(Outcome.FAIL, "bad"),
        a_check(Outcome.INCONCLUSIVE, "unsure"),
        a_check(Outcome.PASS, "fine"),
    )
    assert Verdict.of((ok, unsure, fail), 1, 2).outcome is Outcome.FAIL
    assert Verdict.of((ok, unsure), 1, 2).outcome is Outcome.INCONCLUSIVE
    assert Verdict.of((ok, ok), 1, 2).outcome is Outcome.PASS
    assert Verdict.of((), 1, 2).outcome is Outcome.INCONCLUSIVE  # nothing judged is no pass
    two = Verdict.of((fail, ok, a_check(Outcome.FAIL, "worse")), 3.0, 4.0)
    assert (two.reason, two.window_start, two.window_end) == ("bad; worse", 3.0, 4.0)
    assert Verdict.of((ok,), 1, 2).reason == ""


def test_a_verdict_round_trips_through_json_with_its_evidence() -> None:
    evidence = Evidence("rate ratio", 25.0, 20.0, 1.8, 1.1, 3.0, 42.0)
    verdict_ = Verdict.of(
        (a_check(Outcome.FAIL, "bad", evidence), a_check(Outcome.PASS, "ok")), 10.0, 70.0
    )
    data = verdict_.to_dict()
    assert data["outcome"] == "fail" and data["reason"] == "bad"
    assert (data["window_start"], data["window_end"]) == (10.0, 70.0)
    assert data["checks"][0]["evidence"] == {
        "test": "rate ratio",
        "e_value": 25.0,
        "threshold": 20.0,
        "estimate": 1.8,
        "lower": 1.1,
        "upper": 3.0,
        "samples": 42.0,
    }
    assert "evidence" not in data["checks"][1]
    assert Verdict.from_dict(data) == verdict_
    assert Verdict.from_dict({"outcome": "inconclusive", "window_start": 1, "window_end": 2}) == (
        Verdict(Outcome.INCONCLUSIVE, (), 1, 2)
    )


def test_the_threshold_method_leaves_the_ledger_as_it_was() -> None:
    slos = [SloSpec(metric="error_rate", max=0.02)]
    observation = Observation(0, 60, {"canary": VariantStats(requests=500, errors=50)})
    ledger = {"tests": {"kept": 1}}
    result, after = assess(
        slos, ANALYSIS, observation, ledger, baseline="baseline", canary="canary"
    )
    assert {key: value for key, value in after.items() if key != LEDGER_KEY} == ledger
    assert result.outcome is Outcome.FAIL
    assert result.reason == "error_rate = 0.1 is above the maximum 0.02"


def test_assess_passes_baseline_served_to_the_threshold_judge() -> None:
    slos = [SloSpec(metric="error_rate", compare="baseline", max_ratio=1.0)]
    observation = Observation(0, 60, {"canary": VariantStats(requests=500)})
    served, _ = assess(slos, ANALYSIS, observation, {}, baseline="b", canary="canary")
    assert served.outcome is Outcome.INCONCLUSIVE and len(served.checks) == 1
    alone, _ = assess(
        slos, ANALYSIS, observation, {}, baseline="b", canary="canary", baseline_served=False
    )
    # No window of the baseline was ever kept: the check says it cannot be judged, by name.
    assert alone.outcome is Outcome.INCONCLUSIVE
    assert alone.reason.startswith("error_rate <= baseline x 1: cannot be judged at this weight")


def test_assess_uses_the_sequential_method_when_the_runbook_names_it() -> None:
    slos = [SloSpec(metric="error_rate", compare="baseline", max_ratio=1.0)]
    both = {
        "canary": VariantStats(requests=500, errors=5),
        "baseline": VariantStats(requests=500, errors=5),
    }
    sequential = AnalysisSpec(interval=10, min_requests=100, method="sequential")
    result, ledger = assess(
        slos, sequential, Observation(0, 60, both), {}, baseline="baseline", canary="canary"
    )
    assert result.checks[0].evidence is not None  # only the sequential method gives evidence
    assert ledger != {}


# -- undecided: on_inconclusive ------------------------------------------------------------------

UND = Outcome.INCONCLUSIVE
UNDECIDED = {"inconclusive_limit": 1, "on_inconclusive": "pause", "max_wait": 60}


def test_undecided_past_the_limit_pauses_at_the_weight_instead_of_rolling_back() -> None:
    # Pause 20 s, one extension allowed: closings at 20 and 30 are undecided, the second trips.
    d = Drive(spec([W10, {"pause": 20}, W100], **UNDECIDED), answers(*[UND] * 20)).run()
    # Held at 10%: analysed every interval (each one closing), no rollback, then the deadline.
    assert [a for a in d.analyses if a[0] >= 30] == [
        (30, 0, True), (40, 0, True), (50, 0, True), (60, 0, True), (70, 0, True),
        (80, 0, True), (90, 0, True),
    ]  # fmt: skip
    assert d.log[-1][0] == "rollback" and d.log[-1][3] == 90  # 30 + max_wait 60
    assert d.log[-1][2].startswith(
        "inconclusive: still undecided after max_wait (60s) at 10%, neither approved nor aborted"
    )
    assert d.finish is not None and d.finish.outcome == "rolled_back"


def test_the_undecided_pause_waits_for_approval_in_the_approval_phase_and_says_why() -> None:
    rollout = spec([W10, {"pause": 20}, W100], **UNDECIDED)
    state = RolloutState(
        phase=Phase.PAUSED, item=1, weight=10, window_start=T0, hold_ends=T0 + 30,
        next_analysis=T0 + 30, closing=True, extensions=1,
    )  # fmt: skip
    decision = tick(rollout, state, T0 + 31, Analyzed(verdict(UND, "too few requests")))
    reason = (
        "undecided at 10% after 1 extensions (not enough data (too few requests)); approve to "
        "go on, abort to roll back; rolls back after max_wait (60s) unless an analysis decides "
        "first"
    )
    assert decision == Decision(
        replace(
            state, phase=Phase.AWAITING_APPROVAL, undecided_until=T0 + 91, reason=reason,
            next_analysis=T0 + 41, extensions=2,
        ),
        Wait(T0 + 41),
    )  # fmt: skip
    # Its analyses are closing ones: the hold is over.
    due = tick(rollout, decision.state, T0 + 41, None)
    assert due == Decision(replace(decision.state, closing=True), Analyze(T0, True))
    waiting = tick(rollout, due.state, T0 + 42, Analyzed(verdict(UND)))
    assert waiting == Decision(replace(due.state, next_analysis=T0 + 52), Wait(T0 + 52))


def test_approving_an_undecided_step_goes_on_to_the_next_weight_and_clears_the_reason() -> None:
    d = Drive(
        spec([W10, {"pause": 20}, W100], **UNDECIDED),
        answers(UND, UND, UND, UND, UND),
        approve_at=45,
    ).run()
    sets = [entry for entry in d.log if entry[0] == "set"]
    assert sets == [("set", 10, 0), ("set", 100, 45)]
    assert d.finish == Finish("promoted", "")
    assert d.state.undecided_until is None


def test_aborting_an_undecided_step_rolls_back_aborted() -> None:
    d = Drive(
        spec([W10, {"pause": 20}, W100], **UNDECIDED), answers(*[UND] * 20), abort_at=55
    ).run()
    assert d.log[-1] == ("rollback", "aborted", "aborted by alice", 55)


def test_an_analysis_that_decides_during_the_pause_ends_it_without_a_human() -> None:
    passes = Drive(spec([W10, {"pause": 20}, W100], **UNDECIDED), answers(UND, UND, UND, UND)).run()
    assert [entry for entry in passes.log if entry[0] == "set"] == [
        ("set", 10, 0),
        ("set", 100, 50),
    ]
    assert passes.finish == Finish("promoted", "")
    fails = Drive(
        spec([W10, {"pause": 20}, W100], **UNDECIDED), answers(UND, UND, UND, UND, Outcome.FAIL)
    ).run()
    assert fails.log[-1] == ("rollback", "rolled_back", "SLO failed: fail at 50", 50)


def test_a_resumed_undecided_pause_keeps_its_deadline_and_restarts_the_window() -> None:
    rollout = spec([W10, {"pause": 20}, W100], **UNDECIDED)
    paused = RolloutState(
        phase=Phase.AWAITING_APPROVAL, item=1, weight=10, window_start=T0, hold_ends=T0 + 30,
        next_analysis=T0 + 90, undecided_until=T0 + 90, reason="undecided",
    )  # fmt: skip
    decision = tick(rollout, paused, T0 + 85, Resumed(T0 + 85))
    assert decision == Decision(
        replace(paused, window_start=T0 + 85, next_analysis=T0 + 90), Wait(T0 + 90)
    )
    assert RolloutState.from_dict(paused.to_dict()) == paused


def _not_shown_within() -> Verdict:
    evidence = Evidence("rate ratio", 1.0, 20.0, 2.5, 0.5, 9.0, 40, within=False)
    check = Check("error_rate vs baseline", "error_rate", Outcome.PASS, "no evidence the "
                  "canary is worse", 0.02, 0.005, 0.01, 700, 13000, evidence)  # fmt: skip
    within = replace(evidence, within=True)
    fine = replace(check, slo="latency vs baseline", metric="latency_p95_seconds", evidence=within)
    cost = replace(check, slo="cost vs baseline", metric="cost_per_query_usd")
    return Verdict(Outcome.PASS, (check, fine, cost), T0, T0)


def test_a_closing_pass_whose_estimate_is_beyond_a_relative_bound_does_not_end_the_step() -> None:
    rollout = spec([W10, {"pause": 20}, W100], inconclusive_limit=0)
    state = RolloutState(
        phase=Phase.PAUSED, item=1, weight=10, window_start=T0, hold_ends=T0 + 20,
        next_analysis=T0 + 20, closing=True,
    )  # fmt: skip
    decision = tick(rollout, state, T0 + 20, Analyzed(_not_shown_within()))
    assert decision.action == Rollback(
        "rolled_back",
        "inconclusive: not shown within the bound: the estimate is beyond the bound of "
        "error_rate vs baseline, cost vs baseline",
    )
    # Mid-hold, the same verdict is no reason to do anything.
    early = tick(rollout, replace(state, closing=False), T0 + 10, Analyzed(_not_shown_within()))
    assert early.action == Wait(T0 + 20)


def test_rollback_stays_the_default_on_undecided() -> None:
    assert spec([W10]).analysis.on_inconclusive == "rollback"
    d = Drive(spec([W10, {"pause": 20}], inconclusive_limit=0), answers(UND, UND)).run()
    assert d.log[-1] == (
        "rollback",
        "rolled_back",
        "inconclusive: not enough data (inconclusive at 20)",
        20,
    )


def test_max_wait_without_pause_is_refused_naming_the_field() -> None:
    with pytest.raises(ValueError, match="max_wait applies only to on_inconclusive: pause"):
        spec([W10], max_wait=60)


def test_the_reason_at_max_wait_says_a_tolerated_failure_or_that_nothing_was_judged() -> None:
    tolerated = Drive(
        spec([W10, {"pause": 20}, W100], **{**UNDECIDED, "failure_limit": 99}),
        answers(*[UND] * 8, Outcome.FAIL),
    ).run()
    assert tolerated.log[-1] == (
        "rollback",
        "rolled_back",
        "inconclusive: still undecided after max_wait (60s) at 10%, neither approved nor "
        "aborted (a tolerated failure: fail at 90)",
        90,
    )
    rollout = spec([W10, {"pause": 20}], inconclusive_limit=0)
    state = RolloutState(
        phase=Phase.PAUSED, item=1, weight=10, window_start=T0, hold_ends=T0 + 20,
        next_analysis=T0 + 20, closing=True,
    )  # fmt: skip
    nothing = tick(rollout, state, T0 + 20, Analyzed(Verdict.of((), T0, T0 + 20)))
    assert nothing.action == Rollback(
        "rolled_back", "inconclusive: not enough data (no check could be judged)"
    )


def test_approving_an_undecided_pause_starts_the_next_pause_then() -> None:
    d = Drive(
        spec([W10, {"pause": 20}, {"pause": 30}, W100], **UNDECIDED),
        answers(*[UND] * 4),
        approve_at=45,
    ).run()
    # The next pause runs 30 s from the approval: analyses at 55 and 65, closing at 75.
    assert [a for a in d.analyses if 45 < a[0] <= 75] == [
        (55, 0, False), (65, 0, False), (75, 0, True),
    ]  # fmt: skip
    assert d.finish == Finish("promoted", "")
