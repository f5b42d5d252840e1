"""Comparing variations on a fixed split: a confidence sequence for each difference, and the rule
that names a winner.

An experiment serves two or more variations of a flag on a split that does not move, and every
analysis interval gives each variation one value per metric (its error rate, p95, cost per query,
mean quality score, a custom PromQL number in that interval). Each difference a - b is tracked as
the paired per-interval difference d = value(a) - value(b): pairing within the interval cancels
what both arms share at that time (time of day, prompt mix, a provider's bad minute), and the
estimand is the mean of d over intervals, the effect a user of `a` rather than `b` sees.

The interval is the confidence sequence of MeanDifference (Robbins' normal mixture with the
variance estimated from the differences: Waudby-Smith, Arnold, Wu & Ramdas, "Time-uniform central
limit theory and asymptotic confidence sequences", 2021). It covers the true difference at every
look at once, so `experiment status` may be read at any time and the run may stop the moment a
winner shows, without the peeking problem of a fixed-horizon test. Its guarantee is asymptotic
in the number of intervals, so no interval is finite before MIN_INTERVALS paired intervals
(tests/test_experiment_analysis.py measures the coverage over simulated runs).

The decision uses one family of sequences, Bonferroni-corrected so that all of them hold together
with probability at least 1 - alpha: the primary metric for every pair of variations, and each
guard metric for every variation against the control. A variation W wins when

- on the primary metric, W's interval against every other variation lies wholly on the better
  side of 0 (W is shown better than each of them), and
- W is the control, or on every guard metric its interval against the control lies wholly
  within the guard's margin (W is shown no worse than the control by more than the margin).

So the chance of naming a winner that is not truly better on the primary, or truly worse than its
margin on a guard, is at most alpha, however long the experiment runs and however often it is
read. Per-tier intervals are computed the same way at the same per-sequence level, for reading
only: the decision rests on all traffic.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from canaryctl.analysis.mean_difference import MeanDifference
from canaryctl.metrics.base import Observation
from canaryctl.metrics.measures import measure, samples
from canaryctl.slo_metrics import SLO_METRICS, Rate

__all__ = [
    "MIN_INTERVALS",
    "Decision",
    "Design",
    "Effect",
    "Evidence",
    "MetricRule",
    "decide",
    "effects",
    "interval_floors",
    "interval_values",
]

MIN_INTERVALS = 10
"""Paired intervals before a difference's interval is finite: below this the estimated variance
is too unsteady for the asymptotic sequence to keep its coverage."""

IntervalValues = Mapping[str, Mapping[str, float]]
"""One interval's value per metric name, per variation."""


@dataclass(frozen=True)
class MetricRule:
    """One metric of an experiment: `builtin` names an SLO metric (canaryctl.slo_metrics), else
    the value is the custom query's of the same `name`. A guard has a `margin`: how much worse
    than the control, in the metric's unit, a winner may be."""

    name: str
    higher_is_better: bool
    builtin: str | None = None
    margin: float | None = None

    def worse(self, difference: float) -> float:
        """How much worse `difference` (variation - control) is; negative when better."""
        return -difference if self.higher_is_better else difference


@dataclass(frozen=True)
class Design:
    """What is compared: `variations` are the values the gateway labels metrics with."""

    variations: tuple[str, ...]
    control: str
    primary: MetricRule
    guards: tuple[MetricRule, ...] = ()
    tiers: tuple[str, ...] = ()
    alpha: float = 0.05
    min_samples: float = 10.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Design:
        return cls(
            variations=tuple(data["variations"]),
            control=data["control"],
            primary=MetricRule(**data["primary"]),
            guards=tuple(MetricRule(**g) for g in data["guards"]),
            tiers=tuple(data["tiers"]),
            alpha=float(data["alpha"]),
            min_samples=float(data["min_samples"]),
        )

    @property
    def metrics(self) -> tuple[MetricRule, ...]:
        return (self.primary, *self.guards)

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """Every unordered pair, in document order: the primary metric's comparisons."""
        v = self.variations
        return [(v[i], v[j]) for i in range(len(v)) for j in range(i + 1, len(v))]

    @property
    def treatments(self) -> list[str]:
        return [v for v in self.variations if v != self.control]

    @property
    def family_size(self) -> int:
        """The sequences the decision rests on: primary pairs, guards against the control."""
        return len(self.pairs) + len(self.treatments) * len(self.guards)

    @property
    def alpha_each(self) -> float:
        return self.alpha / self.family_size


