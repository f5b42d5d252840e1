"""What the gateways saw per model: the p95 of llm_request_duration_seconds and the mean tokens
per request, from a scrape of their /metrics (counts since each started) or from Prometheus
(over a window, which also gives the queries per tier). Backend failures are retried with the
shared policy, then MetricsBackendError (exit 3); URLs are shown without credentials.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

from canaryctl import fastjson, retry
from canaryctl.errors import InvalidInput, MetricsBackendError
from canaryctl.metrics.measures import histogram_quantile
from canaryctl.metrics.series import DURATION_BUCKET, REQUESTS, TOKENS
from canaryctl.redact import redact_url
from canaryctl.retry import BACKEND, Retryable, RetryPolicy
from canaryctl.runbook.optimize import PrometheusFactsSpec

__all__ = ["MONTH", "ObservedFacts", "prometheus_observed", "prometheus_traffic", "scrape_observed"]


@dataclass(frozen=True)
class ObservedFacts:
    """One model's traffic as the gateway counted it (cumulative since the gateway started)."""

    model: str
    requests: float
    p95_seconds: float | None
    prompt_tokens: float | None
    completion_tokens: float | None
    """Mean tokens per request that reported usage; None without any."""
    source: str = "scrape"
    """`scrape` (counts since each gateway started) or `prometheus` (over its window)."""


def scrape_observed(
    urls: Sequence[str],
    route: str,
    *,
    client: httpx.Client | None = None,
    policy: RetryPolicy = BACKEND,
) -> dict[str, ObservedFacts]:
    """Per model (what answered), from the gateways' /metrics: the p95 of
    llm_request_duration_seconds (Prometheus' histogram_quantile over its buckets) and mean
    tokens per request. MetricsBackendError (exit 3) when a gateway cannot be read."""
    buckets: dict[str, dict[float, float]] = {}
    requests: dict[str, float] = {}
    tokens: dict[tuple[str, str], float] = {}
    own = client or httpx.Client(timeout=5.0)
    try:
        for url in urls:
            for sample in _samples(own, url, policy):
                name, labels, value = sample
                if labels.get("route") != route or "model" not in labels:
                    continue
                model = labels["model"]
                if name == DURATION_BUCKET:
                    le = float(labels["le"])
                    per = buckets.setdefault(model, {})
                    per[le] = per.get(le, 0.0) + value
                elif name == REQUESTS and labels.get("outcome") != "rejected":
                    requests[model] = requests.get(model, 0.0) + value
                elif name == TOKENS and labels.get("kind") in ("prompt", "completion"):
                    key = (model, labels["kind"])
                    tokens[key] = tokens.get(key, 0.0) + value
    finally:
        if client is None:
            own.close()
    observed = {}
    for model, count in requests.items():
        quantile = histogram_quantile(0.95, tuple(sorted(buckets.get(model, {}).items())))
        prompt, completion = tokens.get((model, "prompt")), tokens.get((model, "completion"))
        with_usage = count if prompt is not None or completion is not None else 0.0
        observed[model] = ObservedFacts(
            model,
            count,
            quantile,
            (prompt or 0.0) / with_usage if with_usage else None,
            (completion or 0.0) / with_usage if with_usage else None,
        )
    return observed


_P95 = (
    "histogram_quantile(0.95, sum by (model, le) "
    "(increase(llm_request_duration_seconds_bucket{{route={route}}}[{window}])))"
)
_REQUESTS = (
    'sum by (model) (increase(llm_requests_total{{route={route},outcome!="rejected"}}[{window}]))'
)
_TOKENS = "sum by (model, kind) (increase(llm_tokens_total{{route={route}}}[{window}]))"


def prometheus_observed(
    spec: PrometheusFactsSpec,
    route: str,
    *,
    client: httpx.Client | None = None,
    policy: RetryPolicy = BACKEND,
    environ: Mapping[str, str] = os.environ,
) -> dict[str, ObservedFacts]:
    """Per model, over the last `window`, the same facts as a scrape: Prometheus computes the
    p95 with histogram_quantile over the buckets' increase, and the tokens per request."""
    headers = _auth(spec, environ)
    values = {"route": json.dumps(route), "window": f"{math.ceil(spec.window)}s"}
    own = client or httpx.Client(timeout=10.0)
    try:

        def ask(template: str) -> list[tuple[dict[str, str], float]]:
            return _promql(own, spec.url, template.format(**values), headers, policy)

        p95s = {labels.get("model", ""): value for labels, value in ask(_P95)}
        requests = {labels.get("model", ""): value for labels, value in ask(_REQUESTS)}
        tokens = {
            (labels.get("model", ""), labels.get("kind", "")): v for labels, v in ask(_TOKENS)
        }
    finally:
        if client is None:
            own.close()
    observed = {}
    for model, count in requests.items():
        if count <= 0 or not model:
            continue
        p95 = p95s.get(model)
        prompt, completion = tokens.get((model, "prompt")), tokens.get((model, "completion"))
        observed[model] = ObservedFacts(
            model,
            count,
            p95 if p95 is not None and math.isfinite(p95) else None,
            None if prompt is None else prompt / count,
            None if completion is None else completion / count,
            "prometheus",
        )
    return observed


