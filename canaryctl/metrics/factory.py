"""From a runbook's `metrics:` section to a metrics source: one match on `provider`."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Collection, Sequence

from canaryctl.errors import InvalidInput
from canaryctl.metrics.base import MetricsSource
from canaryctl.metrics.profile import ingredients_for, load_profile
from canaryctl.metrics.prometheus import PrometheusMetricsSource, SloQuery
from canaryctl.metrics.scrape import ScrapeMetricsSource
from canaryctl.metrics.scrape_cache import ScrapeCache
from canaryctl.runbook.rollout import PrometheusMetricsSpec, ScrapeMetricsSpec, SloSpec

__all__ = ["metrics_source_for"]


def metrics_source_for(
    spec: ScrapeMetricsSpec | PrometheusMetricsSpec,
    *,
    clock: Callable[[], float] = time.time,
    slos: Sequence[SloSpec] = (),
    baseline: str | None = None,
    canary: str | None = None,
    needs: Collection[str] = (),
    queries: Sequence[SloQuery] = (),
    tier: str | None = None,
    scrapes: ScrapeCache | None = None,
    share_age: float = 0.0,
    slide: float = 0.0,
) -> MetricsSource:
    """The source a validated spec names; `clock` stamps samples (a fake one in simulations).

    Given the rollout's `slos` and its `baseline`/`canary` variations, a Prometheus source asks
    only for what those SLOs read, plus the ingredients in `needs` (measures.NEEDS), and runs
    their custom queries; without SLOs it reads every count its profile yields. `queries` are
    more custom queries (an experiment's, asked of each of its variations); `tier` counts only
    that requester tier (the gateway's `tier` label). `scrapes` is the cache a controller's runs
    share, and `share_age` how old a sample another run took may be for an analysis to use it.
    `slide` is how far back a window that slides reaches (a scrape source keeps those samples;
    Prometheus answers any window).
    """
    match spec:
        case ScrapeMetricsSpec():
            return ScrapeMetricsSource(
                spec.targets,
                route=spec.route,
                tier=tier,
                timeout=spec.timeout,
                clock=clock,
                cache=scrapes,
                share_age=share_age,
                slide=slide,
            )
        case PrometheusMetricsSpec():
            if tier is not None:
                spec = spec.model_copy(update={"selector": {**spec.selector, "tier": tier}})
            return _prometheus(spec, clock, slos, baseline, canary, needs, queries)
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


def _slo_queries(
    slos: Sequence[SloSpec], baseline: str | None, canary: str | None
) -> list[SloQuery]:
    """Each custom SLO asked for the canary, and for the baseline too when compared to it."""
    queries = []
    for slo in slos:
        if slo.query is None:
            continue
        if canary is None or (slo.relative and baseline is None):
            raise ValueError("custom PromQL SLOs need the rollout's baseline and canary")
        variants = (canary, baseline) if slo.relative and baseline is not None else (canary,)
        queries.append(SloQuery(slo.subject, slo.query, variants))
    return queries


def _prometheus(
    spec: PrometheusMetricsSpec,
    clock: Callable[[], float],
    slos: Sequence[SloSpec],
    baseline: str | None,
    canary: str | None,
    needs: Collection[str],
    queries: Sequence[SloQuery],
) -> MetricsSource:
    profile = load_profile(spec.profile)
    wanted = None
    if slos:
        missing = set(needs) - profile.ingredients
        if missing:
            raise InvalidInput(
                f"spec.metrics.profile: '{spec.profile}' does not yield "
                f"{', '.join(sorted(missing))}, which this command needs"
            )
        wanted = ingredients_for(slos, profile, spec.profile) | set(needs)
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
        profile=profile,
        needs=wanted,
        slo_queries=[*_slo_queries(slos, baseline, canary), *queries],
        labels=spec.labels,
        route=spec.route,
        variants=spec.variants,
        timeout=spec.timeout,
        headers=headers,
        auth=auth,
        verify=verify,
        clock=clock,
    )
