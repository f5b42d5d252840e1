"""Judge a window of both variants against the runbook's SLOs.

No data is its own answer: a check without enough requests, or whose metric has no value, is
INCONCLUSIVE with the reason, never a pass. A cost per query resting on answers whose model has
no price is unknown, not $0: inconclusive too, naming the variant and what would settle it. A
value exactly at its bound passes, so a runbook's `max: 0.02` reads as "at most 2%".
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from canaryctl.analysis.verdict import Check, Outcome, Verdict
from canaryctl.metrics.base import Observation, VariantStats
from canaryctl.metrics.measures import measure, samples, unknown_parts
from canaryctl.runbook.rollout import AnalysisSpec, SloSpec

__all__ = ["judge", "judge_slo"]


def judge(
    slos: Sequence[SloSpec],
    analysis: AnalysisSpec,
    observation: Observation,
    *,
    baseline: str,
    canary: str,
    baseline_served: bool = True,
) -> Verdict:
    """One verdict for the window `observation` covers; `baseline`/`canary` name variants.

    With the canary at 100% the baseline gets no traffic, so SLOs relative to it cannot be
    judged on this window; with `baseline_served=False` they are left out here, and `assess`
    puts in their place the bounds the baseline's last window gives them (last_window.py).
    """
    checks = tuple(
        judge_slo(slo, analysis.min_requests, observation, baseline=baseline, canary=canary)
        for slo in slos
        if baseline_served or not slo.relative
    )
    return Verdict.of(checks, observation.start, observation.end)


def judge_slo(
    slo: SloSpec, min_requests: int, observation: Observation, *, baseline: str, canary: str
) -> Check:
    """One SLO against its bound on this window alone."""
    canary_stats, baseline_stats = observation.of(canary), observation.of(baseline)
    canary_value = _value(slo, observation, canary)
    baseline_value = _value(slo, observation, baseline) if slo.relative else None
    bound = _bound(slo, baseline_value)

    def verdict(outcome: Outcome, reason: str) -> Check:
        return Check(
            slo=slo.describe(),
            metric=slo.metric or slo.subject,
            outcome=outcome,
            reason=reason,
            canary_value=canary_value,
            baseline_value=baseline_value,
            bound=bound,
            canary_requests=canary_stats.requests,
            baseline_requests=baseline_stats.requests,
        )

    unknown = _unknown(slo, "canary", canary, canary_stats)
    if unknown is None and slo.relative:
        unknown = _unknown(slo, "baseline", baseline, baseline_stats)
    if unknown is not None:
        return verdict(Outcome.INCONCLUSIVE, unknown)
    counted = _COUNTED.get(slo.metric or "", "requests")
    short = _too_few(canary, samples(slo.metric, canary_stats), min_requests, counted)
    if short is None and slo.relative:
        short = _too_few(baseline, samples(slo.metric, baseline_stats), min_requests, counted)
    if short is not None:
        return verdict(Outcome.INCONCLUSIVE, f"{slo.describe()}: {short}")
    if canary_value is None:
        return verdict(Outcome.INCONCLUSIVE, f"{slo.subject}: no value for canary '{canary}'")
    if slo.relative and baseline_value is None:
        return verdict(Outcome.INCONCLUSIVE, f"{slo.subject}: no value for baseline '{baseline}'")

    shown = f"{slo.subject} = {canary_value:.4g}"
    if slo.relative:
        assert bound is not None  # a relative SLO with a baseline value always has a bound
        if slo.max_decrease is not None and _beyond(bound, canary_value):
            return verdict(
                Outcome.FAIL,
                f"{shown} is below {bound:.4g} (baseline {baseline_value:.4g}, {slo.describe()})",
            )
        if slo.max_decrease is None and _beyond(canary_value, bound):
            return verdict(
                Outcome.FAIL,
                f"{shown} is above {bound:.4g} (baseline {baseline_value:.4g}, {slo.describe()})",
            )
        return verdict(Outcome.PASS, f"{shown} is within {slo.describe()} ({bound:.4g})")
    if slo.max is not None and _beyond(canary_value, slo.max):
        return verdict(Outcome.FAIL, f"{shown} is above the maximum {slo.max:g}")
    if slo.min is not None and _beyond(slo.min, canary_value):
        return verdict(Outcome.FAIL, f"{shown} is below the minimum {slo.min:g}")
    return verdict(Outcome.PASS, f"{shown} is within {slo.describe()}")


_COUNTED = {"quality_score": "quality scores", "win_rate": "judged pairs"}
"""What a metric's min_requests counts, when it is not requests."""


def _value(slo: SloSpec, observation: Observation, variant: str) -> float | None:
    """A custom SLO's number as its query gave it, else the built-in metric from the counts."""
    if slo.metric is None:
        return observation.slo_value(slo.subject, variant)
    return measure(slo.metric, observation.of(variant))


def _bound(slo: SloSpec, baseline_value: float | None) -> float | None:
    """The number the canary is held against; for absolute bounds, the max (else the min)."""
    if slo.max_increase is not None:
        return None if baseline_value is None else baseline_value + slo.max_increase
    if slo.max_ratio is not None:
        return None if baseline_value is None else baseline_value * slo.max_ratio
    if slo.max_decrease is not None:
        return None if baseline_value is None else baseline_value - slo.max_decrease
    return slo.max if slo.max is not None else slo.min


def _unknown(slo: SloSpec, role: str, variant: str, stats: VariantStats) -> str | None:
    """Why the metric's value is unknown for `variant` (answers without a price), if it is."""
    parts = unknown_parts(slo.metric, stats)
    if parts <= 0:
        return None
    return (
        f"{slo.subject}: {parts:g} of {stats.requests:g} requests of {role} '{variant}' were "
        "answered by a model with no price, so its cost is unknown, not $0; give that model a "
        "price where the gateway keeps them (canaryctl: its `price` in the Gateway document, "
        "`{prompt_per_1k: 0, completion_per_1k: 0}` if it costs nothing; LiteLLM: its model "
        "cost) and the next windows are judged"
    )


def _too_few(variant: str, count: float, min_requests: int, counted: str) -> str | None:
    if count >= min_requests:
        return None
    return f"too few {counted} for '{variant}' ({count:g} < {min_requests})"


def _beyond(value: float, bound: float) -> bool:
    """`value > bound`, except that float noise (3/200 vs 0.01 + 0.005) counts as "at" the bound."""
    return value > bound and not math.isclose(value, bound, rel_tol=1e-9, abs_tol=1e-12)
