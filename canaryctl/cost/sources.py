"""Where a cost report's counts come from: the gateways' /metrics, or Prometheus. The I/O shell
around the pure counts.py and report.py.

A failing target is retried by the shared policy (canaryctl/retry.py) and then reported as a
MetricsBackendError (exit 3) naming it without credentials (canaryctl/redact.py).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import httpx

from canaryctl import retry
from canaryctl.cost.counts import (
    GROUPING,
    SPEND_START,
    Scrape,
    SpendCounts,
    difference,
    parse_exposition,
)
from canaryctl.errors import MetricsBackendError
from canaryctl.gateway.metrics import TOP_USER_COST, TOP_USER_COST_ERROR
from canaryctl.metrics.prometheus import PrometheusMetricsSource
from canaryctl.redact import redact_text, redact_url
from canaryctl.retry import BACKEND, Retryable, RetryPolicy

__all__ = ["prometheus_counts", "scrape", "scraped_counts"]


def scrape(
    targets: Sequence[str],
    client: httpx.Client,
    *,
    policy: RetryPolicy = BACKEND,
    sleep: Callable[[float], None] = time.sleep,
) -> Scrape:
    """One scrape of every target's /metrics, unsummed."""
    values: Scrape = {}
    for url in targets:

        def attempt(url: str = url) -> Scrape:
            try:
                response = client.get(url)
            except httpx.HTTPError as exc:
                name = type(exc).__name__
                raise Retryable(f"{name}: {redact_text(str(exc))}" if str(exc) else name) from exc
            if response.status_code != 200:
                raise Retryable(f"HTTP {response.status_code} {response.reason_phrase}".rstrip())
            try:
                return parse_exposition(url, response.text)
            except (ValueError, IndexError, KeyError, TypeError) as exc:
                raise Retryable(f"not Prometheus exposition text ({exc})") from exc

        try:
            got = retry.call(attempt, policy, sleep=sleep)
        except Retryable as failure:
            raise MetricsBackendError(
                f"cannot read metrics from {redact_url(url)} after {policy.attempts} "
                f"attempt(s): {failure.reason}"
            ) from failure.__cause__
        if not any(name == SPEND_START for _, name, _ in got):
            raise MetricsBackendError(
                f"{redact_url(url)} answers but exposes no {SPEND_START}: is this a canaryctl "
                "gateway's /metrics endpoint (of a version that meters spend)?"
            )
        values.update(got)
    return values


def scraped_counts(
    targets: Sequence[str],
    client: httpx.Client,
    *,
    window: float | None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> SpendCounts:
    """Totals since the gateways started (`window` None), or the difference of two scrapes
    `window` seconds apart."""
    if window is None:
        return difference(scrape(targets, client, sleep=sleep), None, at=clock(), since=None)
    first, since = scrape(targets, client, sleep=sleep), clock()
    sleep(window)
    return difference(scrape(targets, client, sleep=sleep), first, at=clock(), since=since)


def prometheus_counts(source: PrometheusMetricsSource, start: float, end: float) -> SpendCounts:
    """`increase()` of every counter the report reads over [start, end], summed by its
    grouping; the heavy users' spend as the gauges' change over the range."""
    window = f"{max(1, math.ceil(end - start))}s"
    counters = {}
    for name, labels in GROUPING.items():
        promql = f"sum by ({', '.join(labels)}) (increase({name}[{window}]))"
        rows = source.instant(promql, end)
        counters[name] = {
            tuple(sorted((k, v) for k, v in row.items() if k in labels)): value
            for row, value in rows
        }
    at_end = dict(_by_user(source.instant(f"sum by (user) ({TOP_USER_COST})", end)))
    at_start = dict(_by_user(source.instant(f"sum by (user) ({TOP_USER_COST})", start)))
    errors = dict(_by_user(source.instant(f"sum by (user) ({TOP_USER_COST_ERROR})", end)))
    users = {}
    for user, value in at_end.items():
        before = at_start.get(user, 0.0)
        spent = value - before if value >= before else value
        if spent > 0:
            users[user] = (spent, errors.get(user, 0.0))
    return SpendCounts(counters=counters, users=users, start=start, end=end)


def _by_user(rows: list[tuple[dict[str, str], float]]) -> list[tuple[str, float]]:
    return [(labels.get("user", ""), value) for labels, value in rows]
