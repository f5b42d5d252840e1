"""Is the canary's event rate more than `margin` times the baseline's? An answer that holds at
every look and survives bursts.

Why condition on each interval's events: in an interval where the canary served a share π of the
requests and F events (errors, slow requests) happened on both arms together, the canary's part
C of them has mean Fθ, θ = πr / (πr + 1 - π), r being the ratio of the canary's event rate to the
baseline's. Whatever the common rate does (a diurnal swing, drift, a provider's bad hour that hits
both arms) cancels out, and π may change from one interval to the next as steps move the weight.
That mean holds whatever the events do inside the interval, as long as a cluster of them (a retry
storm, an incident) lands on an arm with the chance its share of the traffic gives: so the
canary's share of the events, X = C / F, has mean at most θ under r <= margin, however the
events cluster, and each interval is one bet on X (betting.py) rather than F bets on F events
treated as independent, which is what made the per-event likelihood ratio over-confident under
bursts. (With requests rather than Poisson counts C is hypergeometric given F, with mean exactly
πF at r = 1; at a margin above 1 the Poisson law is the approximation, close while rates are
small.)

The state is the log wealth, per bet scale, of the test of "r <= grid point" for a grid of ratios
around the margin, and of "r >= grid point" (the same bets on 1 - X), so the same numbers give the
test and a confidence sequence for r: each interval's bet against "r <= g" pays less as g grows,
so the mixture's e-value falls along the grid, and the largest rejected point is a lower bound
that holds at all times with probability 1 - alpha (the upper bound likewise; Howard, Ramdas,
McAuliffe & Sekhon, "Time-uniform, nonparametric, nonasymptotic confidence sequences", Annals of
Statistics 2021, for confidence sequences from e-processes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from canaryctl.analysis.betting import SCALES, grow, mixture

__all__ = ["GRID", "STEP", "RateRatio"]

STEP = math.log(2) / 4
"""Grid spacing in log r: ratios 2^(1/4) = 1.19 apart."""
GRID = tuple(range(-8, 25))
"""Grid points in steps from the margin: r / margin from 1/4 to 64."""


def _empty(offsets: tuple[int, ...]) -> tuple[tuple[float, ...], ...]:
    return ((0.0,) * len(SCALES),) * len(offsets)


def canary_probability(ratio: float, share: float) -> float:
    """θ: the chance that an event came from the canary, given the rate ratio and its share."""
    return share * ratio / (share * ratio + 1 - share)


@dataclass(frozen=True)
class RateRatio:
    """Evidence about r so far. `above[i]` is the log wealth per bet scale against
    "r <= margin · exp(offsets[i] · STEP)", `below[i]` against "r >= that ratio"; `weighted_*`
    are the Mantel-Haenszel sums of the estimate. `offsets` is a run of consecutive grid points
    holding 0: the whole GRID for a confidence sequence, (0,) for the test at the margin alone
    (what a simulation of many rollouts needs)."""

    margin: float
    offsets: tuple[int, ...] = GRID
    above: tuple[tuple[float, ...], ...] = ()
    below: tuple[tuple[float, ...], ...] = ()
    events: float = 0.0
    canary_events: float = 0.0
    weighted_canary: float = 0.0
    weighted_baseline: float = 0.0

    def observe(
        self, canary_events: float, baseline_events: float, canary_share: float
    ) -> RateRatio:
        """Add one interval; `canary_share` is π, the canary's share of the interval's requests."""
        total = canary_events + baseline_events
        if total <= 0 or not 0 < canary_share < 1:
            return self  # no events, or one arm served nothing: the interval says nothing about r
        share_of_events = canary_events / total
        above, below = [], []
        for offset, was_above, was_below in zip(
            self.offsets, self._above(), self._below(), strict=True
        ):
            theta = canary_probability(self._ratio_at(offset), canary_share)
            above.append(grow(was_above, share_of_events, total, theta))
            below.append(grow(was_below, 1 - share_of_events, total, 1 - theta))
        return replace(
            self,
            above=tuple(above),
            below=tuple(below),
            events=self.events + total,
            canary_events=self.canary_events + canary_events,
            weighted_canary=self.weighted_canary + canary_events * (1 - canary_share),
            weighted_baseline=self.weighted_baseline + baseline_events * canary_share,
        )

    def _above(self) -> tuple[tuple[float, ...], ...]:
        return self.above or _empty(self.offsets)

    def _below(self) -> tuple[tuple[float, ...], ...]:
        return self.below or _empty(self.offsets)

    def e_value(self) -> float:
        """Evidence against "r <= margin"."""
        return mixture(self._above()[self.offsets.index(0)])

    def e_value_above(self, ratio: float) -> float:
        """Evidence against "r <= ratio", tested at the first grid point at or above `ratio`
        (a wider null, so never more evidence than is due); 1, no evidence, beyond the grid.
        It reaches 1/alpha exactly when `lower_bound(alpha)` reaches `ratio`, so `ratio` may
        change with the data and the test stays valid: the lower bound holds at all times."""
        index = math.ceil(math.log(ratio / self.margin) / STEP - 1e-9) - self.offsets[0]
        if index >= len(self.offsets):
            return 1.0
        return mixture(self._above()[max(index, 0)])

    def lower_bound(self, alpha: float) -> float:
        """r is above this at every time with probability 1 - alpha; 0 when nothing is rejected."""
        # "r <= grid point i" is rejected on a prefix of the grid: find its last point.
        above = self._above()
        low, high = -1, len(above)  # rejected at low (or none), not rejected at high
        while high - low > 1:
            middle = (low + high) // 2
            if mixture(above[middle]) >= 1 / alpha:
                low = middle
            else:
                high = middle
        return self._ratio_at(self.offsets[low]) if low >= 0 else 0.0

    def upper_bound(self, alpha: float) -> float:
        """r is below this at every time with probability 1 - alpha; inf if nothing is rejected."""
        # "r >= grid point i" is rejected on a suffix of the grid: find its first point.
        below = self._below()
        low, high = -1, len(below)  # not rejected at low, rejected at high (or none)
        while high - low > 1:
            middle = (low + high) // 2
            if mixture(below[middle]) >= 1 / alpha:
                high = middle
            else:
                low = middle
        return self._ratio_at(self.offsets[high]) if high < len(below) else math.inf

    def estimate(self) -> float | None:
        """The Mantel-Haenszel rate ratio Σ C(1 - π) / Σ Bπ, which weighs each interval by its
        traffic whatever the shares; None without events on both arms."""
        if self.weighted_canary <= 0 or self.weighted_baseline <= 0:
            return None
        return self.weighted_canary / self.weighted_baseline

    def _ratio_at(self, offset: int) -> float:
        return self.margin * math.exp(offset * STEP)

    def to_dict(self) -> dict[str, Any]:
        return {
            "margin": self.margin,
            "offsets": list(self.offsets),
            "above": [list(row) for row in self._above()],
            "below": [list(row) for row in self._below()],
            "events": self.events,
            "canary_events": self.canary_events,
            "weighted_canary": self.weighted_canary,
            "weighted_baseline": self.weighted_baseline,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RateRatio:
        return cls(
            margin=data["margin"],
            offsets=tuple(data["offsets"]),
            above=tuple(tuple(row) for row in data["above"]),
            below=tuple(tuple(row) for row in data["below"]),
            events=data["events"],
            canary_events=data["canary_events"],
            weighted_canary=data["weighted_canary"],
            weighted_baseline=data["weighted_baseline"],
        )
