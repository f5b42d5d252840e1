"""Send a benchmark to OpenAI-compatible endpoints: bounded concurrency, retries, timeouts.

Both variants run at once, each with at most `concurrency` requests in flight. An attempt that
fails in a way another attempt could fix (timeout, connection error, 5xx, 429) is retried with
backoff (honouring a short Retry-After); an item that still has no answer scores as wrong and is
counted as an error. An endpoint that answers no item at all is an infrastructure failure
(BackendError, exit 3), not a bad score.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import httpx

from canaryctl import fastjson, retry
from canaryctl.errors import BackendError
from canaryctl.evals.benchmark import BenchmarkItem, score
from canaryctl.redact import redact_url
from canaryctl.retry import BACKEND, Retryable
from canaryctl.runbook.price import PriceSpec

__all__ = ["Endpoint", "EvalProgress", "ItemResult", "chat_url", "run_benchmark"]

EVAL = replace(BACKEND, max_wait=5.0)
"""Per item: a short Retry-After is honoured, a long one is capped (a gate must finish)."""


@dataclass(frozen=True)
class Endpoint:
    """One variant's model as the eval calls it; `api_key` comes from the environment."""

    variant: str
    url: str
    model: str
    price: PriceSpec | None
    """None: the model has no price, so the run's cost is unknown (not $0)."""
    api_key: str | None = None


@dataclass(frozen=True)
class ItemResult:
    item: str
    correct: bool
    latency: float | None
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def cost(self, price: PriceSpec) -> float:
        return price.usd(self.prompt_tokens, self.completion_tokens)


class EvalProgress(Protocol):
    def start(self, variant: str, total: int) -> None: ...

    def advance(self, variant: str) -> None: ...


def chat_url(base_url: str) -> str:
    """OpenAI's own base URL is usually written with /v1, self-hosted ones without."""
    base = base_url.rstrip("/")
    return base + ("/chat/completions" if base.endswith("/v1") else "/v1/chat/completions")


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["retry-after"])
    except (KeyError, ValueError):
        return None


async def _attempt(
    client: httpx.AsyncClient,
    endpoint: Endpoint,
    item: BenchmarkItem,
    timeout: float,
    max_tokens: int | None,
) -> ItemResult:
    body: dict[str, Any] = {"model": endpoint.model, "messages": item.chat(), "stream": False}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    headers = {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}
    started = time.perf_counter()
    try:
        response = await client.post(
            endpoint.url, json=body, headers=headers, timeout=httpx.Timeout(timeout)
        )
    except httpx.TimeoutException as exc:
        raise Retryable(f"no answer within {timeout:g}s") from exc
    except httpx.HTTPError as exc:
        raise Retryable(type(exc).__name__) from exc
    latency = time.perf_counter() - started
    if response.status_code >= 500 or response.status_code == 429:
        raise Retryable(f"HTTP {response.status_code}", retry_after=_retry_after(response))
    item_id = item.id or ""
    if response.status_code != 200:
        return ItemResult(item_id, False, latency, f"HTTP {response.status_code}")
    try:
        data = fastjson.loads(response.content)
        reply = str(data["choices"][0]["message"]["content"] or "")
    except (ValueError, LookupError, TypeError):
        return ItemResult(item_id, False, latency, "malformed completion")
    usage = data.get("usage") or {}
    return ItemResult(
        item_id,
        score(item, reply),
        latency,
        None,
        int(usage.get("prompt_tokens") or 0),
        int(usage.get("completion_tokens") or 0),
    )


async def _one(
    client: httpx.AsyncClient,
    endpoint: Endpoint,
    item: BenchmarkItem,
    *,
    timeout: float,
    retries: int,
    max_tokens: int | None,
) -> ItemResult:
    policy = replace(EVAL, attempts=retries + 1)
    try:
        return await retry.call_async(
            lambda: _attempt(client, endpoint, item, timeout, max_tokens), policy
        )
    except Retryable as failure:
        return ItemResult(item.id or "", False, None, f"{failure} after {retries + 1} attempt(s)")


async def _variant(
    endpoint: Endpoint,
    items: Sequence[BenchmarkItem],
    progress: EvalProgress | None,
    *,
    concurrency: int,
    tls: ssl.SSLContext,
    **options: Any,
) -> list[ItemResult]:
    """`concurrency` workers, each with its own one-connection client, share the items.

    One client per worker rather than one pool for all: httpcore's pool scans every connection
    for every request, which at 64 connections cost more CPU than the requests themselves
    (benchmarks/eval_throughput.py). The workers share one TLS context: loading the CA bundle
    once per client would cost more than that.
    """
    if progress is not None:
        progress.start(endpoint.variant, len(items))
    results: list[ItemResult | None] = [None] * len(items)
    pending = iter(enumerate(items))

    async def worker() -> None:
        limits = httpx.Limits(max_connections=1)
        async with httpx.AsyncClient(limits=limits, verify=tls) as client:
            for index, item in pending:
                results[index] = await _one(client, endpoint, item, **options)
                if progress is not None:
                    progress.advance(endpoint.variant)

    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(items)))))
    done = [r for r in results if r is not None]
    if all(r.error is not None for r in done):
        raise BackendError(
            f"eval: {endpoint.variant} at {redact_url(endpoint.url)} answered none of "
            f"{len(items)} items (last: {done[-1].error})"
        )
    return done


async def _all(
    endpoints: Sequence[Endpoint],
    items: Sequence[BenchmarkItem],
    progress: EvalProgress | None,
    options: dict[str, Any],
) -> dict[str, list[ItemResult]]:
    tls = httpx.create_ssl_context()  # what each client would load: certifi by default
    results = await asyncio.gather(
        *(_variant(e, items, progress, tls=tls, **options) for e in endpoints)
    )
    return {e.variant: r for e, r in zip(endpoints, results, strict=True)}


def run_benchmark(
    endpoints: Sequence[Endpoint],
    items: Sequence[BenchmarkItem],
    *,
    concurrency: int = 8,
    timeout: float = 30.0,
    retries: int = 2,
    max_tokens: int | None = None,
    progress: EvalProgress | None = None,
) -> dict[str, list[ItemResult]]:
    """Each endpoint's result per item, in the benchmark's order, keyed by variant."""
    options = {
        "concurrency": concurrency,
        "timeout": timeout,
        "retries": retries,
        "max_tokens": max_tokens,
    }
    return asyncio.run(_all(endpoints, items, progress, options))
