"""A relative SLO where the baseline serves nothing (the canary at 100%): judged against the
baseline's last window before that weight, so every weight the rollout holds is judged.

While the baseline is served, the analysis keeps its last window's counts (and its custom
SLOs' values) in the ledger under `LEDGER_KEY`; each analysis of a step sees the window since the
step's weight was set, so what is kept at 100% is the whole of the last step before it. There, a
relative SLO becomes the absolute bound the baseline's window gives it, judged like any absolute
bound by the runbook's method, and says so in its reason:

- a rate: `max_increase` on top of, or `max_ratio` times, the baseline's rate. The sequential
  method takes an upper confidence bound of that rate (Chernoff's, at alpha/m, from the window's
  counts) so the baseline's own noise cannot roll a canary back; the threshold method the rate.
- a latency percentile, a mean (cost, tokens, quality) or a custom query's value: the window's
  value plus or times the margin (minus it, for `max_decrease`).

A check judged this way fails when the canary is shown beyond that bound and passes otherwise once
the window has `min_requests`, as a check against a live baseline does: the sequential method's
"not yet shown within" is no reason to hold. What it assumes: the baseline's rate now is what it
was in its last window (no drift between them). It adds one more test per relative SLO to the run,
each at alpha/m and the rate's bound at alpha/m, so the run's false-rollback rate is at most
alpha plus 2·alpha/m for each relative rate SLO judged at 100%.

Without a kept window (a runbook that starts at 100%), or with no value of the metric in it, the
check is inconclusive and says by name which SLO it cannot judge.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from canaryctl.analysis.counts import RATE_COUNTS, rate_counts
from canaryctl.analysis.verdict import Check, Outcome, Verdict
from canaryctl.metrics.base import Observation, VariantStats
from canaryctl.metrics.measures import measure
from canaryctl.runbook.rollout import SloSpec

__all__ = [
    "LEDGER_KEY",
    "Kept",
    "as_judged",
    "cannot_judge",
    "keep",
    "merged",
    "rate_upper_bound",
    "stand_in",
]

LEDGER_KEY = "baseline_window"


@dataclass(frozen=True)
class Kept:
    """The baseline's last window while it was served: its counts and custom SLOs' values."""

    start: float
    end: float
    stats: VariantStats
    slo_values: dict[str, float]

    def value(self, slo: SloSpec) -> float | None:
        if slo.metric is None:
            return self.slo_values.get(slo.subject)
        return measure(slo.metric, self.stats)

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "end": self.end,
            "stats": asdict(self.stats),
            "slo_values": dict(self.slo_values),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Kept | None:
        if not data:
            return None
        stats = data["stats"]
        buckets = tuple(tuple(b) for b in stats["latency_buckets"])
        return cls(
            data["start"],
            data["end"],
            VariantStats(**{**stats, "latency_buckets": buckets}),
            dict(data["slo_values"]),
        )


def keep(observation: Observation, baseline: str, kept: Kept | None) -> Kept | None:
    """The window to keep after an analysis while the baseline is served: this one, if the
    baseline had traffic in it."""
    stats = observation.of(baseline)
    if stats.requests <= 0:
        return kept
    values = {
        name: by_variant[baseline]
        for name, by_variant in observation.slo_values.items()
        if baseline in by_variant
    }
    return Kept(observation.start, observation.end, stats, values)


def rate_upper_bound(events: float, trials: float, alpha: float) -> float:
    """The largest rate p >= events/trials with trials · KL(events/trials || p) <= ln(1/alpha):
    Chernoff's bound, so the true rate is above it with probability at most alpha."""
    observed = min(max(events / trials, 0.0), 1.0)
    budget = math.log(1 / alpha) / trials

    def divergence(p: float) -> float:
        def term(x: float, y: float) -> float:
            return 0.0 if x <= 0 else x * math.log(x / y)

        return term(observed, p) + term(1 - observed, 1 - p)

    low, high = observed, 1.0
    for _ in range(60):
        middle = (low + high) / 2
        if divergence(middle) <= budget:
            low = middle
        else:
            high = middle
    return low


def stand_in(slo: SloSpec, kept: Kept, method: str, alpha: float) -> tuple[SloSpec, float] | None:
    """The absolute SLO a relative one stands for against the kept window, and the baseline's
    value it rests on; None when the window has no value for it."""
    value = kept.value(slo)
    if value is None:
        return None
    reference = value
    if slo.metric in RATE_COUNTS and method == "sequential":
        events, trials = rate_counts(slo.metric, kept.stats)
        if trials <= 0:
            return None
        reference = rate_upper_bound(events, trials, alpha)
    if slo.max_decrease is not None:
        bound = max(reference - slo.max_decrease, 0.0)
        return SloSpec(metric=slo.metric, name=slo.name, query=slo.query, min=bound), value
    if slo.max_ratio is not None:
        bound = reference * slo.max_ratio
    else:
        bound = reference + (slo.max_increase or 0.0)
    if slo.metric is not None and slo.metric.endswith("_rate"):
        bound = min(bound, 1.0)
    return SloSpec(metric=slo.metric, name=slo.name, query=slo.query, max=bound), value


def as_judged(slo: SloSpec, check: Check, kept: Kept, value: float, window: Check) -> Check:
    """The stand-in's check, shown as the relative SLO's: judged against the kept window.
    `window` is the stand-in's threshold check on this window: a sequential check that is not
    yet shown within passes once the window has enough data, as a relative check does."""
    outcome, reason, evidence = check.outcome, check.reason, check.evidence
    shown = outcome is Outcome.INCONCLUSIVE and window.outcome is not Outcome.INCONCLUSIVE
    if shown and evidence is not None:
        outcome = Outcome.PASS
        reason = (
            f"no evidence the canary is beyond it (e-value {evidence.e_value:.3g} < "
            f"{evidence.threshold:.3g}, estimate {_show(evidence.estimate)} over "
            f"{evidence.samples:g} observations)"
        )
    held = "" if check.bound is None else f", held to {check.bound:.4g}"
    where = (
        f"judged against the baseline's last window before this weight ({kept.stats.requests:g} "
        f"requests over {kept.end - kept.start:.0f} s, {slo.subject} {value:.4g} there){held}"
    )
    return replace(
        check,
        slo=slo.describe(),
        outcome=outcome,
        reason=f"{slo.describe()}: {where}: {reason}",
        baseline_value=value,
        baseline_requests=kept.stats.requests,
    )


def cannot_judge(slo: SloSpec, observation: Observation, canary: str, why: str) -> Check:
    """An inconclusive check that names the SLO this weight cannot judge, and why."""
    return Check(
        slo=slo.describe(),
        metric=slo.metric or slo.subject,
        outcome=Outcome.INCONCLUSIVE,
        reason=f"{slo.describe()}: cannot be judged at this weight: the baseline serves no "
        f"traffic here, and {why}",
        canary_value=None,
        baseline_value=None,
        bound=None,
        canary_requests=observation.of(canary).requests,
        baseline_requests=0.0,
    )


def merged(slos: Sequence[SloSpec], judged: Verdict, extra: dict[int, Check]) -> tuple[Check, ...]:
    """`judged`'s checks (one per SLO not in `extra`, in order) with `extra`'s in their places."""
    checks = iter(judged.checks)
    return tuple(extra[i] if i in extra else next(checks) for i in range(len(slos)))


def _show(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"