def interval_values(design: Design, observation: Observation) -> dict[str, dict[str, float]]:
    """Each metric's value per variation in one interval's counts; a variation with fewer than
    `min_samples` samples for a metric (scored answers for quality, requests for the rest) or
    without a value has none, and its pairs skip the interval for that metric."""
    values: dict[str, dict[str, float]] = {}
    for rule in design.metrics:
        row: dict[str, float] = {}
        for variation in design.variations:
            stats = observation.of(variation)
            if samples(rule.builtin, stats) < design.min_samples:
                continue
            if rule.builtin is not None:
                value = measure(rule.builtin, stats)
            else:
                value = observation.slo_value(rule.name, variation)
            if value is not None and math.isfinite(value):
                row[variation] = value
        values[rule.name] = row
    return values


def interval_floors(design: Design, observation: Observation) -> dict[str, dict[str, float]]:
    """The least variance each rate's value can have in one interval: binomial noise at the
    rate shrunk half an event towards 1/2 ((k + 1/2) / (n + 1)), over its n trials. Two arms
    with no errors in any interval still differ by chance, and the interval must say so."""
    floors: dict[str, dict[str, float]] = {}
    for rule in design.metrics:
        formula = SLO_METRICS[rule.builtin].formula if rule.builtin is not None else None
        if not isinstance(formula, Rate):
            continue
        row = {}
        for variation in design.variations:
            stats = observation.of(variation)
            trials = formula.trials(stats)
            if trials >= design.min_samples and trials > 0:
                shrunk = (formula.events(stats) + 0.5) / (trials + 1)
                row[variation] = shrunk * (1 - shrunk) / trials
        floors[rule.name] = row
    return floors


Key = tuple[str, str | None, str, str]
"""(metric, tier or None for all traffic, variation a, variation b): the difference a - b."""


@dataclass(frozen=True)
class Evidence:
    """The paired differences so far, per key, and each variation's mean level per metric."""

    differences: Mapping[Key, MeanDifference] = field(default_factory=dict)
    levels: Mapping[tuple[str, str | None, str], tuple[float, int]] = field(default_factory=dict)
    intervals: int = 0

    def observe(
        self,
        design: Design,
        overall: IntervalValues,
        tiers: Mapping[str, IntervalValues],
        floors: Mapping[str | None, IntervalValues] | None = None,
    ) -> Evidence:
        """Add one interval: values for all traffic, and per tier; `floors` (per scope, None
        for all traffic) the least variance of each value, from `interval_floors`."""
        differences = dict(self.differences)
        levels = dict(self.levels)
        scopes: list[tuple[str | None, IntervalValues]] = [(None, overall)]
        scopes += [(tier, tiers[tier]) for tier in design.tiers if tier in tiers]
        for tier, values in scopes:
            floor = (floors or {}).get(tier, {})
            for rule in design.metrics:
                row = values.get(rule.name, {})
                least = floor.get(rule.name, {})
                for variation, value in row.items():
                    total, n = levels.get((rule.name, tier, variation), (0.0, 0))
                    levels[(rule.name, tier, variation)] = (total + value, n + 1)
                for a, b in _compared(design, rule):
                    if a in row and b in row:
                        key = (rule.name, tier, a, b)
                        differences[key] = differences.get(key, MeanDifference()).observe(
                            row[a] - row[b], least.get(a, 0.0) + least.get(b, 0.0)
                        )
        return Evidence(differences, levels, self.intervals + 1)

    def interval(self, metric: str, tier: str | None, a: str, b: str, alpha: float) -> Effect:
        """The difference a - b on `metric` with its confidence sequence at level `alpha`."""
        if (metric, tier, a, b) in self.differences:
            diff, sign = self.differences[(metric, tier, a, b)], 1.0
        else:
            diff, sign = self.differences.get((metric, tier, b, a), MeanDifference()), -1.0
        mean = diff.mean()
        low, high = (-math.inf, math.inf)
        if diff.intervals >= MIN_INTERVALS:
            low, high = diff.bounds(alpha)
        if sign < 0:
            low, high = -high, -low
        return Effect(
            metric=metric,
            tier=tier,
            variation=a,
            against=b,
            estimate=None if mean is None else sign * mean,
            low=low,
            high=high,
            intervals=diff.intervals,
        )

    def level(self, metric: str, tier: str | None, variation: str) -> float | None:
        """The variation's mean per-interval value on `metric`."""
        total, n = self.levels.get((metric, tier, variation), (0.0, 0))
        return total / n if n else None


