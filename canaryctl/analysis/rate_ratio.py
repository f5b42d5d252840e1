"""Is the canary's event rate more than `margin` times the baseline's? An anytime-valid answer.

Why condition on the events: in an interval where the canary served a share π of the requests and
E events (errors, slow requests) happened in all, the canary's part of them is binomial(E, θ) with
θ = πr / (πr + 1 - π), r being the ratio of the canary's event rate to the baseline's. Whatever
the common rate does (a diurnal swing, drift, a provider's bad hour) cancels out: the test depends
on r alone, and π may change from one interval to the next as steps move the weight. (With
requests rather than Poisson counts the law is hypergeometric, which is less spread than the
binomial in convex order, so every likelihood ratio below keeps mean <= 1 at r = 1.)

Why a mixture: the likelihood ratio of r = margin·g (g > 1) against r = margin is, under any
r <= margin, a nonnegative supermartingale, because the binomial family has a monotone likelihood
ratio. A mixture of those over a few effect sizes g is an e-process: by Ville's inequality it ever
reaches 1/alpha with probability at most alpha, however often it is looked at. Lindon & Malek
("Anytime-Valid Inference for Multinomial Count Data", NeurIPS 2022) mix with a conjugate
Dirichlet for a fixed π; a discrete mixture over the log ratio keeps every likelihood exact when
π moves.

The state is the log-likelihood on a grid of log r around the margin, so the same numbers give the
test and a confidence sequence for r: the log-likelihood is concave in log r, so the mixture
e-value of "r <= grid point" falls along the grid, and the largest rejected point is a lower
bound that holds at all times with probability 1 - alpha (the upper bound likewise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["ALTERNATIVES", "GRID", "STEP", "RateRatio"]

STEP = math.log(2) / 4
"""Grid spacing in log r: ratios 2^(1/4) = 1.19 apart."""
GRID = tuple(range(-16, 25))
"""Grid points in steps from the margin: r / margin from 1/16 to 64."""
ALTERNATIVES = (1, 2, 3, 4, 6, 8, 12)
"""The mixture's effect sizes in steps above the null: r / margin = 1.19, 1.41, 1.68, 2, 2.8, 4, 8,
equally weighted, so a 1.5x and a 3x regression each have a component close by."""

_ZERO = GRID.index(0)


@dataclass(frozen=True)
class RateRatio:
    """Evidence about r so far; `log_likelihood[i]` is at r = margin · exp(GRID[i] · STEP) and is
    known up to a constant, which cancels in every ratio."""

    margin: float
    log_likelihood: tuple[float, ...] = (0.0,) * len(GRID)
    events: float = 0.0
    canary_events: float = 0.0

    def observe(
        self, canary_events: float, baseline_events: float, canary_share: float
    ) -> RateRatio:
        """Add one interval; `canary_share` is π, the canary's share of the interval's requests."""
        total = canary_events + baseline_events
        if total <= 0 or not 0 < canary_share < 1:
            return self  # no events, or one arm served nothing: the interval says nothing about r
        odds = canary_share / (1 - canary_share)
        log_margin = math.log(self.margin)
        updated = tuple(
            ll + canary_events * x - total * math.log1p(odds * math.exp(x))
            for ll, x in zip(
                self.log_likelihood, (log_margin + j * STEP for j in GRID), strict=True
            )
        )
        return replace(
            self,
            log_likelihood=updated,
            events=self.events + total,
            canary_events=self.canary_events + canary_events,
        )

    def e_value(self) -> float:
        """Evidence against "r <= margin": the mixture likelihood ratio."""
        return self._e_value(_ZERO, +1)

    def e_value_above(self, ratio: float) -> float:
        """Evidence against "r <= ratio", tested at the first grid point at or above `ratio`
        (a wider null, so never more evidence than is due); 1, no evidence, beyond the grid.
        It reaches 1/alpha exactly when `lower_bound(alpha)` reaches `ratio`, so `ratio` may
        change with the data and the test stays valid: the lower bound holds at all times."""
        index = math.ceil(math.log(ratio / self.margin) / STEP - 1e-9) - GRID[0]
        if index >= len(GRID):
            return 1.0
        return self._e_value(max(index, 0), +1)

    def lower_bound(self, alpha: float) -> float:
        """r is above this at every time with probability 1 - alpha; 0 when nothing is rejected."""
        # "r <= grid point i" is rejected on a prefix of the grid: find its last point.
        low, high = -1, len(GRID)  # rejected at low (or none), not rejected at high
        while high - low > 1:
            middle = (low + high) // 2
            if self._e_value(middle, +1) >= 1 / alpha:
                low = middle
            else:
                high = middle
        return self._ratio(low) if low >= 0 else 0.0

    def upper_bound(self, alpha: float) -> float:
        """r is below this at every time with probability 1 - alpha; inf if nothing is rejected."""
        # "r >= grid point i" is rejected on a suffix of the grid: find its first point.
        low, high = -1, len(GRID)  # not rejected at low, rejected at high (or none)
        while high - low > 1:
            middle = (low + high) // 2
            if self._e_value(middle, -1) >= 1 / alpha:
                high = middle
            else:
                low = middle
        return self._ratio(high) if high < len(GRID) else math.inf

    def estimate(self) -> float | None:
        """The maximum-likelihood r, refined by a parabola through the best grid point; None
        without evidence either way (no events, or events on one arm only give no maximum)."""
        ll = self.log_likelihood
        best = max(range(len(ll)), key=ll.__getitem__)
        if self.events <= 0 or best in (0, len(ll) - 1):
            return None
        curvature = ll[best - 1] - 2 * ll[best] + ll[best + 1]
        shift = 0.0 if curvature >= 0 else 0.5 * (ll[best - 1] - ll[best + 1]) / curvature
        return self.margin * math.exp((GRID[best] + shift) * STEP)

    def _ratio(self, index: int) -> float:
        return self.margin * math.exp(GRID[index] * STEP)

    def _e_value(self, null: int, direction: int) -> float:
        """Mixture over the alternatives beyond grid point `null` (above it if direction is +1);
        alternatives off the grid drop out, which only makes the test more cautious."""
        ll = self.log_likelihood
        weight = 1 / len(ALTERNATIVES)
        total = 0.0
        for steps in ALTERNATIVES:
            other = null + direction * steps
            if 0 <= other < len(ll):
                total += weight * math.exp(min(ll[other] - ll[null], 700.0))
        return total

    def to_dict(self) -> dict[str, Any]:
        return {
            "margin": self.margin,
            "log_likelihood": list(self.log_likelihood),
            "events": self.events,
            "canary_events": self.canary_events,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RateRatio:
        return cls(
            margin=data["margin"],
            log_likelihood=tuple(data["log_likelihood"]),
            events=data["events"],
            canary_events=data["canary_events"],
        )
