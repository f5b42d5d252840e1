"""From a runbook's `metrics:` section to a metrics source: one match on `provider`."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from canaryctl.errors import InvalidInput
from canaryctl.metrics.base import MetricsSource
from canaryctl.metrics.prometheus import PrometheusMetricsSource
from canaryctl.metrics.scrape import ScrapeMetricsSource
from canaryctl.runbook.rollout import PrometheusMetricsSpec, ScrapeMetricsSpec

__all__ = ["metrics_source_for"]


def metrics_source_for(
    spec: ScrapeMetricsSpec | PrometheusMetricsSpec, *, clock: Callable[[], float] = time.time
) -> MetricsSource:
    """The source a validated spec names; `clock` stamps samples (a fake one in simulations)."""
    match spec:
        case ScrapeMetricsSpec():
            return ScrapeMetricsSource(
                spec.targets, route=spec.route, timeout=spec.timeout, clock=clock
            )
        case PrometheusMetricsSpec():
            return _prometheus(spec, clock)
        case _:
            # Unreachable for a validated document; guards specs built by hand in code.
            provider = getattr(spec, "provider", type(spec).__name__)
            raise InvalidInput(f"spec.metrics.provider: unknown metrics provider '{provider}'")


def _secret(variable: str) -> str:
    """A credential from the environment; a missing one is the user's to fix, before acting."""
    value = os.environ.get(variable)
    if not value:
        raise InvalidInput(f"spec.metrics: environment variable {variable} is not set or empty")
    return value


def _prometheus(spec: PrometheusMetricsSpec, clock: Callable[[], float]) -> MetricsSource:
    headers = None
    if spec.bearer_token_env is not None:
        headers = {"Authorization": f"Bearer {_secret(spec.bearer_token_env)}"}
    auth = None
    if spec.basic_auth_username_env is not None and spec.basic_auth_password_env is not None:
        auth = (_secret(spec.basic_auth_username_env), _secret(spec.basic_auth_password_env))
    verify: bool | str = not spec.insecure_skip_verify
    if spec.ca_file is not None:
        verify = str(spec.ca_file)
    return PrometheusMetricsSource(
        spec.url,
        labels=spec.labels,
        timeout=spec.timeout,
        headers=headers,
        auth=auth,
        verify=verify,
        clock=clock,
    )
