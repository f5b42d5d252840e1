"""Ask a Prometheus server for the window's counts: the backend production runs.

Prometheus already keeps the gateways' counters over time, so a window is one `increase()` per
counter, evaluated at "now" over the seconds since the step began; PromQL handles counter resets
(a restarted gateway) and sums over every gateway Prometheus scrapes.

Each `observe()` sends exactly FOUR instant queries, whatever the number of variants, each
grouped `by (variant, ...)`:

    sum by (variant, outcome) (increase(llm_requests_total{...}[Ns]))   requests, errors, fallbacks
    sum by (variant, le) (increase(llm_request_duration_seconds_bucket{...}[Ns]))   latency
    sum by (variant, kind) (increase(llm_tokens_total{...}[Ns]))   prompt/completion tokens
    sum by (variant) (increase(llm_cost_usd_total{...}[Ns]))   cost

`check()` sends one more (`up`). The metric names are the gateway's contract (design.md).

The counts are Prometheus' estimates, not exact: increase() extrapolates from the samples inside
the window to its edges (by up to a scrape interval at each end), and a series born inside the
window loses its first sample. Every series of one target shares its sample times, so the ratios
the SLOs judge (error rate, p95, cost per query) are not skewed by it.

Network failures and 5xx answers are retried by urllib3 with exponential backoff; what is still
failing then becomes MetricsBackendError naming the URL (never a credential), so the runner can
tell "Prometheus is down" from "the canary is bad".
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from canaryctl.errors import MetricsBackendError
from canaryctl.metrics.base import Observation
from canaryctl.metrics.series import (
    COST,
    DURATION_BUCKET,
    REQUESTS,
    TOKENS,
    VariantTotals,
    by_variant,
)

__all__ = ["QUERIES", "PrometheusMetricsSource", "promql_selector"]

QUERIES = (
    (REQUESTS, "variant, outcome"),
    (DURATION_BUCKET, "variant, le"),
    (TOKENS, "variant, kind"),
    (COST, "variant"),
)
"""One query per series for all variants at once: the whole cost of an analysis."""

_RETRY_STATUSES = (500, 502, 503, 504)


def promql_selector(labels: Mapping[str, str]) -> str:
    """`{a="x",b="y"}` with values escaped as PromQL strings; "" when there are no labels."""
    if not labels:
        return ""
    escaped = (
        (name, value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n"))
        for name, value in sorted(labels.items())
    )
    return "{" + ",".join(f'{name}="{value}"' for name, value in escaped) + "}"


class PrometheusMetricsSource:
    """Counts per variant from Prometheus' HTTP API, through prometheus-api-client.

    `labels` are matchers added to every query (route, job...). `headers`/`auth` carry
    credentials already read from the environment by the factory; `verify` is a CA bundle path
    or False for insecure_skip_verify. A request is retried `retries` times after the first
    failure, urllib3 waiting `backoff` seconds and doubling.
    """

    def __init__(
        self,
        url: str,
        *,
        labels: Mapping[str, str] | None = None,
        timeout: float = 5.0,
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        verify: bool | str = True,
        clock: Callable[[], float] = time.time,
        retries: int = 3,
        backoff: float = 0.2,
    ) -> None:
        if retries < 0:
            raise ValueError("PrometheusMetricsSource needs retries >= 0")
        self.url = url.rstrip("/")
        self._selector = promql_selector(labels or {})
        self._timeout, self._clock = timeout, clock
        session = requests.Session()
        session.verify = verify
        retry = Retry(
            total=retries,
            backoff_factor=backoff,
            status_forcelist=_RETRY_STATUSES,
            allowed_methods=None,
            raise_on_status=False,
        )
        self._client = PrometheusConnect(
            url=self.url,
            headers=dict(headers) if headers else None,
            auth=auth,
            retry=retry,
            session=session,
            timeout=timeout,
        )

    def check(self) -> None:
        """Prometheus answers queries (with our credentials) and scrapes at least one target."""
        if not self._query("up", self._clock()):
            raise MetricsBackendError(
                f"Prometheus at {self.url} answers but scrapes no target (`up` is empty)"
            )

    def observe(self, since: float) -> Observation:
        now = self._clock()
        window = max(1, math.ceil(now - since))
        totals: dict[str, VariantTotals] = {}
        for series, by in QUERIES:
            query = f"sum by ({by}) (increase({series}{self._selector}[{window}s]))"
            for labels, value in self._rows(self._query(query, now)):
                totals.setdefault(labels.get("variant", ""), VariantTotals()).add(
                    series, labels, value
                )
        return Observation(start=now - window, end=now, variants=by_variant(totals))

    def _rows(self, result: list[dict[str, Any]]) -> list[tuple[dict[str, str], float]]:
        """(labels, value) per series with a variant; NaN (no rate computable) is dropped."""
        try:
            parsed = [(dict(r["metric"]), float(r["value"][1])) for r in result]
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise MetricsBackendError(
                f"Prometheus at {self.url} answered with an unexpected result shape ({exc})"
            ) from exc
        return [(m, v) for m, v in parsed if "variant" in m and not math.isnan(v)]

    def _query(self, query: str, at: float) -> list[dict[str, Any]]:
        """One instant query at `at`; library and transport exceptions stop here."""
        try:
            result = self._client.custom_query(query, params={"time": f"{at:.3f}"})
        except PrometheusApiClientException as exc:
            # The library puts the status and body in the message; both are safe to show.
            raise MetricsBackendError(
                f"Prometheus at {self.url} refused the query {query!r}: {exc}"
            ) from exc
        except (ValueError, KeyError) as exc:  # a 200 that is not the API: a login page, say
            raise MetricsBackendError(
                f"Prometheus at {self.url} did not answer as the query API does ({exc!r})"
            ) from exc
        except requests.RequestException as exc:
            # Credentials travel in headers, never in the URL, so the message cannot leak them.
            raise MetricsBackendError(
                f"cannot reach Prometheus at {self.url}: {type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(result, list):
            raise MetricsBackendError(
                f"Prometheus at {self.url} answered {query!r} with a non-vector result"
            )
        return result
