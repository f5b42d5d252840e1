"""Sequential analysis: every SLO on counts is an anytime-valid test that accumulates over the run.

Each analysis brings the counts since the step's window began; the ledger remembers the last
counts of the window, so only what is new feeds the tests, and the tests' state lives on across
steps (and across a resume, stored with the controller's state). Per SLO:

- relative rates (error_rate, served_error_rate, fallback_rate, rejected_rate,
  filtered_rate): `max_ratio` is a test of the ratio of the canary's event rate to the
  baseline's (rate_ratio.py); `max_increase` a test of their difference, canary rate - baseline
  rate <= max_increase (rate_difference.py), which can fail against a baseline that never
  fails. Both bet once per interval, so bursts of events cannot fake evidence.
- relative latency percentiles: the share of requests slower than a histogram bucket edge near
  the baseline's percentile (chosen on the first interval with baseline latencies), the same
  ratio test. The canary is held to the edge at or above `edge · max_ratio` (or
  `edge + max_increase`): if the canary's latencies were the baseline's stretched by at most the
  margin, it would be slow past that edge no more often than the baseline past its own.
- relative cost_per_query_usd, tokens_per_query: paired per-interval differences of means
  against the allowance (mean_difference.py); an asymptotic guarantee.
- relative quality_score (lower is worse): the same test on the mean score, turned around: each
  interval's difference is (baseline mean - max_decrease) - canary mean, positive when the
  canary scores worse than allowed. An interval counts once both variants have scores in it.
- absolute bounds (`max` or `min`) on a rate, a mean score or a latency percentile: two one-sided
  tests at the bound (bound.py); the check fails when the confidence sequence lies wholly beyond
  the bound, passes when it lies wholly within, and is inconclusive in between. A percentile
  bound p95 <= b is the share of requests slower than b against 5%: slower than the bucket edge
  at or above b to fail, at or below b to pass.
- absolute bounds on cost and tokens per query: the mean-difference test on each interval's
  canary mean minus the bound, failing when its e-value crosses, passing when its confidence
  sequence lies below zero (asymptotic).

With m SLOs tested sequentially each is rejected at e-value >= m / alpha, so that, by a union
bound, a canary within every bound is rolled back with probability at most alpha over the whole
run. A rejection is final: the check fails from then on. A relative check that is not rejected
passes once its window has `min_requests` per variant: a point estimate beyond the margin that
the evidence does not back is noise, which is what threshold checks misfire on. SLOs on a
runbook's own PromQL, an SLO with both `min` and `max`, a latency minimum, and a bound at the end
of a rate's range (`max: 0`) stay threshold checks on the window and are not counted in m.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from canaryctl.analysis.bound import BoundTest
from canaryctl.analysis.counts import RATE_COUNTS, rate_counts
from canaryctl.analysis.judge import judge_slo
from canaryctl.analysis.mean_difference import MeanDifference
from canaryctl.analysis.rate_difference import RateDifference
from canaryctl.analysis.rate_ratio import RateRatio
from canaryctl.analysis.verdict import Check, Evidence, Outcome, Verdict
from canaryctl.metrics.base import Observation, VariantStats
from canaryctl.metrics.measures import as_latency, histogram_quantile, unknown_parts
from canaryctl.runbook.rollout import AnalysisSpec, SloSpec
from canaryctl.slo_metrics import HISTOGRAMS, SLO_METRICS, Mean, Quantile

__all__ = ["judge_sequential", "sequential_metric"]

_QUANTILES = {
    name: m.formula.q for name, m in SLO_METRICS.items() if isinstance(m.formula, Quantile)
}
_MEANS: dict[str, Mean] = {
    name: m.formula for name, m in SLO_METRICS.items() if isinstance(m.formula, Mean)
}
_TOTALS: dict[str, Callable[[VariantStats], float]] = {n: m.total for n, m in _MEANS.items()}
_DENOMINATORS: dict[str, Callable[[VariantStats], float]] = {n: m.count for n, m in _MEANS.items()}
"""Each metric's formula (canaryctl.slo_metrics): latency quantiles, per-query totals and what
they are divided by; rates' events and trials come from analysis.counts."""
_SCORES = frozenset(n for n in _MEANS if n == "quality_score" or SLO_METRICS[n].paired)
"""The means bounded in [0, 1] (a score, a pairwise win rate), so an absolute bound on one is
a bound on a rate."""


