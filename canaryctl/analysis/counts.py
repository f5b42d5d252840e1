"""What each rate SLO counts: (events, trials) of a variant, read in one place.

The sequential tests need the counts behind a rate, not the rate: the canary's share of the
events against its share of the trials, and the number of trials an absolute bound rests on.
"""

from __future__ import annotations

from collections.abc import Callable

from canaryctl.metrics.base import VariantStats

__all__ = ["RATE_COUNTS", "rate_counts"]

RATE_COUNTS: dict[str, Callable[[VariantStats], tuple[float, float]]] = {
    "error_rate": lambda s: (s.errors, s.requests),
    "fallback_rate": lambda s: (s.fallbacks, s.requests),
}
"""Per rate metric: (events, trials) from a variant's counts."""


def rate_counts(metric: str, stats: VariantStats) -> tuple[float, float]:
    return RATE_COUNTS[metric](stats)