_BY_TIER = (
    'sum by (tier) (increase(llm_requests_total{{route={route},outcome!="rejected"}}[{window}]))'
)
MONTH = 30 * 86400.0


def prometheus_traffic(
    spec: PrometheusFactsSpec,
    route: str,
    *,
    client: httpx.Client | None = None,
    policy: RetryPolicy = BACKEND,
    environ: Mapping[str, str] = os.environ,
) -> dict[str, float]:
    """Queries a month per tier: the requests of the last `window`, scaled to 30 days."""
    values = {"route": json.dumps(route), "window": f"{math.ceil(spec.window)}s"}
    headers = _auth(spec, environ)
    own = client or httpx.Client(timeout=10.0)
    try:
        rows = _promql(own, spec.url, _BY_TIER.format(**values), headers, policy)
    finally:
        if client is None:
            own.close()
    return {labels.get("tier", ""): value * MONTH / spec.window for labels, value in rows}


def _auth(spec: PrometheusFactsSpec, environ: Mapping[str, str]) -> dict[str, str]:
    if spec.bearer_token_env is None:
        return {}
    token = environ.get(spec.bearer_token_env)
    if not token:
        raise InvalidInput(
            f"spec.prometheus.bearer_token_env: environment variable {spec.bearer_token_env} "
            "is not set"
        )
    return {"Authorization": f"Bearer {token}"}


def _promql(
    client: httpx.Client,
    url: str,
    query: str,
    headers: Mapping[str, str],
    policy: RetryPolicy,
) -> list[tuple[dict[str, str], float]]:
    """An instant vector: (labels, value) per series. MetricsBackendError after the retries."""

    def attempt() -> list[tuple[dict[str, str], float]]:
        try:
            response = client.get(
                url.rstrip("/") + "/api/v1/query", params={"query": query}, headers=headers
            )
        except httpx.HTTPError as exc:
            raise Retryable(type(exc).__name__) from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise Retryable(f"HTTP {response.status_code}")
        try:
            data = fastjson.loads(response.content)
            if response.status_code != 200 or data.get("status") != "success":
                raise MetricsBackendError(
                    f"cost optimize: Prometheus at {redact_url(url)} refused `{query}`: "
                    f"{data.get('error') or response.status_code}"
                )
            return [(dict(row["metric"]), float(row["value"][1])) for row in data["data"]["result"]]
        except (ValueError, LookupError, TypeError, AttributeError) as exc:
            raise Retryable(f"not a Prometheus answer ({type(exc).__name__})") from exc

    try:
        return retry.call(attempt, policy)
    except Retryable as failure:
        raise MetricsBackendError(
            f"cost optimize: cannot query Prometheus at {redact_url(url)} after "
            f"{policy.attempts} attempt(s): {failure.reason}"
        ) from failure.__cause__


def _samples(
    client: httpx.Client, url: str, policy: RetryPolicy
) -> list[tuple[str, dict[str, str], float]]:
    def attempt() -> list[tuple[str, dict[str, str], float]]:
        try:
            response = client.get(url)
        except httpx.HTTPError as exc:
            raise Retryable(type(exc).__name__) from exc
        if response.status_code != 200:
            raise Retryable(f"HTTP {response.status_code}")
        try:
            families = list(text_string_to_metric_families(response.text))
        except (ValueError, IndexError, KeyError, TypeError) as exc:
            raise Retryable(f"not Prometheus exposition text ({exc})") from exc
        return [(s.name, dict(s.labels), s.value) for f in families for s in f.samples]

    try:
        return retry.call(attempt, policy)
    except Retryable as failure:
        raise MetricsBackendError(
            f"cost optimize: cannot read metrics from {redact_url(url)} after "
            f"{policy.attempts} attempt(s): {failure.reason}"
        ) from failure.__cause__
