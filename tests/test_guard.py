"""The built-in check on the canary's own model, through `assess` as the controller calls it:
whatever the SLOs and the method, a canary whose model fails every request never passes."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from canaryctl.analysis import Outcome, assess
from canaryctl.analysis.guard import FLOOR, LEDGER_KEY
from canaryctl.metrics import Observation, VariantStats
from canaryctl.runbook.rollout import AnalysisSpec, SloSpec

LATENCY_ONLY = [SloSpec(metric="latency_p95_seconds", max=5)]


def stats(requests: float, **counts: float) -> VariantStats:
    """`requests` all under 0.5 s, so the latency SLO passes."""
    buckets = ((0.5, requests), (float("inf"), requests))
    return VariantStats(requests, latency_buckets=buckets, **counts)


def judge(
    canary: VariantStats, ledger: dict[str, Any] | None = None, method: str = "threshold"
) -> tuple[Outcome, str, dict[str, Any]]:
    observation = Observation(0, 30, {"canary": canary, "baseline": stats(100)})
    verdict, kept = assess(
        LATENCY_ONLY,
        AnalysisSpec(min_requests=1, method=method),
        observation,
        ledger or {},
        baseline="baseline",
        canary="canary",
    )
    return verdict.outcome, verdict.reason, kept


@pytest.mark.parametrize("method", ["threshold", "sequential"])
@pytest.mark.parametrize(
    "counts", [{"errors": FLOOR}, {"fallbacks": FLOOR}, {"errors": 4, "fallbacks": FLOOR - 4}]
)
def test_every_request_failed_fails_the_canary_whatever_the_slos(
    counts: dict[str, float], method: str
) -> None:
    outcome, reason, _ = judge(stats(FLOOR, **counts), method=method)
    assert outcome is Outcome.FAIL
    assert f"the canary 'canary' model failed every one of its {FLOOR} requests" in reason


def test_the_clients_own_mistakes_do_not_count_towards_the_floor() -> None:
    outcome, reason, _ = judge(stats(FLOOR + 5, errors=FLOOR - 1, rejected=6))
    assert outcome is Outcome.INCONCLUSIVE  # 9 failures of 9 judged: below the floor
    assert "has not answered one request well yet" in reason


def test_the_clients_own_mistakes_do_not_save_a_canary_whose_model_fails_the_rest() -> None:
    outcome, reason, _ = judge(stats(FLOOR + 5, errors=FLOOR, rejected=5))
    assert outcome is Outcome.FAIL  # 10 failures of the 10 its model answered for
    assert f"failed every one of its {FLOOR} requests" in reason


def test_the_guards_check_is_named_as_the_built_in_one() -> None:
    """A report or a notification shows which check stopped the canary: the built-in one,
    not one of the runbook's SLOs."""
    observation = Observation(0, 30, {"canary": stats(FLOOR, errors=FLOOR), "baseline": stats(9)})
    verdict, _ = assess(
        LATENCY_ONLY, AnalysisSpec(min_requests=1), observation, {},
        baseline="baseline", canary="canary",
    )  # fmt: skip
    guard = verdict.checks[-1]
    assert (guard.slo, guard.metric) == (
        "built-in: the canary's own model answers",
        "canary_answers",
    )
    assert guard.outcome is Outcome.FAIL and guard.canary_value == 1.0


def test_below_the_floor_a_canary_that_never_answered_cannot_pass() -> None:
    outcome, reason, ledger = judge(stats(FLOOR - 1, errors=FLOOR - 1))
    assert outcome is Outcome.INCONCLUSIVE
    assert "cannot be promoted until it does" in reason
    assert ledger[LEDGER_KEY] == {"answered": False}


def test_one_good_answer_is_remembered_for_the_rest_of_the_run() -> None:
    outcome, _, ledger = judge(stats(3, errors=1))
    assert outcome is Outcome.PASS  # one ok answer: the SLOs alone decide
    assert ledger[LEDGER_KEY] == {"answered": True}
    # A later window with nothing yet (a new step's first analysis) stays judged by the SLOs.
    outcome, _, ledger = judge(stats(3, errors=1, filtered=2), ledger)
    assert outcome is Outcome.PASS and ledger[LEDGER_KEY] == {"answered": True}
    # But a window where every request failed fails, whatever came before.
    outcome, _, _ = judge(stats(FLOOR, errors=FLOOR), ledger)
    assert outcome is Outcome.FAIL


