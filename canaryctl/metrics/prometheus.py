"""Ask a Prometheus server for the window's counts: the backend production runs.

Prometheus already keeps the gateways' counters over time, so a window is one `increase()` per
counter, evaluated at "now" over the seconds since the step began; PromQL handles counter resets
(a restarted gateway) and sums over every gateway Prometheus scrapes.

What to ask is data: a metric profile (runbook/profile.py; shipped ones in metrics/profiles/)
maps each ingredient of the SLO metrics to a PromQL template grouped by the variant label, so
one query answers for every variant. An analysis sends the profile queries that yield an
ingredient some SLO needs (`needs`; `requests` always, for min_requests; the factory adds what
the built-in canary check reads), plus one query per custom PromQL SLO per variant it judges.
With the `canaryctl` profile that is two queries for the usual error rate and p95 SLOs.
`check()` sends the profile's request-count query under the runbook's selector and tries each
custom SLO query once; `recent_requests` sends that query over a longer window, for preflight's
"does the baseline have traffic here?".

A custom SLO's query must come back as one number per variant. No series, NaN or an infinity is
no data (the check is inconclusive); several series is a mistake in the runbook, InvalidInput
naming the SLO, as is a query Prometheus rejects as malformed (HTTP 400/422).

The counts are Prometheus' estimates, not exact: increase() extrapolates from the samples inside
the window to its edges (by up to a scrape interval at each end), and a series born inside the
window loses its first sample. Every series of one target shares its sample times, so the ratios
the SLOs judge (error rate, p95, cost per query) are not skewed by it.

`query_range` asks one query over a span at a fixed step, for a backtest's history
(canaryctl/backtest/prometheus.py); its failures are mapped as an instant query's.

Network failures, 429s and 5xx answers are retried (canaryctl/retry.py); what is still failing
then becomes MetricsBackendError naming the URL without credentials or query (canaryctl/redact.py),
so the runner can tell "Prometheus is down" from "the canary is bad".
"""

from __future__ import annotations

import math
import re
import time
from base64 import b64encode
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from canaryctl import retry
from canaryctl.errors import InvalidInput, MetricsBackendError
from canaryctl.metrics.base import Observation, VariantStats
from canaryctl.metrics.profile import load_profile
from canaryctl.metrics.series import VariantTotals, by_variant
from canaryctl.redact import redact_url, scrub
from canaryctl.retry import BACKEND, Retryable, RetryPolicy
from canaryctl.runbook.profile import MetricProfileSpec, ProfileQuery
from canaryctl.runbook.promql import promql_string, render

__all__ = ["PrometheusMetricsSource", "SloQuery", "VariantNames", "promql_matchers"]

VariantNames = str | Mapping[str, str]
"""What a flag variation is called in Prometheus: one label value, or one per label name."""

_REJECTED = re.compile(r"^HTTP Status Code (400|422)\b")
"""prometheus-api-client's message for an answer Prometheus gives a malformed query."""
_UNAVAILABLE = re.compile(r"^HTTP Status Code (429|5\d\d)\b")
"""... and for an answer another attempt may change: overloaded, restarting, behind a proxy."""
_OS_ERROR = re.compile(r"\[Errno -?\d+\] ([^'\")]+)")
"""The operating system's reason inside urllib3's message: `[Errno 111] Connection refused`."""
_CHECK_WINDOW = 60
"""Seconds of window custom SLO queries are tried over before anything moves."""


@dataclass(frozen=True)
class SloQuery:
    """A runbook's own PromQL SLO: `template` is asked once for each of `variants`."""

    name: str
    template: str
    variants: tuple[str, ...]


def promql_matchers(labels: Mapping[str, str]) -> str:
    """`a="x",b="y"` with values escaped as PromQL strings; "" when there are no labels."""
    return ",".join(f'{name}="{promql_string(value)}"' for name, value in sorted(labels.items()))