def sequential_metric(slo: SloSpec) -> bool:
    """Is this SLO tested sequentially, or judged by threshold on the window?"""
    if slo.metric is None:
        return False
    if slo.relative:
        return any(slo.metric in kind for kind in (RATE_COUNTS, _QUANTILES, _TOTALS))
    if slo.max is not None and slo.min is not None:
        return False
    if slo.metric in _QUANTILES:
        return slo.max is not None and slo.max > 0
    if slo.metric in RATE_COUNTS or slo.metric in _SCORES:
        bound = slo.max if slo.max is not None else slo.min
        return bound is not None and 0 < bound < 1
    return slo.metric in _TOTALS


# -- per-SLO tests --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _CountTest:
    """A ratio-of-rates test: a rate's `max_ratio`, or a latency percentile's share of slow
    requests. Latency `edges` are fixed by the first interval with baseline latencies;
    `untestable` says why the SLO falls back to its threshold."""

    edges: tuple[float, float] | None = None
    ratio: RateRatio | None = None
    rejected: bool = False
    untestable: str | None = None

    def observe(self, slo: SloSpec, canary: VariantStats, baseline: VariantStats) -> _CountTest:
        if self.untestable is not None:
            return self
        if self.ratio is None:
            started = self._start(slo, baseline)
            if started.ratio is None or slo.metric not in RATE_COUNTS:
                return started
            return started.observe(slo, canary, baseline)
        if slo.metric in RATE_COUNTS:
            (canary_events, canary_trials) = rate_counts(slo.metric, canary)
            (baseline_events, baseline_trials) = rate_counts(slo.metric, baseline)
        else:
            assert self.edges is not None  # a latency test starts with its edges
            canary_slow, baseline_slow = (
                _slower(canary, self.edges[1]),
                _slower(baseline, self.edges[0]),
            )
            if canary_slow is None or baseline_slow is None:
                return self
            (canary_events, canary_trials) = canary_slow
            (baseline_events, baseline_trials) = baseline_slow
        if canary_trials <= 0 or baseline_trials <= 0:
            return self
        share = canary_trials / (canary_trials + baseline_trials)
        return replace(self, ratio=self.ratio.observe(canary_events, baseline_events, share))

    def _start(self, slo: SloSpec, baseline: VariantStats) -> _CountTest:
        """A rate's ratio is tested from the first interval on, its grid at `max_ratio`.
        Latency first picks its edges on this interval's baseline, and is tested from the next."""
        if slo.metric in RATE_COUNTS:
            return replace(self, ratio=RateRatio(slo.max_ratio or 1.0))
        if slo.metric not in _QUANTILES:
            return self
        quantile = histogram_quantile(_QUANTILES[slo.metric], baseline.latency_buckets)
        finite = [bound for bound, _ in baseline.latency_buckets if math.isfinite(bound)]
        if quantile is None or not finite:
            return self  # no latencies yet: try again on a later interval
        edge = min(finite, key=lambda bound: abs(bound - quantile))
        if slo.max_ratio is not None:
            allowed = edge * slo.max_ratio
        else:
            allowed = edge + (slo.max_increase or 0.0)
        canary_edge = next((b for b in finite if b >= allowed * (1 - 1e-9)), None)
        if canary_edge is None:
            return replace(
                self,
                untestable=f"no latency bucket edge at or above {allowed:.4g}s to hold the "
                "canary to; judged by threshold",
            )
        return replace(self, edges=(edge, canary_edge), ratio=RateRatio(1.0))

    def evidence(self, slo: SloSpec, alpha: float) -> Evidence | None:
        if self.ratio is None:
            return None
        margin = self.ratio.margin
        upper = self.ratio.upper_bound(alpha)
        if self.edges is None:
            events = slo.metric.removesuffix("_rate")
            test = f"{events} rate ratio canary/baseline <= {margin:.4g}"
        else:
            test = (
                f"ratio of shares slower than {self.edges[1]:g}s (canary) and "
                f"{self.edges[0]:g}s (baseline) <= 1"
            )
        estimate = self.ratio.estimate()
        return Evidence(
            test=test,
            e_value=self.ratio.e_value_above(margin),
            threshold=1 / alpha,
            estimate=estimate,
            lower=self.ratio.lower_bound(alpha),
            upper=None if math.isinf(upper) else upper,
            samples=self.ratio.events,
            # An unknown ratio (no events on the baseline's side) is within only while the
            # canary has had none either.
            within=self.ratio.weighted_canary <= 0 if estimate is None else estimate <= margin,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "count",
            "edges": None if self.edges is None else list(self.edges),
            "ratio": None if self.ratio is None else self.ratio.to_dict(),
            "rejected": self.rejected,
            "untestable": self.untestable,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> _CountTest:
        edges, ratio = data["edges"], data["ratio"]
        # A ledger from before the per-interval test holds per-event likelihoods, which cannot
        # become bets: that test starts afresh, which skips data and so keeps the guarantee.
        if ratio is not None and "above" not in ratio:
            ratio = None
        return cls(
            edges=None if edges is None else (edges[0], edges[1]),
            ratio=None if ratio is None else RateRatio.from_dict(ratio),
            rejected=data["rejected"],
            untestable=data["untestable"],
        )


@dataclass(frozen=True)
class _DifferenceTest:
    """A rate's `max_increase`: canary rate - baseline rate <= max_increase, bet on per
    interval (rate_difference.py), tested from the first interval with both arms served."""

    difference: RateDifference | None = None
    rejected: bool = False

    def observe(
        self, slo: SloSpec, canary: VariantStats, baseline: VariantStats
    ) -> _DifferenceTest:
        assert slo.metric is not None and slo.max_increase is not None
        test = self.difference or RateDifference(slo.max_increase)
        canary_events, canary_trials = rate_counts(slo.metric, canary)
        baseline_events, baseline_trials = rate_counts(slo.metric, baseline)
        test = test.observe(canary_events, canary_trials, baseline_events, baseline_trials)
        return replace(self, difference=test if test.intervals else None)

    def evidence(self, slo: SloSpec, alpha: float) -> Evidence | None:
        if self.difference is None:
            return None
        events = (slo.metric or "").removesuffix("_rate")
        estimate = self.difference.estimate()
        return Evidence(
            test=f"{events} rate difference canary - baseline <= {self.difference.margin:g}",
            e_value=self.difference.e_value(),
            threshold=1 / alpha,
            estimate=estimate,
            lower=None,
            upper=None,
            samples=self.difference.intervals,
            within=estimate is None or estimate <= self.difference.margin,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "difference",
            "difference": None if self.difference is None else self.difference.to_dict(),
            "rejected": self.rejected,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> _DifferenceTest:
        test = data["difference"]
        return cls(None if test is None else RateDifference.from_dict(test), data["rejected"])


@dataclass(frozen=True)
class _MeanTest:
    """A difference-of-means test on per-query cost or tokens, or on the mean quality score."""

    difference: MeanDifference = field(default_factory=MeanDifference)
    rejected: bool = False

    def observe(self, slo: SloSpec, canary: VariantStats, baseline: VariantStats) -> _MeanTest:
        total = _TOTALS[slo.metric]
        count = _DENOMINATORS[slo.metric]
        if count(canary) <= 0 or count(baseline) <= 0:
            return self
        if unknown_parts(slo.metric, canary) > 0 or unknown_parts(slo.metric, baseline) > 0:
            return self  # an interval's cost with unpriced answers is no measurement
        canary_mean = total(canary) / count(canary)
        baseline_mean = total(baseline) / count(baseline)
        if slo.max_decrease is not None:
            floor = baseline_mean - slo.max_decrease
            return replace(self, difference=self.difference.observe(floor - canary_mean))
        if slo.max_ratio is not None:
            allowed = baseline_mean * slo.max_ratio
        else:
            allowed = baseline_mean + (slo.max_increase or 0.0)
        return replace(self, difference=self.difference.observe(canary_mean - allowed))

    def evidence(self, slo: SloSpec, alpha: float) -> Evidence:
        shortfall = slo.max_decrease is not None
        measured = (
            f"allowance minus mean of {slo.metric}"
            if shortfall
            else (f"mean of {slo.metric} minus its allowance")
        )
        evidence = _mean_evidence(
            f"{measured}, per interval, <= 0 (asymptotic)", self.difference, alpha
        )
        return replace(evidence, within=evidence.estimate is None or evidence.estimate <= 0)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "mean", "difference": self.difference.to_dict(), "rejected": self.rejected}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> _MeanTest:
        return cls(MeanDifference.from_dict(data["difference"]), data["rejected"])


@dataclass(frozen=True)
class _BoundCheck:
    """An absolute bound on a rate, a mean score or a latency percentile (bound.py). A latency
    bound is held by the histogram's `edges` at or below and at or above it; `untestable` says
    why the SLO falls back to its threshold."""

    test: BoundTest | None = None
    edges: tuple[float, float] | None = None
    rejected: bool = False
    untestable: str | None = None

    def observe(self, slo: SloSpec, canary: VariantStats, baseline: VariantStats) -> _BoundCheck:
        if self.untestable is not None:
            return self
        if self.test is None:
            started = self._start(slo, canary)
            return self if started == self else started.observe(slo, canary, baseline)
        if self.edges is not None:
            slower, slower_within = _slower(canary, self.edges[1]), _slower(canary, self.edges[0])
            if slower is None or slower_within is None:
                return self
            return replace(self, test=self.test.observe(slower[1], slower[0], slower_within[0]))
        if slo.metric in _SCORES:
            events, trials = _TOTALS[slo.metric](canary), _DENOMINATORS[slo.metric](canary)
        else:
            events, trials = rate_counts(slo.metric, canary)
        if slo.max is None:
            events = trials - events  # an "at least": the test runs on the shortfall
        return replace(self, test=self.test.observe(trials, events))

    def _start(self, slo: SloSpec, canary: VariantStats) -> _BoundCheck:
        """A rate or score is tested from the first interval; latency first needs the canary's
        histogram, to pick the edges around the bound."""
        if slo.metric not in _QUANTILES:
            bound = slo.max if slo.max is not None else 1 - (slo.min or 0.0)
            paired = slo.metric is not None and SLO_METRICS[slo.metric].paired
            return replace(self, test=BoundTest.near(bound) if paired else BoundTest(bound))
        finite = [bound for bound, _ in canary.latency_buckets if math.isfinite(bound)]
        if not finite:
            return self  # no latencies yet: try again on a later interval
        limit = slo.max or 0.0
        below = [b for b in finite if b <= limit * (1 + 1e-9)]
        above = [b for b in finite if b >= limit * (1 - 1e-9)]
        if not below or not above:
            side = "at or below" if not below else "at or above"
            return replace(
                self,
                untestable=f"no latency bucket edge {side} {limit:g}s; judged by threshold",
            )
        return replace(
            self, test=BoundTest(1 - _QUANTILES[slo.metric]), edges=(max(below), min(above))
        )

    def within(self, alpha: float) -> bool:
        return self.test is not None and self.test.e_value_within() >= 1 / alpha

    def evidence(self, slo: SloSpec, alpha: float) -> Evidence | None:
        if self.test is None or self.test.trials <= 0:
            return None
        estimate = self.test.estimate()
        if self.edges is not None:
            test = (
                f"share slower than {self.edges[1]:g}s (to fail) and than {self.edges[0]:g}s "
                f"(to pass) against {self.test.bound:.4g}"
            )
        else:
            if slo.max is None and estimate is not None:
                estimate = 1 - estimate
            test = f"{slo.describe()}, per interval to fail, per request to pass"
        return Evidence(
            test=test,
            e_value=self.test.e_value_beyond(),
            threshold=1 / alpha,
            estimate=estimate,
            lower=None,
            upper=None,
            samples=self.test.trials,
            e_value_within=self.test.e_value_within(),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "bound",
            "test": None if self.test is None else self.test.to_dict(),
            "edges": None if self.edges is None else list(self.edges),
            "rejected": self.rejected,
            "untestable": self.untestable,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> _BoundCheck:
        test, edges = data["test"], data["edges"]
        return cls(
            test=None if test is None else BoundTest.from_dict(test),
            edges=None if edges is None else (edges[0], edges[1]),
            rejected=data["rejected"],
            untestable=data["untestable"],
        )


@dataclass(frozen=True)
class _LevelTest:
    """An absolute bound on cost or tokens per query: each interval's canary mean minus the
    bound (the bound minus the mean, for a minimum), positive when beyond it."""

    difference: MeanDifference = field(default_factory=MeanDifference)
    rejected: bool = False

    def observe(self, slo: SloSpec, canary: VariantStats, baseline: VariantStats) -> _LevelTest:
        count = _DENOMINATORS[slo.metric](canary)
        if count <= 0 or unknown_parts(slo.metric, canary) > 0:
            return self
        mean = _TOTALS[slo.metric](canary) / count
        excess = mean - slo.max if slo.max is not None else (slo.min or 0.0) - mean
        return replace(self, difference=self.difference.observe(excess))

    def within(self, alpha: float) -> bool:
        return self.difference.bounds(alpha)[1] < 0

    def evidence(self, slo: SloSpec, alpha: float) -> Evidence | None:
        if self.difference.intervals == 0:
            return None
        side = "mean minus the maximum" if slo.max is not None else "the minimum minus mean"
        return _mean_evidence(
            f"{slo.metric}: {side}, per interval, <= 0 (asymptotic)", self.difference, alpha
        )

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "level", "difference": self.difference.to_dict(), "rejected": self.rejected}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> _LevelTest:
        return cls(MeanDifference.from_dict(data["difference"]), data["rejected"])


def _mean_evidence(test: str, difference: MeanDifference, alpha: float) -> Evidence:
    """What a per-interval mean-difference test shows: its e-value and confidence sequence."""
    lower, upper = difference.bounds(alpha)
    return Evidence(
        test=test,
        e_value=difference.e_value(),
        threshold=1 / alpha,
        estimate=difference.mean(),
        lower=None if math.isinf(lower) else lower,
        upper=None if math.isinf(upper) else upper,
        samples=difference.intervals,
    )


_Test = _CountTest | _DifferenceTest | _MeanTest | _BoundCheck | _LevelTest
_KINDS: dict[str, Callable[[dict[str, Any]], _Test]] = {
    "count": _CountTest.from_dict,
    "difference": _DifferenceTest.from_dict,
    "mean": _MeanTest.from_dict,
    "bound": _BoundCheck.from_dict,
    "level": _LevelTest.from_dict,
}


def _new_test(slo: SloSpec) -> _Test:
    if not slo.relative:
        bounded = slo.metric not in _SCORES and slo.metric in _TOTALS
        return _LevelTest() if bounded else _BoundCheck()
    if slo.metric in RATE_COUNTS and slo.max_increase is not None:
        return _DifferenceTest()
    return _MeanTest() if slo.metric in _TOTALS else _CountTest()


def _test_from_dict(data: dict[str, Any]) -> _Test:
    return _KINDS[data["kind"]](data)


# -- the ledger: counts already seen, and the tests --------------------------------------------


@dataclass(frozen=True)
class _Ledger:
    window: float | None = None
    seen: dict[str, VariantStats] = field(default_factory=dict)
    tests: dict[str, _Test] = field(default_factory=dict)

    def new_counts(self, observation: Observation, variant: str) -> VariantStats:
        """What `variant` did since the last analysis of the same window (all of a new one)."""
        current = observation.of(variant)
        if observation.start != self.window or variant not in self.seen:
            return current
        return _minus(current, self.seen[variant])

    def to_dict(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "seen": {variant: _fields_of(stats) for variant, stats in self.seen.items()},
            "tests": {key: test.to_dict() for key, test in self.tests.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> _Ledger:
        if not data:
            return cls()
        seen = {
            variant: VariantStats(
                **{**stats, **{h: tuple(tuple(b) for b in stats.get(h, ())) for h in HISTOGRAMS}}
            )
            for variant, stats in data["seen"].items()
        }
        tests = {key: _test_from_dict(test) for key, test in data["tests"].items()}
        return cls(data["window"], seen, tests)


def _fields_of(stats: VariantStats) -> dict[str, Any]:
    """`asdict` without its deep copy: every field is a number or a tuple of numbers, none
    mutable, and the copy was a third of a simulated rollout's time (canaryctl plan)."""
    return {f.name: getattr(stats, f.name) for f in fields(stats)}


def _minus(current: VariantStats, earlier: VariantStats) -> VariantStats:
    """Counter differences, never negative (a restarted gateway resets its counters); a
    histogram whose bounds changed gives no observations for the interval."""
    histograms = {}
    for name in HISTOGRAMS:
        now_buckets, earlier_buckets = getattr(current, name), getattr(earlier, name)
        buckets: tuple[tuple[float, float], ...] = ()
        if [b for b, _ in now_buckets] == [b for b, _ in earlier_buckets]:
            buckets = tuple(
                (bound, max(now - before, 0.0))
                for (bound, now), (_, before) in zip(now_buckets, earlier_buckets, strict=True)
            )
        histograms[name] = buckets
    counts = {
        f.name: max(getattr(current, f.name) - getattr(earlier, f.name), 0.0)
        for f in fields(VariantStats)
        if f.name not in HISTOGRAMS
    }
    return VariantStats(**counts, **histograms)


def _slower(stats: VariantStats, edge: float) -> tuple[float, float] | None:
    """(requests slower than `edge`, requests in the histogram); None if it lacks that bound."""
    if not stats.latency_buckets:
        return None
    total = stats.latency_buckets[-1][1]
    for bound, count in stats.latency_buckets:
        if math.isclose(bound, edge, rel_tol=1e-9):
            return max(total - count, 0.0), total
    return None


# -- the judge ----------------------------------------------------------------------------------


def judge_sequential(
    slos: Sequence[SloSpec],
    analysis: AnalysisSpec,
    observation: Observation,
    state: dict[str, Any],
    *,
    baseline: str,
    canary: str,
    baseline_served: bool = True,
) -> tuple[Verdict, dict[str, Any]]:
    """The verdict on this analysis and the ledger to keep for the next; `state` is the ledger
    the previous analysis returned ({} at the start of a run)."""
    ledger = _Ledger.from_dict(state)
    canary_new = ledger.new_counts(observation, canary)
    baseline_new = ledger.new_counts(observation, baseline)
    tested = sum(1 for slo in slos if sequential_metric(slo))
    alpha = analysis.alpha / max(tested, 1)
    tests = dict(ledger.tests)
    checks: list[Check] = []
    for index, slo in enumerate(slos):
        if not baseline_served and slo.relative:
            continue
        window = judge_slo(
            slo, analysis.min_requests, observation, baseline=baseline, canary=canary
        )
        if not sequential_metric(slo):
            checks.append(window)
            continue
        key = f"{index}:{slo.describe()}"
        test = tests.get(key)
        if test is None or type(test) is not type(_new_test(slo)):
            # A ledger from a version that tested this SLO another way (a rate's max_increase
            # as a ratio) starts afresh: skipping data keeps the guarantee.
            test = _new_test(slo)
        test = test.observe(
            slo, as_latency(slo.metric, canary_new), as_latency(slo.metric, baseline_new)
        )
        evidence = test.evidence(slo, alpha)
        if evidence is not None and (test.rejected or evidence.e_value >= evidence.threshold):
            test = replace(test, rejected=True)
        tests[key] = test
        if isinstance(test, _BoundCheck | _LevelTest):
            checks.append(_absolute_check(slo, window, test, evidence, alpha))
        else:
            checks.append(_sequential_check(slo, window, test, evidence))
    kept = _Ledger(
        observation.start,
        {**ledger.seen, canary: observation.of(canary), baseline: observation.of(baseline)},
        tests,
    )
    verdict = Verdict.of(tuple(checks), observation.start, observation.end)
    return verdict, kept.to_dict()


def _sequential_check(slo: SloSpec, window: Check, test: _Test, evidence: Evidence | None) -> Check:
    """The window's check, decided by the test instead of the window's point estimate."""
    if isinstance(test, _CountTest) and test.untestable is not None:
        return replace(window, reason=f"{window.reason} ({test.untestable})")
    if evidence is None:
        if window.outcome is Outcome.INCONCLUSIVE:
            return window
        return replace(
            window,
            outcome=Outcome.INCONCLUSIVE,
            reason=f"{slo.describe()}: not tested yet (no interval with data from both variants)",
        )
    crossed = evidence.e_value >= evidence.threshold
    stand = (
        f"e-value {evidence.e_value:.3g} {'>=' if crossed else '<'} {evidence.threshold:.3g}"
        f", estimate {_show(evidence.estimate)} in [{_show(evidence.lower)}, "
        f"{_show(evidence.upper)}] over {evidence.samples:g} "
        f"{'events' if isinstance(test, _CountTest) else 'intervals'}"
    )
    if test.rejected and not crossed:
        stand += "; it crossed the threshold earlier in the run, which decided"
    if test.rejected:
        return replace(
            window,
            outcome=Outcome.FAIL,
            reason=f"{slo.describe()}: the canary is worse than allowed ({evidence.test}: {stand})",
            evidence=evidence,
        )
    if window.outcome is Outcome.INCONCLUSIVE:
        return replace(window, reason=f"{window.reason}; {stand}", evidence=evidence)
    # The canary may well be worse than the baseline (12x its error rate, within an added 1%):
    # what the test knows is that it is not shown worse than the SLO allows, beside the values.
    seen = ""
    if window.canary_value is not None and window.baseline_value is not None:
        seen = f"canary {window.canary_value:.4g} vs baseline {window.baseline_value:.4g}, "
    return replace(
        window,
        outcome=Outcome.PASS,
        reason=f"{slo.describe()}: {seen}no evidence the canary is worse than allowed ({stand})",
        evidence=evidence,
    )


def _absolute_check(
    slo: SloSpec,
    window: Check,
    test: _BoundCheck | _LevelTest,
    evidence: Evidence | None,
    alpha: float,
) -> Check:
    """Fail when the confidence sequence lies wholly beyond the bound, pass when it lies wholly
    within (and the window has `min_requests`), else inconclusive: never the point estimate."""
    if isinstance(test, _BoundCheck) and test.untestable is not None:
        return replace(window, reason=f"{window.reason} ({test.untestable})")
    if evidence is None:
        if window.outcome is Outcome.INCONCLUSIVE:
            return window
        return replace(
            window,
            outcome=Outcome.INCONCLUSIVE,
            reason=f"{slo.describe()}: not tested yet (no interval with canary data)",
        )
    crossed = evidence.e_value >= evidence.threshold
    within = test.within(alpha)
    if evidence.e_value_within is not None:
        against = f", {evidence.e_value_within:.3g} that it is within"
    else:
        against = f" in [{_show(evidence.lower)}, {_show(evidence.upper)}]"
    stand = (
        f"e-value {evidence.e_value:.3g} {'>=' if crossed else '<'} {evidence.threshold:.3g} "
        f"that it is beyond{against}, estimate {_show(evidence.estimate)} over "
        f"{evidence.samples:g} {'intervals' if isinstance(test, _LevelTest) else 'observations'}"
    )
    if test.rejected and not crossed:
        stand += "; it crossed the threshold earlier in the run, which decided"
    if test.rejected:
        return replace(
            window,
            outcome=Outcome.FAIL,
            reason=f"{slo.describe()}: the canary is beyond its bound ({evidence.test}: {stand})",
            evidence=evidence,
        )
    if window.outcome is Outcome.INCONCLUSIVE:
        return replace(window, reason=f"{window.reason}; {stand}", evidence=evidence)
    if within:
        return replace(
            window,
            outcome=Outcome.PASS,
            reason=f"{slo.describe()}: the canary is within its bound ({stand})",
            evidence=evidence,
        )
    return replace(
        window,
        outcome=Outcome.INCONCLUSIVE,
        reason=f"{slo.describe()}: not yet shown within its bound ({stand})",
        evidence=evidence,
    )


def _show(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"
