"""Read the gateway's own /metrics endpoints: the embedded default, no Prometheus server needed.

A scrape only gives cumulative counters since each gateway started, so a window is the difference
between two samples. Every `check()` and `observe()` takes a sample and keeps it; `observe(since)`
subtracts the latest sample taken at or before `since`. Differences are taken per series (per
target and label set) before summing, so one gateway restarting among several is still seen as a
reset: a counter that went down counts from zero, as Prometheus' increase() does.

The series read are the gateway's contract: `llm_requests_total{outcome}` (outcomes in
canaryctl.slo_metrics), `llm_request_duration_seconds_bucket{le}`, the streamed answers'
`llm_time_to_first_token_seconds_bucket{le}` and `llm_time_per_output_token_seconds_bucket{le}`,
`llm_tokens_total{kind}`, `llm_cost_usd_total` and the quality summary's `llm_quality_score_sum`
and `_count`, all labelled `route`, `variant`, `model`, `provider`. Models and providers are
summed per variant: the analysis judges the variation served, and `outcome` says what the
variation's own model did.

A shadow step reads, from the same samples, the shadow families (`llm_shadow_*`, the same
series under other names, `variant` being the model a shadow call stood in for) and the judge's
pairwise counts (`llm_judge_pairwise_total{candidate,result}`): `observe_shadow`.

Samples come from a ScrapeCache (canaryctl/metrics/scrape_cache.py): the sources of one
controller's runs share one, so a target is scraped once per `share_age` (the analysis interval)
however many runs read it; a source made alone gets a cache of its own and scrapes at every call.
A source keeps the samples its window can still start from, no more: windows only move forward.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import httpx

from canaryctl.metrics.base import Observation
from canaryctl.metrics.scrape_cache import ScrapeCache, Series
from canaryctl.metrics.series import PAIRWISE, SERIES, SHADOW_SERIES, VariantTotals, by_variant
from canaryctl.retry import BACKEND, RetryPolicy

__all__ = ["ScrapeMetricsSource"]


_LIVE = {name: name for name in SERIES}
_SHADOW = {**SHADOW_SERIES, PAIRWISE: PAIRWISE}
"""Sample name -> the series it counts as: the user-facing ones, and what a shadow step reads."""
_VARIANT_LABEL = {PAIRWISE: "candidate"}
"""Where a series keeps its variant, when not in `variant`."""

_KEPT = 4
"""Samples a source holds at most: its window's first, the latest, and the `check`s since."""

Slice = tuple[str, str | None]
"""(target URL, route label): one route's series on one gateway, as a snapshot groups them."""


@dataclass(frozen=True)
class _Sample:
    at: float
    values: dict[Slice, Mapping[Series, float]]


def _differences(
    now: _Sample, base: _Sample | None, names: Mapping[str, str] = _LIVE
) -> dict[str, VariantTotals]:
    """Per-variant totals of what each series in `names` gained since `base` (None: since each
    gateway started). A series that went down counts from zero: its gateway restarted."""
    totals: dict[str, VariantTotals] = {}
    for where, series in now.values.items():
        before = base.values.get(where, {}) if base is not None else {}
        for key, value in series.items():
            name, label_items = key
            if name not in names:
                continue
            old = before.get(key, 0.0)
            delta = value - old if value >= old else value
            labels = dict(label_items)
            variant = labels.get(_VARIANT_LABEL.get(name, "variant"))
            if variant is not None:
                totals.setdefault(variant, VariantTotals()).add(names[name], labels, delta)
    return totals


