"""From a runbook's `metrics:` section to a metrics source: one match on `provider`."""

from __future__ import annotations

import time
from collections.abc import Callable

from canaryctl.errors import InvalidInput
from canaryctl.metrics.base import MetricsSource
from canaryctl.metrics.scrape import ScrapeMetricsSource
from canaryctl.runbook.rollout import ScrapeMetricsSpec

__all__ = ["metrics_source_for"]


def metrics_source_for(
    spec: ScrapeMetricsSpec, *, clock: Callable[[], float] = time.time
) -> MetricsSource:
    """The source a validated spec names; `clock` stamps samples (a fake one in simulations)."""
    match spec.provider:
        case "scrape":
            return ScrapeMetricsSource(
                spec.targets, route=spec.route, timeout=spec.timeout, clock=clock
            )
        case other:
            # Unreachable for a validated document; guards specs built by hand in code.
            raise InvalidInput(f"spec.metrics.provider: unknown metrics provider '{other}'")