def _compared(design: Design, rule: MetricRule) -> list[tuple[str, str]]:
    if rule is design.primary:
        return design.pairs
    return [(v, design.control) for v in design.treatments]


@dataclass(frozen=True)
class Effect:
    """variation - against on one metric: the mean paired difference and its confidence
    sequence (infinite until MIN_INTERVALS paired intervals)."""

    metric: str
    tier: str | None
    variation: str
    against: str
    estimate: float | None
    low: float
    high: float
    intervals: int

    def to_dict(self) -> dict[str, object]:
        def finite(x: float) -> float | None:
            return x if math.isfinite(x) else None

        return {
            "metric": self.metric,
            "tier": self.tier,
            "variation": self.variation,
            "against": self.against,
            "estimate": self.estimate,
            "low": finite(self.low),
            "high": finite(self.high),
            "intervals": self.intervals,
        }


@dataclass(frozen=True)
class Decision:
    """The winner, or None; `standing` says for each variation why it is or is not it."""

    winner: str | None
    reason: str
    standing: Mapping[str, str]

    def to_dict(self) -> dict[str, object]:
        return {"winner": self.winner, "reason": self.reason, "standing": dict(self.standing)}


def _shown_better(rule: MetricRule, effect: Effect) -> bool:
    """The whole interval of variation - against lies on the better side of 0."""
    return effect.low > 0 if rule.higher_is_better else effect.high < 0


def _guard_problem(rule: MetricRule, effect: Effect) -> str | None:
    """None when the interval shows the variation within the guard's margin of the control."""
    margin = rule.margin or 0.0
    worst = -effect.low if rule.higher_is_better else effect.high
    if worst <= margin:
        return None
    best = -effect.high if rule.higher_is_better else effect.low
    if best > margin:
        return f"{rule.name} shown worse than the control by more than {margin:g}"
    return f"{rule.name} not yet shown within {margin:g} of the control"


def decide(design: Design, evidence: Evidence) -> Decision:
    """The winner by the rule in the module docstring, from all traffic's intervals."""
    alpha = design.alpha_each
    primary = design.primary
    standing: dict[str, str] = {}
    winner = None
    for variation in design.variations:
        not_beaten = [
            other
            for other in design.variations
            if other != variation
            and not _shown_better(
                primary, evidence.interval(primary.name, None, variation, other, alpha)
            )
        ]
        if not_beaten:
            standing[variation] = f"not shown better on {primary.name} than {', '.join(not_beaten)}"
            continue
        problems = []
        if variation != design.control:
            for rule in design.guards:
                effect = evidence.interval(rule.name, None, variation, design.control, alpha)
                problem = _guard_problem(rule, effect)
                if problem is not None:
                    problems.append(problem)
        if problems:
            standing[variation] = f"better on {primary.name}, but " + "; ".join(problems)
            continue
        standing[variation] = f"better on {primary.name} than every other variation"
        winner = variation
    if winner is None:
        return Decision(None, "no variation is shown better than all others yet", standing)
    guards = " with every guard within its margin" if design.guards else ""
    if winner == design.control:
        guards = " (the control)"
    reason = f"{winner} is better on {primary.name} than every other variation{guards}"
    return Decision(winner, reason, standing)


def effects(design: Design, evidence: Evidence) -> list[Effect]:
    """Every variation against the control on every metric, for all traffic and per tier, at
    the decision family's per-sequence level."""
    return [
        evidence.interval(rule.name, tier, variation, design.control, design.alpha_each)
        for rule in design.metrics
        for tier in (None, *design.tiers)
        for variation in design.treatments
    ]
