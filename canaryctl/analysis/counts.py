"""What each rate SLO counts: (events, trials) of a variant, read in one place.

The sequential tests need the counts behind a rate, not the rate: the canary's share of the
events against its share of the trials, and the number of trials an absolute bound rests on.
The formulas are the registry's (canaryctl.slo_metrics), so a rate means the same everywhere.
"""

from __future__ import annotations

from canaryctl.metrics.base import VariantStats
from canaryctl.slo_metrics import SLO_METRICS, Rate

__all__ = ["RATE_COUNTS", "rate_counts"]

RATE_COUNTS: dict[str, Rate] = {
    name: m.formula for name, m in SLO_METRICS.items() if isinstance(m.formula, Rate)
}
"""Per rate metric: its formula's events and trials."""


def rate_counts(metric: str, stats: VariantStats) -> tuple[float, float]:
    """(events, trials) of `metric` in a variant's counts."""
    rate = RATE_COUNTS[metric]
    return rate.events(stats), rate.trials(stats)