class PrometheusMetricsSource:
    """Counts per variant from Prometheus' HTTP API, through prometheus-api-client.

    `profile` says what to ask (default: the shipped `canaryctl` profile); `needs` limits the
    queries to those yielding these ingredients (default: all). `labels` are matchers added to
    every query (route, job...), `route` fills `{{route}}`. `variants` maps a flag variation to
    what Prometheus calls it (default: the same). `headers`/`auth` carry credentials already
    read from the environment by the factory; `verify` is a CA bundle path or False for
    insecure_skip_verify. A failing request is retried by `retry`, waiting with `sleep`.
    """

    def __init__(
        self,
        url: str,
        *,
        profile: MetricProfileSpec | None = None,
        needs: Collection[str] | None = None,
        slo_queries: Sequence[SloQuery] = (),
        labels: Mapping[str, str] | None = None,
        route: str | None = None,
        variants: Mapping[str, VariantNames] | None = None,
        timeout: float = 5.0,
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        verify: bool | str = True,
        clock: Callable[[], float] = time.time,
        retry: RetryPolicy = BACKEND,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if profile is None:
            profile = load_profile("canaryctl")
        self.url = url.rstrip("/")
        self.shown = redact_url(self.url)
        """The URL as messages show it: without userinfo, query or fragment."""
        self._credentials = _credentials(self.url, headers, auth)
        self.profile = profile
        wanted = {"requests", *(needs if needs is not None else profile.ingredients)}
        self.queries = tuple(q for q in profile.queries if wanted & set(q.yields))
        self.slo_queries = tuple(slo_queries)
        self._matchers = promql_matchers(labels or {})
        self._route = route
        self._variants = dict(variants or {})
        self._timeout, self._clock = timeout, clock
        self._retry, self._sleep = retry, sleep
        session = requests.Session()
        session.verify = verify
        self._client = PrometheusConnect(
            url=self.url,
            headers=dict(headers) if headers else None,
            auth=auth,
            retry=Retry(total=0, raise_on_status=False),  # canaryctl.retry retries, not urllib3
            session=session,
            timeout=timeout,
        )

    def check(self) -> None:
        """Prometheus answers the profile's request-count query under the runbook's selector
        (with our credentials); every custom SLO query is valid PromQL and gives at most one
        number per variant. Whether that query finds traffic is for `recent_requests` to say:
        a gateway that just started has none yet."""
        now = self._clock()
        self._query(self._requests_query(_CHECK_WINDOW), now)
        for slo in self.slo_queries:
            self._slo_values(slo, _CHECK_WINDOW, now)

    def recent_requests(self, window: float) -> Mapping[str, float]:
        query = self._requests_profile_query()
        result = self._query(self._requests_query(window), self._clock())
        counts: dict[str, float] = {}
        for variant, labels, value in self._variant_rows(query, result):
            if all(labels.get(n) == v for n, v in query.yields["requests"].items()):
                counts[variant] = counts.get(variant, 0.0) + value
        return counts

    def _requests_profile_query(self) -> ProfileQuery:
        return next(q for q in self.queries if "requests" in q.yields)

    def _requests_query(self, window: float) -> str:
        """The profile's request-count query under the selector, over `window` seconds."""
        values = {"window": f"{max(1, math.ceil(window))}s", "selector": self._matchers}
        return render(self._requests_profile_query().promql, values)

    def observe(self, since: float) -> Observation:
        now = self._clock()
        window = max(1, math.ceil(now - since))
        variants = self._counts(self.queries, window, now)
        slo_values = {slo.name: self._slo_values(slo, window, now) for slo in self.slo_queries}
        return Observation(start=now - window, end=now, variants=variants, slo_values=slo_values)

    def observe_shadow(self, since: float, *, baseline: str, candidate: str) -> Observation:
        """The profile's queries for the baseline, its `shadow` queries for the candidate, both
        evaluated at one instant over one window; InvalidInput if the profile has none."""
        if not self.profile.shadow:
            raise InvalidInput(
                "spec.metrics.profile: this metric profile has no shadow queries, so it cannot "
                "read the candidate's shadow traffic (the canaryctl profile has them)"
            )
        now = self._clock()
        window = max(1, math.ceil(now - since))
        live = self._counts(self.queries, window, now)
        shadow = self._counts(self.profile.shadow, window, now)
        variants = {
            name: stats
            for name, stats in ((baseline, live.get(baseline)), (candidate, shadow.get(candidate)))
            if stats is not None
        }
        return Observation(start=now - window, end=now, variants=variants)

    def _counts(
        self, queries: Sequence[ProfileQuery], window: int, now: float
    ) -> dict[str, VariantStats]:
        """Each variant's ingredients from `queries` over the last `window` seconds at `now`."""
        values = {"window": f"{window}s", "selector": self._matchers}
        totals: dict[str, VariantTotals] = {}
        for query in queries:
            promql = render(query.promql, values)
            for variant, labels, value in self._variant_rows(query, self._query(promql, now)):
                if not math.isfinite(value) or value < 0:
                    raise MetricsBackendError(
                        f"Prometheus at {self.shown}: the metric profile's query {promql!r} "
                        f"gave {value:g} for variant '{variant}', not a count (increase() is "
                        "finite and never negative); no verdict rests on it"
                    )
                row = totals.setdefault(variant, VariantTotals())
                for ingredient, wanted in query.yields.items():
                    if all(labels.get(name) == value_ for name, value_ in wanted.items()):
                        row.add_ingredient(ingredient, labels, value)
        return by_variant(totals)

    def name_of(self, variation: str, label: str) -> str:
        """What Prometheus calls `variation` in `label`: the runbook's mapping, else itself."""
        names = self._variants.get(variation, variation)
        return names if isinstance(names, str) else names.get(label, variation)

    def _variant_rows(
        self, query: ProfileQuery, result: list[dict[str, Any]]
    ) -> list[tuple[str, dict[str, str], float]]:
        """(flag variation, labels, value) per series; series without the variant label are
        traffic no variation can own, and are left out."""
        label = self.profile.label_of(query)
        variation_of = {self.name_of(v, label): v for v in self._variants}
        rows = []
        for labels, value in self._rows(result):
            name = labels.get(label)
            if name:
                rows.append((variation_of.get(name, name), labels, value))
        return rows

    def _slo_values(self, slo: SloQuery, window: int, now: float) -> dict[str, float]:
        """One query per variant; no series (or NaN, or an infinity) leaves the variant out: no
        data. An infinity is a division by zero, not a measurement: -Inf passed every `max`."""
        label = self.profile.variant_label
        values = {
            "window": f"{window}s",
            "selector": self._matchers,
            "variant_label": label,
            "route": promql_string(self._route or ""),
        }
        measured: dict[str, float] = {}
        for variation in slo.variants:
            name = promql_string(self.name_of(variation, label))
            promql = render(slo.template, {**values, "variant": name})
            try:
                result = self._query(promql, now, scalar_ok=True)
            except InvalidInput as exc:
                raise InvalidInput(f"SLO '{slo.name}': {exc}") from exc
            if len(result) > 1:
                shown = "; ".join(str(r.get("metric", r)) for r in result[:3])
                raise InvalidInput(
                    f"SLO '{slo.name}': the query for variant '{variation}' returned "
                    f"{len(result)} series, not one number ({shown}); aggregate it, e.g. "
                    f"sum(...), so it gives one value per variant. Query: {promql}"
                )
            for _, value in self._rows(result):
                if math.isfinite(value):
                    measured[variation] = value
        return measured

    def _rows(self, result: list[Any]) -> list[tuple[dict[str, str], float]]:
        """(labels, value) per series; NaN (no rate computable) is dropped."""
        try:
            parsed = [(dict(r["metric"]), float(r["value"][1])) for r in result]
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise MetricsBackendError(
                f"Prometheus at {self.shown} answered with an unexpected result shape ({exc})"
            ) from exc
        return [(m, v) for m, v in parsed if not math.isnan(v)]

    def _transport_reason(self, exc: requests.RequestException) -> str:
        """The cause in a few words (urllib3 nests it deep in a long message), with any URL in
        it redacted."""
        if isinstance(exc, requests.Timeout):
            return f"no answer within {self._timeout:g}s"
        cause = _OS_ERROR.search(str(exc))
        return cause.group(1) if cause else f"{type(exc).__name__}: {self._safe(exc)}"

    def _safe(self, exc: BaseException) -> str:
        """An exception's text fit to show: URLs redacted, our credentials replaced."""
        return scrub(str(exc), self._credentials)

    def instant(self, query: str, at: float) -> list[tuple[dict[str, str], float]]:
        """One instant query at `at` (a cost report's increase() over its range): (labels,
        value) per series, NaN dropped; retried and its failures mapped as every query here."""
        return self._rows(self._query(query, at))

    def query_range(self, query: str, start: float, end: float, step: float) -> list[Any]:
        """One range query (a backtest's history): a matrix, each series with its `values`
        ([timestamp, "value"] pairs), retried and its failures mapped as instant queries'."""
        exact = {"start": f"{start:.3f}", "end": f"{end:.3f}"}  # the library rounds to seconds
        result = self._ask(
            query,
            lambda: self._client.custom_query_range(
                query,
                start_time=datetime.fromtimestamp(start, UTC),
                end_time=datetime.fromtimestamp(end, UTC),
                step=f"{step:g}s",
                params=exact,
            ),
        )
        if not isinstance(result, list):
            raise MetricsBackendError(
                f"Prometheus at {self.shown} answered {query!r} with a non-matrix result"
            )
        return result

    def _query(self, query: str, at: float, *, scalar_ok: bool = False) -> list[Any]:
        """One instant query at `at`, as a vector (a scalar becomes one unlabelled series when
        `scalar_ok`), retried."""
        at_time = {"time": f"{at:.3f}"}
        result = self._ask(query, lambda: self._client.custom_query(query, params=at_time))
        if scalar_ok and _is_scalar(result):
            return [{"metric": {}, "value": result}]
        if not isinstance(result, list):
            raise MetricsBackendError(
                f"Prometheus at {self.shown} answered {query!r} with a non-vector result"
            )
        return result

    def _ask(self, query: str, call: Callable[[], Any]) -> Any:
        """`call` (one request for `query`), retried; library and transport exceptions stop
        here."""

        def attempt() -> Any:
            try:
                return call()
            except PrometheusApiClientException as exc:
                if _UNAVAILABLE.match(str(exc)):
                    raise Retryable(self._safe(exc)) from exc
                raise
            except requests.RequestException as exc:
                raise Retryable(self._transport_reason(exc)) from exc

        try:
            result = retry.call(attempt, self._retry, sleep=self._sleep)
        except Retryable as failure:
            if isinstance(failure.__cause__, PrometheusApiClientException):
                raise MetricsBackendError(
                    f"Prometheus at {self.shown} refused the query {query!r} "
                    f"({self._retry.attempts} attempts): {failure.reason}"
                ) from failure.__cause__
            raise MetricsBackendError(
                f"cannot reach Prometheus at {self.shown} ({self._retry.attempts} attempts): "
                f"{failure.reason}"
            ) from failure.__cause__
        except PrometheusApiClientException as exc:
            # The library puts the status and body in the message; both are safe to show.
            reason = self._safe(exc)
            if _REJECTED.match(reason):
                raise InvalidInput(
                    f"Prometheus at {self.shown} rejected {query!r}: {reason}"
                ) from exc
            raise MetricsBackendError(
                f"Prometheus at {self.shown} refused the query {query!r}: {reason}"
            ) from exc
        except (ValueError, KeyError, RecursionError) as exc:  # a login page, JSON too deep
            raise MetricsBackendError(
                f"Prometheus at {self.shown} did not answer as the query API does "
                f"({type(exc).__name__}: {self._safe(exc)[:200]})"
            ) from exc
        return result


def _credentials(
    url: str, headers: Mapping[str, str] | None, auth: tuple[str, str] | None
) -> list[str]:
    """Everything secret we send, as a server may echo it back in an error page: header values
    and the token after their scheme (`Bearer x`), basic auth as given and as sent (base64), the
    URL's userinfo and query."""
    parts = urlsplit(url)
    values = [*(headers or {}).values(), *(auth or ())]
    values += [value.split(" ", 1)[-1] for value in values]
    pairs = [auth] if auth else []
    if parts.username or parts.password:
        pairs.append((unquote(parts.username or ""), unquote(parts.password or "")))
    for user, password in pairs:
        values += [user, password, b64encode(f"{user}:{password}".encode()).decode()]
    values += [parts.query, *(value for _, value in parse_qsl(parts.query))]
    return values


def _is_scalar(result: object) -> bool:
    """A scalar result is `[timestamp, "value"]`; a vector is a list of series objects."""
    return (
        isinstance(result, list)
        and len(result) == 2
        and isinstance(result[0], int | float)
        and isinstance(result[1], str)
    )
