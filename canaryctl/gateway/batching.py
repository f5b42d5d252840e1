"""Join concurrent /v1/embeddings requests to one model into one upstream call, and split the
answer back: fewer calls (and fewer rate-limit slots) for the same vectors.

A model with `batch: {window, max_inputs}` (runbook/gateway.py BatchSpec) has its embeddings
attempts go through a Batcher. The first request of a batch opens it; the batch goes out
`window` after that, or at once when it holds `max_inputs` inputs, so no request waits longer
than one window. Requests are joined only when everything but their inputs is the same: the
route, the flag's variant, the model, the API key and the team (a tenant's text never travels
with another's), and every other field of the body (`dimensions`, `encoding_format`, `user`).

The batcher sits under the fallback chain: it replaces one attempt at one model. A failed joined
call is every member's failed attempt, so each walks its own chain (and members that fall back
join again at the next model) and is counted as a single request would be. Admission, budgets
and metering stay per request: each member is admitted on its own estimate before it joins, and
settled and metered on its own share of the batch's usage (`split_usage`).

Only inputs that cannot be the reason a call is refused are joined: a string or a list of
strings, none empty. Token arrays, empty strings and anything else go alone, so that the model's
400 reaches only them. A joined call the model still refuses (400, 413, 422: an input over the
model's context, say) is asked again member by member, so one request's bad input fails no
other (counted in llm_batch_refused_total).

The decisions (`batch_key`, `joinable_inputs`, `apportion`, `split_usage`, `split_answer`) are
pure; the Batcher holds the open batches on the event loop, with an injectable clock and timer.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from canaryctl.gateway.answers import malformed
from canaryctl.gateway.budgets import estimate_tokens
from canaryctl.gateway.failures import UpstreamFailure
from canaryctl.gateway.identity import Identity
from canaryctl.gateway.metrics import BatchMetrics
from canaryctl.gateway.routing import Choice
from canaryctl.runbook.gateway import ModelSpec

__all__ = [
    "BatchKey",
    "Batcher",
    "apportion",
    "batch_key",
    "joinable_inputs",
    "split_answer",
    "split_usage",
]

Send = Callable[[ModelSpec, dict[str, Any]], Awaitable[dict[str, Any]]]
"""One upstream embeddings call (Upstream.embed): the answer in OpenAI shape, or UpstreamFailure."""

_USAGE_COUNTS = ("prompt_tokens", "completion_tokens", "total_tokens")


@dataclass(frozen=True)
class BatchKey:
    """What requests must share to be joined."""

    route: str
    variant: str
    model: str
    key_id: str | None
    team: str | None
    options: str
    """The body's fields other than `input` (and `model`, the route's name), as sorted JSON."""


def batch_key(
    choice: Choice, identity: Identity, model: ModelSpec, request: Mapping[str, Any]
) -> BatchKey:
    options = {k: v for k, v in request.items() if k not in ("input", "model")}
    return BatchKey(
        choice.route.name,
        choice.variant,
        model.name,
        identity.key_id,
        identity.team,
        json.dumps(options, sort_keys=True, separators=(",", ":")),
    )


def joinable_inputs(request: Mapping[str, Any]) -> list[str] | None:
    """The request's texts when it may join others (a string, or a list of strings, none
    empty); None for anything a model might refuse on its own account."""
    given = request.get("input")
    texts = [given] if isinstance(given, str) else given
    if not isinstance(texts, list) or not texts:
        return None
    if not all(isinstance(text, str) and text for text in texts):
        return None
    return texts


def apportion(total: int, weights: Sequence[int]) -> list[int]:
    """`total` split in proportion to `weights` (each > 0) into whole shares that sum to it
    exactly: each gets the floor of its quota, then the units left over go one each to the
    largest remainders, the earlier member first on a tie (Hamilton's method)."""
    whole = sum(weights)
    quotas = [total * w for w in weights]
    shares = [q // whole for q in quotas]
    by_remainder = sorted(range(len(weights)), key=lambda i: (-(quotas[i] % whole), i))
    for i in by_remainder[: total - sum(shares)]:
        shares[i] += 1
    return shares


def split_usage(usage: Any, weights: Sequence[int]) -> list[dict[str, int] | None]:
    """Each member's part of the batch's usage: every token count the provider reported,
    apportioned by the members' estimated input tokens, so the parts sum to the whole."""
    if not isinstance(usage, dict):
        return [None] * len(weights)
    counts = {k: usage[k] for k in _USAGE_COUNTS if isinstance(usage.get(k), int)}
    parts: list[dict[str, int]] = [{} for _ in weights]
    for name, total in counts.items():
        for part, share in zip(parts, apportion(total, weights), strict=True):
            part[name] = share
    return list(parts)


def split_answer(
    model: ModelSpec, answer: Mapping[str, Any], sizes: Sequence[int], weights: Sequence[int]
) -> list[dict[str, Any]]:
    """The joined answer cut into one answer per member, `sizes[i]` vectors each, in order and
    re-indexed from 0; a malformed failure when the vectors do not match the inputs sent."""
    vectors = list(answer["data"])
    sent = sum(sizes)
    if len(vectors) != sent:
        raise malformed(model, f"{len(vectors)} embeddings for the {sent} inputs of a batch")
    indexes = [v.get("index") for v in vectors]
    if all(isinstance(i, int) for i in indexes):
        if sorted(indexes) != list(range(sent)):
            raise malformed(model, "the embeddings' indexes are not those of the inputs sent")
        vectors.sort(key=lambda v: v["index"])
    elif any(i is not None for i in indexes):
        raise malformed(model, "some embeddings have an index and some do not")
    rest = {k: v for k, v in answer.items() if k not in ("data", "usage")}
    usages = split_usage(answer.get("usage"), weights)
    parts, start = [], 0
    for size, usage in zip(sizes, usages, strict=True):
        data = [{**v, "index": j} for j, v in enumerate(vectors[start : start + size])]
        part = {**rest, "data": data}
        if usage is not None:
            part["usage"] = usage
        parts.append(part)
        start += size
    return parts


class Cancellable(Protocol):
    def cancel(self) -> object: ...


Schedule = Callable[[float, Callable[[], None]], Cancellable]
"""Call back after a delay in seconds (the event loop's call_later; tests fire it by hand)."""


@dataclass
class _Member:
    request: dict[str, Any]
    inputs: list[str]
    weight: int
    joined: float
    future: asyncio.Future[dict[str, Any]]


@dataclass
class _Batch:
    model: ModelSpec
    labels: dict[str, str]
    members: list[_Member] = field(default_factory=list)
    inputs: int = 0
    timer: Cancellable | None = None


def _labels(key: BatchKey, model: ModelSpec) -> dict[str, str]:
    return {
        "route": key.route,
        "variant": key.variant,
        "model": model.name,
        "provider": model.provider,
    }


class Batcher:
    """The open batches of one gateway; `embed` stands in for one upstream attempt.

    `clock` is monotonic seconds (for the wait metric); `schedule` arms each batch's window
    (default: the running loop's call_later).
    """

    def __init__(
        self,
        send: Send,
        metrics: BatchMetrics,
        *,
        clock: Callable[[], float] = time.monotonic,
        schedule: Schedule | None = None,
    ) -> None:
        self._send = send
        self._metrics = metrics
        self._clock = clock
        self._schedule = schedule
        self._open: dict[BatchKey, _Batch] = {}
        self._running: set[asyncio.Task[None]] = set()

    async def embed(
        self,
        model: ModelSpec,
        request: dict[str, Any],
        choice: Choice,
        identity: Identity,
    ) -> dict[str, Any]:
        """The model's answer to `request` alone, whether or not it travelled with others."""
        spec = model.batch
        if spec is None:
            return await self._send(model, request)
        key = batch_key(choice, identity, model, request)
        labels = _labels(key, model)
        self._metrics.requests.labels(**labels).inc()
        inputs = joinable_inputs(request)
        if inputs is None or len(inputs) >= spec.max_inputs:
            self._metrics.wait.labels(**labels).observe(0.0)
            return await self._alone(model, request, labels)
        batch = self._open.get(key)
        if batch is not None and batch.inputs + len(inputs) > spec.max_inputs:
            self._dispatch(key, batch)
            batch = None
        if batch is None:
            batch = self._open[key] = _Batch(model, labels)
            batch.timer = self._arm(spec.window, lambda: self._dispatch(key, batch))
        weight = estimate_tokens({"input": inputs}, 0)[0]
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        batch.members.append(_Member(request, inputs, weight, self._clock(), future))
        batch.inputs += len(inputs)
        if batch.inputs >= spec.max_inputs:
            self._dispatch(key, batch)
        return await future

    def _arm(self, delay: float, callback: Callable[[], None]) -> Cancellable:
        if self._schedule is not None:
            return self._schedule(delay, callback)
        return asyncio.get_running_loop().call_later(delay, callback)

    def _dispatch(self, key: BatchKey, batch: _Batch) -> None:
        """Send `batch` now (its window ended or it is full); a batch goes out once."""
        if self._open.get(key) is not batch:
            return
        del self._open[key]
        if batch.timer is not None:
            batch.timer.cancel()
        now = self._clock()
        for member in batch.members:
            self._metrics.wait.labels(**batch.labels).observe(now - member.joined)
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._running.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._running.discard)

    async def _alone(
        self, model: ModelSpec, request: dict[str, Any], labels: dict[str, str]
    ) -> dict[str, Any]:
        self._metrics.size.labels(**labels).observe(1)
        return await self._send(model, request)

    async def _run(self, batch: _Batch) -> None:
        """Send the joined call in a task of its own, so that a member whose client left does
        not take the others' call with it, and hand each member its part (or the failure)."""
        members = batch.members
        try:
            results = await self._results(batch)
        except asyncio.CancelledError:
            for member in members:
                member.future.cancel()
            raise
        except Exception as exc:  # what a single call would have raised reaches each member
            results = [exc] * len(members)
        for member, result in zip(members, results, strict=True):
            if member.future.done():  # its caller is gone
                continue
            if isinstance(result, BaseException):
                member.future.set_exception(result)
            else:
                member.future.set_result(result)

    async def _results(self, batch: _Batch) -> Sequence[dict[str, Any] | BaseException]:
        members, model = batch.members, batch.model
        if len(members) == 1:
            return [await self._alone(model, members[0].request, batch.labels)]
        joined = {**members[0].request, "input": [t for m in members for t in m.inputs]}
        self._metrics.size.labels(**batch.labels).observe(len(members))
        try:
            answer = await self._send(model, joined)
            sizes = [len(m.inputs) for m in members]
            return split_answer(model, answer, sizes, [m.weight for m in members])
        except UpstreamFailure as failure:
            if not failure.rejected:
                return [failure] * len(members)
        # Refused: perhaps for one member's input. Each is asked alone, as it would have been.
        self._metrics.refused.labels(**batch.labels).inc()
        alone = (self._alone(model, m.request, batch.labels) for m in members)
        return await asyncio.gather(*alone, return_exceptions=True)
