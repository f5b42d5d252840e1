"""Intervals for scores (proportions of items right) and their difference. Pure.

Wilson's score interval for one proportion keeps its coverage at small n and near 0 or 1, where
the textbook normal interval does not; Newcombe's method (his "method 10") combines two Wilson
intervals into one for the difference. Both are two-sided at the stated confidence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

__all__ = ["newcombe_interval", "percentile", "wilson_interval", "z_for"]


def z_for(confidence: float) -> float:
    """The normal quantile of a two-sided interval at `confidence` (1.96 for 0.95)."""
    return NormalDist().inv_cdf((1 + confidence) / 2)


def wilson_interval(right: int, n: int, confidence: float) -> tuple[float, float]:
    if n <= 0:
        return 0.0, 1.0
    z = z_for(confidence)
    p = right / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_interval(
    right_a: int, n_a: int, right_b: int, n_b: int, confidence: float
) -> tuple[float, float]:
    """Interval for score(a) - score(b)."""
    if n_a <= 0 or n_b <= 0:
        return -1.0, 1.0
    p_a, p_b = right_a / n_a, right_b / n_b
    low_a, high_a = wilson_interval(right_a, n_a, confidence)
    low_b, high_b = wilson_interval(right_b, n_b, confidence)
    diff = p_a - p_b
    low = diff - math.sqrt((p_a - low_a) ** 2 + (high_b - p_b) ** 2)
    high = diff + math.sqrt((high_a - p_a) ** 2 + (p_b - low_b) ** 2)
    return max(-1.0, low), min(1.0, high)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..1) of `values`; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]