class ScrapeMetricsSource:
    """Samples the gateways' /metrics and answers with differences of samples.

    `client` is for tests (httpx.MockTransport) and custom TLS, used when no `cache` is given;
    by default one is made. `cache` is shared by the sources of one process's runs; `share_age`
    is how old a sample another reader took may be for `observe` and `recent_requests` to use
    it (the analysis interval; 0 scrapes every time). `check` takes a scrape begun after it was
    called: a window starts as its weight is set. A target failing is retried by `retry`
    (waiting with `sleep`) before MetricsBackendError. Targets are shown without credentials or
    query (canaryctl/redact.py).
    `tier` counts only that requester tier (the gateway's `tier` label): an experiment's
    per-tier effects. `slide` is for a reader whose windows slide (a chaos hypothesis judges
    the last `window` every `interval`): how far back a window reaches, so the samples it may
    start at are kept; by default a window starts at a `check` or at the last window's end.
    """

    def __init__(
        self,
        targets: list[str],
        *,
        route: str | None = None,
        tier: str | None = None,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
        client: httpx.Client | None = None,
        retry: RetryPolicy = BACKEND,
        sleep: Callable[[float], None] = time.sleep,
        cache: ScrapeCache | None = None,
        share_age: float = 0.0,
        slide: float = 0.0,
    ) -> None:
        if not targets:
            raise ValueError("ScrapeMetricsSource needs a target URL")
        self.targets, self.route, self.tier = list(targets), route, tier
        self._timeout, self._clock = timeout, clock
        if cache is None:
            cache = ScrapeCache(clock=clock, client=client or httpx.Client(timeout=timeout))
        self._cache, self._share_age = cache, share_age
        self._retry, self._sleep = retry, sleep
        self._slide = slide
        self._history: deque[_Sample] = deque(maxlen=None if slide else _KEPT)

    def check(self) -> None:
        """Every target answers and is a gateway; also the sample a step's window starts from."""
        self._take_sample(not_before=self._clock())

    def recent_requests(self, window: float) -> Mapping[str, float]:
        """Since each gateway started: one sample holds no window of its own."""
        now = self._clock()
        variants = by_variant(
            _differences(self._take_sample(not_before=now - self._share_age), None)
        )
        return {variant: stats.requests for variant, stats in variants.items()}

    def observe(self, since: float) -> Observation:
        base, now = self._window(since)
        variants = by_variant(_differences(now, base))
        return Observation(start=base.at, end=now.at, variants=variants)

    def observe_shadow(self, since: float, *, baseline: str, candidate: str) -> Observation:
        """The baseline's user-facing counts and the candidate's shadow counts with its judged
        pairs, from the same two samples: one window for both."""
        base, now = self._window(since)
        live = by_variant(_differences(now, base))
        shadow = by_variant(_differences(now, base, _SHADOW))
        variants = {
            name: stats
            for name, stats in ((baseline, live.get(baseline)), (candidate, shadow.get(candidate)))
            if stats is not None
        }
        return Observation(start=base.at, end=now.at, variants=variants)

    def _window(self, since: float) -> tuple[_Sample, _Sample]:
        """A new sample, and the latest taken at or before `since` (the oldest kept, if none
        is). Windows only move forward, so nothing before that sample is kept. Without `slide`
        only these two are: the next window starts at a weight change (a `check`) or at the
        latest sample. With it, so is every sample a window reaching `slide` back from a later
        moment may start at: those since `slide` before the latest, and the one before them."""
        latest = self._history[-1].at if self._history else -float("inf")
        now = self._take_sample(not_before=self._clock() - self._share_age, newer_than=latest)
        base = next((s for s in reversed(self._history) if s.at <= since), self._history[0])
        if not self._slide:
            self._history = deque([base] if base is now else [base, now], maxlen=_KEPT)
            return base, now
        later = [s for s in self._history if s.at > base.at]
        recent = [s for s in later if s.at >= now.at - self._slide]
        older = [s for s in later if s.at < now.at - self._slide][-1:]
        self._history = deque([base, *older, *recent])
        return base, now

    def _take_sample(self, *, not_before: float, newer_than: float = -float("inf")) -> _Sample:
        """One snapshot per target, its fetch begun at or after `not_before` and after
        `newer_than`: the latest another reader took, if that is recent enough."""
        values: dict[Slice, Mapping[Series, float]] = {}
        at = -float("inf")
        for url in self.targets:
            snapshot = self._cache.sample(
                url,
                not_before=not_before,
                newer_than=newer_than,
                timeout=self._timeout,
                policy=self._retry,
                sleep=self._sleep,
            )
            at = max(at, snapshot.at)
            for route, series in snapshot.routes.items():
                if self.route is None or route == self.route:
                    values[(url, route)] = self._of_tier(series)
        sample = _Sample(at, values)
        self._history.append(sample)
        return sample

    def _of_tier(self, series: Mapping[Series, float]) -> Mapping[Series, float]:
        """The series of this source's tier (all of them without one): shared, not copied."""
        if self.tier is None:
            return series
        return {key: v for key, v in series.items() if ("tier", self.tier) in key[1]}