def test_a_canary_that_answers_adds_no_check() -> None:
    observation = Observation(0, 30, {"canary": stats(50, errors=1), "baseline": stats(50)})
    verdict, _ = assess(
        LATENCY_ONLY,
        AnalysisSpec(min_requests=1),
        observation,
        {},
        baseline="baseline",
        canary="canary",
    )
    assert verdict.outcome is Outcome.PASS
    assert [c.metric for c in verdict.checks] == ["latency_p95_seconds"]


# -- half its requests failed: never promoted, whatever the runbook's bounds ----------------------

RELATIVE_ONLY = [SloSpec(metric="error_rate", compare="baseline", max_ratio=1.2)]
RELATIVE_AND_LATENCY = [*RELATIVE_ONLY, SloSpec(metric="latency_p95_seconds", max=2)]


@pytest.mark.parametrize("method", ["threshold", "sequential"])
@pytest.mark.parametrize(
    ("slos", "baseline_errors"),
    [
        (LATENCY_ONLY, 9),  # no error SLO at all: its failures are fast, so p95 looks fine
        (RELATIVE_ONLY, 405),  # the baseline fails 45%: 50% is within 1.2x of it
        (RELATIVE_AND_LATENCY, 405),  # an absolute bound, but not on the failures
    ],
)
def test_a_canary_whose_model_fails_half_its_requests_is_never_promoted(
    slos: list[SloSpec], baseline_errors: float, method: str
) -> None:
    """Ten analyses of a canary failing 50 of its 100 requests each (fast, so its latency looks
    good), its relative bound within reach of a baseline in trouble: no analysis may pass, or
    the closing one would promote it. It answered half of them well, so the every-request
    floor does not apply."""
    ledger: dict[str, Any] = {}
    for look in range(1, 11):
        canary = stats(100 * look, errors=50 * look)
        baseline = stats(900 * look, errors=baseline_errors * look)
        verdict, ledger = assess(
            slos,
            AnalysisSpec(min_requests=50, method=method),
            Observation(0, 30 * look, {"canary": canary, "baseline": baseline}),
            ledger,
            baseline="baseline",
            canary="canary",
        )
        assert verdict.outcome is not Outcome.PASS, look
        assert "failed 500 of its 1000 requests" in verdict.reason or look < 10


@pytest.mark.parametrize(
    ("failed", "judged", "held"),
    [(50, 100, True), (49, 100, False), (5, 10, True), (4, 10, False), (1, 2, True)],
)
def test_half_is_the_line(failed: float, judged: float, held: bool) -> None:
    outcome, reason, _ = judge(stats(judged, fallbacks=failed))
    assert (outcome is Outcome.INCONCLUSIVE) is held, reason
    if held:
        assert f"failed {failed:g} of its {judged:g} requests" in reason


def test_refusing_what_the_baseline_takes_counts_as_failing_it() -> None:
    """A canary whose provider answers 400 to 60% of the requests (a smaller context window, a
    parameter it does not take) while the baseline refuses 1% of the same clients' requests:
    `rejected` is the client's mistake, left out of error_rate, so every rate passed. What it
    refuses beyond the baseline's share (1%, 10 of its 1000) is its own failure: 590 of the 990
    requests it is answerable for, held back."""
    observation = Observation(
        0, 30, {"canary": stats(1000, rejected=600), "baseline": stats(900, rejected=9)}
    )
    slos = [SloSpec(metric="error_rate", max=0.02), *LATENCY_ONLY]
    verdict, _ = assess(
        slos, AnalysisSpec(min_requests=1), observation, {}, baseline="baseline", canary="canary"
    )
    assert verdict.outcome is Outcome.INCONCLUSIVE
    assert "failed 590 of its 990 requests" in verdict.reason
    assert "590 refused beyond the baseline's share" in verdict.reason


@pytest.mark.parametrize(
    ("canary_rejected", "held"),
    [(600, True), (550, True), (549, False)],
)
def test_the_clients_own_mistakes_refused_by_both_do_not_hold_the_canary(
    canary_rejected: float, held: bool
) -> None:
    """Refused as often as the baseline refuses, the requests are the clients' mistakes, not
    the canary's: only the excess counts, against the half. With the baseline refusing 10%, the
    canary is answerable for its 1000 requests less the 100 that share makes the clients' own,
    and fails the excess, canary_rejected - 100: half at 550 (450 of 900), under it at 549."""
    observation = Observation(
        0,
        30,
        {"canary": stats(1000, rejected=canary_rejected), "baseline": stats(1000, rejected=100)},
    )
    verdict, _ = assess(
        LATENCY_ONLY, AnalysisSpec(min_requests=1), observation, {},
        baseline="baseline", canary="canary",
    )  # fmt: skip
    assert (verdict.outcome is Outcome.INCONCLUSIVE) is held, verdict.reason


