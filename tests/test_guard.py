"""The built-in check on the canary's own model, through `assess` as the controller calls it:
whatever the SLOs and the method, a canary whose model fails every request never passes."""

from __future__ import annotations

from typing import Any

import pytest

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
    outcome, reason, _ = judge(stats(judged + 3, fallbacks=failed, rejected=3))
    assert (outcome is Outcome.INCONCLUSIVE) is held, reason
    if held:
        assert f"failed {failed:g} of its {judged:g} requests" in reason
