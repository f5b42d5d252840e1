"""Is the canary's event rate more than `margin` above the baseline's (an additive bound,
`max_increase`)? An answer that holds at every look, survives bursts, and can fail against a
baseline that never fails.

Why not the ratio test (rate_ratio.py): "canary rate <= baseline rate + d" is a ratio of
1 + d / baseline rate, which has no bound as the baseline's rate goes to 0, so against a clean
baseline no split of the events could ever reject it. This test adds the margin to the baseline
instead of multiplying it.

In an interval the canary served n_c requests with C events and the baseline n_b with B; let
c = margin · n_b, the events the margin would add to the baseline's arm, and π = n_c / (n_c + n_b).
The statistic is the canary's share of the events once the baseline's arm is topped up by c:

    X = C / (C + B + c)    in [0, 1]

Under "canary rate <= baseline rate + margin" in that interval, X has mean at most π. Let a and b
be the expected events of each arm and T = C + B. If each event, or each burst of events, lands
on an arm with the chance the arms' expected events give (the ratio test's assumption,
E[C | T] = T·a/(a + b), however the events cluster), then

    E[X] = a/(a + b) · E[T / (T + c)] <= a/(a + b) · (a + b)/(a + b + c) = a/(a + b + c)

by Jensen's inequality (t / (t + c) is concave), and a/(a + b + c) <= π exactly when
p_c <= p_b + margin. Bursts, drift of the common rate and outages that hit both arms all sit in
T and cancel. At a baseline of zero the statistic is C / (C + c), and a canary failing
half its requests drives it towards 1 against a null of π. (With requests rather than Poisson
counts, E[C | T] is exact at equal rates and at a baseline of zero, and an approximation in between
that is close while the margin is small against the rates.)

Each interval is one bet on X against π (betting.py): the product of 1 + λ(X - π) is a test
supermartingale under the null, so by Ville's inequality it ever reaches 1/alpha with probability
at most alpha (Waudby-Smith & Ramdas, "Estimating means of bounded random variables by betting",
JRSS-B 2023; Ramdas, Grünwald, Vovk & Shafer, "Game-theoretic statistics and safe anytime-valid
inference", Statistical Science 2023; Shafer & Vovk 2019). The mean bound holds over T, not given
T, so the bet's weight may not depend on this interval's events (the ratio test's may): it is the
events C + B + c the interval would hold if each arm kept its rate so far, n_c·p̂_c + n_b·(p̂_b +
margin) (rates 0 before the first interval): predictable, so the guarantee does not depend on it.
A difference of two rates is also what a two-sample e-process for proportions tests (Turner,
Ly & Grünwald, "Generic e-values for exact sequential k-sample tests that allow for optional
stopping", 2021); theirs bets per request, this one per interval, so bursts cannot fake evidence.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from canaryctl.analysis.betting import SCALES, grow, mixture

__all__ = ["RateDifference"]


@dataclass(frozen=True)
class RateDifference:
    """Evidence against "canary rate - baseline rate <= margin" so far: the log wealth per bet
    scale, the counts, and the Mantel-Haenszel sums of the rate difference's estimate."""

    margin: float
    wealth: tuple[float, ...] = (0.0,) * len(SCALES)
    intervals: int = 0
    canary_trials: float = 0.0
    canary_events: float = 0.0
    baseline_trials: float = 0.0
    baseline_events: float = 0.0
    weighted_difference: float = 0.0
    weighted_trials: float = 0.0

    def observe(
        self, canary_events: float, canary_trials: float, baseline_events: float,
        baseline_trials: float,
    ) -> RateDifference:  # fmt: skip
        """Add one interval's counts; an interval in which an arm served nothing says nothing."""
        if canary_trials <= 0 or baseline_trials <= 0:
            return self
        canary_events = min(max(canary_events, 0.0), canary_trials)
        baseline_events = min(max(baseline_events, 0.0), baseline_trials)
        trials = canary_trials + baseline_trials
        share = canary_trials / trials
        topped = self.margin * baseline_trials
        total = canary_events + baseline_events + topped
        wealth = self.wealth
        if total > 0:  # (margin 0 and no events: the interval carries no evidence either way)
            weight = self.expected_events(canary_trials, baseline_trials)
            wealth = grow(wealth, canary_events / total, max(weight, 1.0), share)
        return replace(
            self,
            wealth=wealth,
            intervals=self.intervals + 1,
            canary_trials=self.canary_trials + canary_trials,
            canary_events=self.canary_events + canary_events,
            baseline_trials=self.baseline_trials + baseline_trials,
            baseline_events=self.baseline_events + baseline_events,
            weighted_difference=self.weighted_difference
            + (canary_events * baseline_trials - baseline_events * canary_trials) / trials,
            weighted_trials=self.weighted_trials + canary_trials * baseline_trials / trials,
        )

    def expected_events(self, canary_trials: float, baseline_trials: float) -> float:
        """The bet's weight: the events C + B + c an interval of these trials holds if each arm
        keeps its rate so far (0 before any interval): predictable, so the guarantee does not
        depend on it, and large once the canary has shown a high rate."""
        canary = self.canary_events / self.canary_trials if self.canary_trials > 0 else 0.0
        baseline = self.baseline_events / self.baseline_trials if self.baseline_trials > 0 else 0.0
        return canary_trials * canary + baseline_trials * (baseline + self.margin)

    def e_value(self) -> float:
        """Evidence against "canary rate - baseline rate <= margin"."""
        return mixture(self.wealth)

    def estimate(self) -> float | None:
        """The Mantel-Haenszel rate difference Σ (C·n_b - B·n_c)/N / Σ n_c·n_b/N, which weighs
        each interval by its traffic whatever the shares; None before any interval."""
        if self.weighted_trials <= 0:
            return None
        return self.weighted_difference / self.weighted_trials

    def to_dict(self) -> dict[str, Any]:
        return {
            "margin": self.margin,
            "wealth": list(self.wealth),
            "intervals": self.intervals,
            "canary_trials": self.canary_trials,
            "canary_events": self.canary_events,
            "baseline_trials": self.baseline_trials,
            "baseline_events": self.baseline_events,
            "weighted_difference": self.weighted_difference,
            "weighted_trials": self.weighted_trials,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RateDifference:
        return cls(**{**data, "wealth": tuple(data["wealth"])})