ANY_SLOS = [
    SloSpec(metric="error_rate", compare="baseline", max_ratio=1.2),
    SloSpec(metric="error_rate", compare="baseline", max_increase=0.01),
    SloSpec(metric="served_error_rate", max=0.6),
    SloSpec(metric="latency_p95_seconds", max=2),
    SloSpec(metric="latency_p95_seconds", compare="baseline", max_ratio=1.1),
    SloSpec(metric="cost_per_query_usd", compare="baseline", max_ratio=1.2),
]


@settings(max_examples=150, deadline=None)
@given(
    slos=st.lists(st.sampled_from(ANY_SLOS), min_size=1, max_size=4, unique_by=id),
    method=st.sampled_from(["threshold", "sequential"]),
    canary_requests=st.integers(1, 2000),
    failed_share=st.floats(0.5, 1.0),
    fallback_share=st.floats(0.0, 1.0),
    baseline_share=st.floats(0.0, 1.0),
    looks=st.integers(1, 6),
)
def test_no_runbook_passes_a_window_in_which_half_the_canarys_requests_failed(
    slos: list[SloSpec],
    method: str,
    canary_requests: int,
    failed_share: float,
    fallback_share: float,
    baseline_share: float,
    looks: int,
) -> None:
    """Whatever the SLOs, the method, the baseline's own failures and how many looks before:
    an analysis of a window in which the canary's model failed at least half its requests
    (errors or fallbacks, any mix) is never a pass, so it never ends a step."""
    ledger: dict[str, Any] = {}
    for look in range(1, looks + 1):
        requests = canary_requests * look
        failed = math.ceil(failed_share * requests)
        fallbacks = math.floor(fallback_share * failed)
        canary = stats(requests, errors=failed - fallbacks, fallbacks=fallbacks, cost_usd=0.0)
        baseline_requests = 1000 * look
        baseline = stats(
            baseline_requests,
            errors=math.floor(baseline_share * baseline_requests),
            cost_usd=baseline_requests * 0.001,
        )
        verdict, ledger = assess(
            slos,
            AnalysisSpec(min_requests=1, method=method),
            Observation(0, 30 * look, {"canary": canary, "baseline": baseline}),
            ledger,
            baseline="baseline",
            canary="canary",
        )
        assert verdict.outcome is not Outcome.PASS, verdict.reason


# -- the edges of the half line (each pinned by a mutant that survived without it) ---------------

ANSWERED = {LEDGER_KEY: {"answered": True}}
"""What the run remembers once the canary answered one request well."""


def guard_checks(canary: VariantStats, baseline: VariantStats) -> list[Any]:
    verdict, _ = assess(
        LATENCY_ONLY, AnalysisSpec(min_requests=1),
        Observation(0, 30, {"canary": canary, "baseline": baseline}), dict(ANSWERED),
        baseline="baseline", canary="canary",
    )  # fmt: skip
    return [c for c in verdict.checks if c.metric == "canary_answers"]


def test_one_failed_request_of_one_is_held_whatever_the_slos() -> None:
    outcome, reason, _ = judge(stats(1, fallbacks=1), dict(ANSWERED))
    assert outcome is Outcome.INCONCLUSIVE
    assert "failed 1 of its 1 requests" in reason and reason.endswith("whatever the SLOs")


def test_a_window_without_requests_adds_no_check_of_the_guards() -> None:
    assert guard_checks(stats(0), stats(100)) == []


def test_refusals_count_against_a_baseline_of_a_single_request() -> None:
    """The baseline answered its one request: the canary refusing 60 of 100 refuses them all
    beyond the baseline's share (none)."""
    [check] = guard_checks(stats(100, rejected=60), stats(1))
    assert check.outcome is Outcome.INCONCLUSIVE and "60 refused beyond" in check.reason


def test_with_a_baseline_serving_nothing_refusals_are_the_clients_own() -> None:
    """At 100% the baseline serves nothing: the canary's one refusal is the client's mistake,
    so 49 failures of the 99 it is answerable for stay under half."""
    assert guard_checks(stats(100, errors=49, rejected=1), stats(0)) == []
