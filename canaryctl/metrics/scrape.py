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
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import httpx
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from canaryctl import retry
from canaryctl.errors import MetricsBackendError
from canaryctl.metrics.base import Observation
from canaryctl.metrics.series import (
    PAIRWISE,
    REQUESTS,
    SERIES,
    SHADOW_SERIES,
    VariantTotals,
    by_variant,
)
from canaryctl.redact import redact_text, redact_url
from canaryctl.retry import BACKEND, Retryable, RetryPolicy

__all__ = ["ScrapeMetricsSource"]


# The parser strips `_total` from a counter's family name; an exposition without TYPE keeps it.
_REQUESTS_FAMILIES = frozenset({"llm_requests", REQUESTS})

_LIVE = {name: name for name in SERIES}
_SHADOW = {**SHADOW_SERIES, PAIRWISE: PAIRWISE}
"""Sample name -> the series it counts as: the user-facing ones, and what a shadow step reads."""
_VARIANT_LABEL = {PAIRWISE: "candidate"}
"""Where a series keeps its variant, when not in `variant`."""

_HISTORY = 512
"""Samples kept: at one per 30 s analysis interval, four hours of rollout."""

SeriesKey = tuple[str, str, tuple[tuple[str, str], ...]]
"""(target URL, sample name, sorted labels): one counter on one gateway."""


@dataclass(frozen=True)
class _Sample:
    at: float
    values: dict[SeriesKey, float]


def _differences(
    now: dict[SeriesKey, float], base: dict[SeriesKey, float], names: Mapping[str, str] = _LIVE
) -> dict[str, VariantTotals]:
    """Per-variant totals of what each series in `names` gained since `base`."""
    totals: dict[str, VariantTotals] = {}
    for key, value in now.items():
        _, name, label_items = key
        if name not in names:
            continue
        before = base.get(key, 0.0)
        delta = value - before if value >= before else value  # went down: a restart
        labels = dict(label_items)
        variant = labels.get(_VARIANT_LABEL.get(name, "variant"))
        if variant is not None:
            totals.setdefault(variant, VariantTotals()).add(names[name], labels, delta)
    return totals


class ScrapeMetricsSource:
    """Samples the gateways' /metrics on every call and answers with differences of samples.

    `client` is for tests (httpx.MockTransport) and custom TLS; by default one is made with
    `timeout`. A target failing is retried by `retry` (waiting with `sleep`) before
    MetricsBackendError. Targets are shown without credentials or query (canaryctl/redact.py).
    `tier` counts only that requester tier (the gateway's `tier` label): an experiment's
    per-tier effects.
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
    ) -> None:
        if not targets:
            raise ValueError("ScrapeMetricsSource needs a target URL")
        self.targets, self.route, self.tier = list(targets), route, tier
        self._timeout, self._clock = timeout, clock
        self._client = client if client is not None else httpx.Client(timeout=timeout)
        self._retry, self._sleep = retry, sleep
        self._history: deque[_Sample] = deque(maxlen=_HISTORY)

    def check(self) -> None:
        """Every target answers and is a gateway; also the sample a step's window starts from."""
        self._take_sample()

    def recent_requests(self, window: float) -> Mapping[str, float]:
        """Since each gateway started: one sample holds no window of its own."""
        now = self._take_sample()
        variants = by_variant(_differences(now.values, {}))
        return {variant: stats.requests for variant, stats in variants.items()}

    def observe(self, since: float) -> Observation:
        now = self._take_sample()
        base = self._base(since)
        variants = by_variant(_differences(now.values, base.values))
        return Observation(start=base.at, end=now.at, variants=variants)

    def observe_shadow(self, since: float, *, baseline: str, candidate: str) -> Observation:
        """The baseline's user-facing counts and the candidate's shadow counts with its judged
        pairs, from the same two samples: one window for both."""
        now = self._take_sample()
        base = self._base(since)
        live = by_variant(_differences(now.values, base.values))
        shadow = by_variant(_differences(now.values, base.values, _SHADOW))
        variants = {
            name: stats
            for name, stats in ((baseline, live.get(baseline)), (candidate, shadow.get(candidate)))
            if stats is not None
        }
        return Observation(start=base.at, end=now.at, variants=variants)

    def _base(self, since: float) -> _Sample:
        """The latest sample taken at or before `since` (the oldest kept, if none is)."""
        return next((s for s in reversed(self._history) if s.at <= since), self._history[0])

    def _take_sample(self) -> _Sample:
        values: dict[SeriesKey, float] = {}
        for url in self.targets:
            values.update(self._series(url, self._scrape(url)))
        sample = _Sample(self._clock(), values)
        self._history.append(sample)
        return sample

    def _scrape(self, url: str) -> list[Metric]:
        """The target's metric families, retrying anything that could be transient."""

        def attempt() -> list[Metric]:
            try:
                response = self._client.get(url, timeout=self._timeout)
            except httpx.HTTPError as exc:
                name = type(exc).__name__
                raise Retryable(f"{name}: {redact_text(str(exc))}" if str(exc) else name) from exc
            if response.status_code != 200:
                phrase = f"HTTP {response.status_code} {response.reason_phrase}".rstrip()
                raise Retryable(phrase)
            try:
                return list(text_string_to_metric_families(response.text))
            except (ValueError, IndexError, KeyError, TypeError) as exc:
                raise Retryable(f"not Prometheus exposition text ({exc})") from exc

        try:
            return retry.call(attempt, self._retry, sleep=self._sleep)
        except Retryable as failure:
            raise MetricsBackendError(
                f"cannot read metrics from {redact_url(url)} after {self._retry.attempts} "
                f"attempt(s): {failure.reason}"
            ) from failure.__cause__

    def _series(self, url: str, families: Iterable[Metric]) -> dict[SeriesKey, float]:
        """The series we read, keyed per target; fails if the target is not a gateway at all.

        A gateway that has served nothing yet exposes the requests family with no samples (it
        declares its families at start), which is fine: no samples means no traffic. A target
        without the family at all is something else answering on that port.
        """
        is_gateway = False
        values: dict[SeriesKey, float] = {}
        for family in families:
            is_gateway = is_gateway or family.name in _REQUESTS_FAMILIES
            for sample in family.samples:
                if sample.name not in _LIVE and sample.name not in _SHADOW:
                    continue
                if self.route is not None and sample.labels.get("route") != self.route:
                    continue
                if self.tier is not None and sample.labels.get("tier") != self.tier:
                    continue
                values[(url, sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        if not is_gateway:
            raise MetricsBackendError(
                f"{redact_url(url)} answers but exposes no {REQUESTS} metric: is this a "
                "canaryctl gateway's /metrics endpoint?"
            )
        return values
