"""Does the canary cost more per query than allowed? A confidence sequence on paired differences.

The metrics give sums per interval (cost, tokens, requests), not one value per request, so each
interval contributes one paired difference d = canary mean - allowed(baseline mean), where
allowed is `x · max_ratio` or `x + max_increase`. Pairing within the interval cancels whatever
both arms share at that time (prices, prompt mix, time of day), and a change of weight only
changes how noisy d is.

The e-value is Robbins' normal mixture over a one-sided exponential martingale, with the variance
estimated from the differences seen so far: the asymptotic confidence sequence of Waudby-Smith,
Arnold, Wu & Ramdas ("Time-uniform central limit theory", 2021). Unlike the count test its
guarantee is asymptotic: it holds as the number of intervals grows, and it needs at least
`MIN_INTERVALS` of them before it says anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["MIN_INTERVALS", "PRIOR_INTERVALS", "MeanDifference"]

MIN_INTERVALS = 3
PRIOR_INTERVALS = 10.0
"""The mixture's spread in intervals: the boundary is tightest around this many intervals."""


@dataclass(frozen=True)
class MeanDifference:
    """Sufficient statistics of the paired differences so far."""

    intervals: int = 0
    total: float = 0.0
    total_squares: float = 0.0
    total_floor: float = 0.0
    """Sum of each difference's least plausible variance (0: none known); see `observe`."""

    def observe(self, difference: float, floor: float = 0.0) -> MeanDifference:
        """Add one difference; `floor` is the least variance it can have given its sample
        sizes (a rate's binomial noise), so intervals in which both arms happened to show
        the same value (no errors on either side) do not make the interval collapse."""
        return replace(
            self,
            intervals=self.intervals + 1,
            total=self.total + difference,
            total_squares=self.total_squares + difference * difference,
            total_floor=self.total_floor + floor,
        )

    def mean(self) -> float | None:
        return self.total / self.intervals if self.intervals else None

    def _spread(self) -> float | None:
        """Sample standard deviation of the differences; None while too few to trust."""
        if self.intervals < MIN_INTERVALS:
            return None
        mean = self.total / self.intervals
        variance = max(self.total_squares / self.intervals - mean * mean, 0.0)
        variance *= self.intervals / (self.intervals - 1)
        variance = max(variance, self.total_floor / self.intervals)
        # Identical differences (a deterministic price) would make any positive mean infinitely
        # significant; a floor relative to the mean keeps the evidence finite.
        return max(math.sqrt(variance), 1e-3 * abs(mean), 1e-12)

    def e_value(self) -> float:
        """Evidence against "mean difference <= 0" (the canary within its allowance)."""
        spread = self._spread()
        if spread is None:
            return 1.0
        scale = spread * math.sqrt(self.intervals + PRIOR_INTERVALS)
        z = self.total / scale
        shrink = math.sqrt(PRIOR_INTERVALS / (self.intervals + PRIOR_INTERVALS))
        normal_cdf = 0.5 * math.erfc(-z / math.sqrt(2))
        return 2 * shrink * math.exp(min(z * z / 2, 700.0)) * normal_cdf

    def bounds(self, alpha: float) -> tuple[float, float]:
        """A two-sided confidence sequence for the mean difference, covering it with 1 - alpha."""
        spread, mean = self._spread(), self.mean()
        if spread is None or mean is None:
            return (-math.inf, math.inf)
        n = self.intervals
        ratio = (n + PRIOR_INTERVALS) / PRIOR_INTERVALS
        log_boundary = math.log(math.sqrt(ratio) / alpha)
        half = spread * math.sqrt((n + PRIOR_INTERVALS) * 2 * log_boundary) / n
        return (mean - half, mean + half)

    def to_dict(self) -> dict[str, Any]:
        return {
            "intervals": self.intervals,
            "total": self.total,
            "total_squares": self.total_squares,
            "total_floor": self.total_floor,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MeanDifference:
        floor = data.get("total_floor", 0.0)  # journals before floors had none
        return cls(data["intervals"], data["total"], data["total_squares"], floor)
