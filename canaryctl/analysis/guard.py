"""The check every rollout gets, whatever its SLOs: a canary whose own model fails every request,
or half of them, is never promoted.

A runbook may judge no rate at all (latency and cost only), or judge `served_error_rate`, which a
fallback chain keeps at zero while the canary's model answers nothing. So, on the canary alone:

- FAIL when every request of the window that its model answered for failed (outcome `error` or
  `fallback_ok`) and there were at least `FLOOR` of them: a wrong or missing key, a model name the
  provider does not know, a server that only sends `{}`.
- INCONCLUSIVE while the canary's model has not answered one request well (outcome `ok`) in the
  whole run. A hold ends only on a passing analysis, so such a canary can never be promoted: it
  is held until it answers, or rolled back once the holds' extensions run out.
- INCONCLUSIVE, likewise, while its model failed at least `CEILING` (half) of the window's
  requests, counting among them what it refused beyond the share the baseline refused
  (`_refused_beyond`). A runbook whose only bound on failures is relative passes such a canary
  when the baseline fails nearly as much (an outage of both, a bad prompt mix), and one that
  bounds only latency passes it because failures are fast. Not a FAIL: with the baseline
  failing too, the canary may be no worse, so the step waits (then `on_inconclusive`); the
  closing analysis' window is the whole step, so a healthy canary is held only while its window
  is a handful of requests.

Each adds one check to the verdict; a canary that answers adds none. What the run has seen is
one flag, kept in the analysis ledger under its own key.
"""

from __future__ import annotations

from typing import Any

from canaryctl.analysis.verdict import Check, Outcome, Verdict
from canaryctl.metrics.base import Observation, VariantStats

__all__ = ["CEILING", "FLOOR", "LEDGER_KEY", "guard_canary"]

FLOOR = 10
"""Requests that must all have failed before one window fails the canary outright: a healthy
model failing 10 in a row at even a 20% error rate happens once in ten million windows."""

CEILING = 0.5
"""The share of a window's requests the canary's model may fail and still pass the guard: less
than half. No SLO worth promoting on allows more, and a healthy canary's share in a window of a
few dozen requests is far below it."""

LEDGER_KEY = "canary_guard"

_SLO = "built-in: the canary's own model answers"
_METRIC = "canary_answers"


def guard_canary(
    verdict: Verdict,
    observation: Observation,
    seen: dict[str, Any],
    *,
    canary: str,
    baseline: str | None = None,
) -> tuple[Verdict, dict[str, Any]]:
    """`verdict` with the guard's check added when it does not pass, and what to remember
    (`seen`: what this returned last time, {} at the start of a run). With `baseline`, what the
    canary refused beyond the baseline's share counts among its failures (_refused_beyond)."""
    stats = observation.of(canary)
    answered = bool(seen.get("answered")) or stats.answered > 0
    remembered = {"answered": answered}
    judged = stats.requests - stats.rejected
    failed = stats.model_failures
    refused = 0.0 if baseline is None else _refused_beyond(stats, observation.of(baseline))
    answerable, failing = judged + refused, failed + refused

    def check(outcome: Outcome, reason: str) -> Verdict:
        added = Check(
            slo=_SLO,
            metric=_METRIC,
            outcome=outcome,
            reason=reason,
            canary_value=failing / answerable if answerable > 0 else None,
            baseline_value=None,
            bound=None,
            canary_requests=stats.requests,
            baseline_requests=0.0,
        )
        return Verdict.of((*verdict.checks, added), verdict.window_start, verdict.window_end)

    if judged >= FLOOR and stats.answered <= 0 and failed >= judged:
        reason = (
            f"the canary '{canary}' model failed every one of its {judged:g} requests in the "
            f"window ({stats.errors:g} errors, {stats.fallbacks:g} answered by a fallback)"
        )
        return check(Outcome.FAIL, reason), remembered
    if not answered:
        reason = (
            f"the canary '{canary}' model has not answered one request well yet in this run "
            f"({stats.requests:g} requests in the window, none ok); it cannot be promoted "
            "until it does"
        )
        return check(Outcome.INCONCLUSIVE, reason), remembered
    if answerable > 0 and failing >= CEILING * answerable:
        reason = (
            f"the canary '{canary}' model failed {failing:g} of its {answerable:g} requests in "
            f"the window ({stats.errors:g} errors, {stats.fallbacks:g} answered by a fallback, "
            f"{refused:g} refused beyond the baseline's share), at least {CEILING:.0%}; it "
            "cannot be promoted while it does, whatever the SLOs"
        )
        return check(Outcome.INCONCLUSIVE, reason), remembered
    return verdict, remembered


def _refused_beyond(canary: VariantStats, baseline: VariantStats) -> float:
    """The canary's refusals (`rejected`: 400, 413, 422) beyond the share of its requests the
    baseline refused in the same window. Refusals are the clients' mistakes, left out of every
    failure rate, but the same clients send both arms the same requests: a canary that refuses
    what the baseline takes (a smaller context window, a parameter its provider rejects) fails
    them. 0 while the baseline serves nothing (at 100%), where the two cannot be told apart."""
    if baseline.requests <= 0:
        return 0.0
    return max(canary.rejected - canary.requests * baseline.rejected / baseline.requests, 0.0)
