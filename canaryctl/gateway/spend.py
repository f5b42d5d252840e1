"""What the bill is made of, counted in the gateway with bounded memory and bounded series.

`canaryctl cost report` reads these families (gateway/metrics.py) to say where the money goes:

- cost, requests and tokens by route, model, team and job (`llm_spend_*`). A team or job gets
  its own label value when the document lists it (`spend.teams`, `spend.jobs`) or when a
  space-saving sketch finds it heavy (at least `admit_share` of the requests seen), up to
  `extra_values` more; every other value is `other`, so a client sending made-up job names
  cannot grow the series count. An admitted value keeps its series (a vanishing counter would
  look like a reset); what it spent before it was admitted was counted as `other`.
- the heaviest users by cost: a weighted space-saving sketch of `user_counters` counters
  (Metwally, Agrawal and El Abbadi, 2005), exported as gauges for its `top_users` heaviest:
  each estimate is an upper bound, off by at most its exported error, and any user who spent
  more than 1/`user_counters` of the total is certain to be held.
- repeats: each request that reaches a model is fingerprinted (an 8-byte BLAKE2b hash of its
  route, job and normalised body, the cache's normalisation; the prompt itself is never kept)
  and looked up among the fingerprints of the last `window` seconds, at most `fingerprints` of
  them (oldest dropped first; dropping one younger than the window is counted, since its
  repeats then go unseen). A repeat of an answered request is *redundant*, a repeat of a failed
  one is a *retry*; both are counted with what they cost.
- fallback cost (answers a fallback gave) and what cache hits saved: the price of the cached
  answer's tokens at the model that gave it, i.e. the call that was not bought.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from canaryctl.gateway.cache import normalised_request
from canaryctl.gateway.identity import Identity
from canaryctl.gateway.metrics import (
    NO_VALUE,
    OTHER_VALUE,
    TOP_USER_COST,
    TOP_USER_COST_ERROR,
    Children,
    GatewayMetrics,
)
from canaryctl.runbook.gateway import ModelSpec, SpendSpec

__all__ = ["BoundedValues", "RecentRequests", "Repeat", "SpaceSaving", "SpendMeter", "fingerprint"]

Repeat = Literal["new", "redundant", "retry"]


@dataclass(frozen=True)
class Heavy:
    item: str
    estimate: float
    """At least the item's true weight."""
    error: float
    """The estimate minus at most this is the true weight."""


class SpaceSaving:
    """The space-saving heavy-hitters sketch, weighted: at most `capacity` counters.

    An item already held adds its weight; a new one takes a free counter, or else the smallest
    counter's place, inheriting that count as its error. Every item whose true weight exceeds
    total / capacity is held, and every estimate is within its error of the truth.

    The smallest counter is found through a min-heap holding one (count, item) entry per held
    item, refreshed lazily: counts only grow, so an entry's count is at most its item's, and
    an entry at the top whose count is still its item's is the smallest. A stale top is pushed
    back down with its item's count, which pays for one add the item had since; so an add costs
    O(log capacity) amortised, not a scan of every counter for each new user.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("a space-saving sketch needs at least one counter")
        self.capacity = capacity
        self.total = 0.0
        self._counts: dict[str, float] = {}
        self._errors: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []

    def add(self, item: str, weight: float = 1.0) -> None:
        self.total += weight
        counts = self._counts
        if item in counts:
            counts[item] += weight
            return
        floor = self._evict() if len(counts) >= self.capacity else 0.0
        counts[item] = floor + weight
        self._errors[item] = floor
        heapq.heappush(self._heap, (floor + weight, item))

    def _evict(self) -> float:
        """Drop the item with the smallest count; that count."""
        heap, counts = self._heap, self._counts
        while True:
            count, item = heap[0]
            now = counts[item]
            if now == count:
                heapq.heappop(heap)
                del counts[item], self._errors[item]
                return count
            heapq.heapreplace(heap, (now, item))

    def get(self, item: str) -> Heavy | None:
        if item not in self._counts:
            return None
        return Heavy(item, self._counts[item], self._errors[item])

    def top(self, n: int) -> list[Heavy]:
        """The `n` largest estimates, largest first (ties by name, so output is stable)."""
        ranked = sorted(self._counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
        return [Heavy(item, count, self._errors[item]) for item, count in ranked]

    def __len__(self) -> int:
        return len(self._counts)


class BoundedValues:
    """The values one label may take: `configured` ones, then up to `extra` more that the
    sketch shows with at least `admit_share` of the requests seen (and 10 requests, so that the
    first few requests do not claim every place); the rest are OTHER_VALUE."""

    _MIN_REQUESTS = 10

    def __init__(self, configured: Iterable[str], extra: int, admit_share: float) -> None:
        self._configured = frozenset(configured)
        self._admitted: set[str] = set()
        self._extra = extra
        self._share = admit_share
        self._sketch = SpaceSaving(max(1, 4 * extra))

    def label(self, value: str | None) -> str:
        if not value:
            return NO_VALUE
        if value in self._configured or value in self._admitted:
            self._sketch.total += 1
            return value
        if len(self._admitted) >= self._extra:
            return OTHER_VALUE
        self._sketch.add(value)
        held = self._sketch.get(value)
        assert held is not None  # just added
        guaranteed = held.estimate - held.error
        if guaranteed >= max(self._MIN_REQUESTS, self._share * self._sketch.total):
            self._admitted.add(value)
            return value
        return OTHER_VALUE


def fingerprint(route: str, job: str | None, chat: Mapping[str, Any]) -> int:
    """8 bytes of BLAKE2b over the route, the job and the normalised request: equal requests
    share it, and nothing of the prompt can be read back from it.

    The hashed text is sorted JSON, which writes each value one way and no two values alike.
    orjson writes it several times faster than `json` (spend_memory.py measures it); what
    orjson refuses (an integer past 64 bits, a lone surrogate) `json` writes instead, behind
    another first byte, so the two writings never meet. orjson would write NaN as null, but no
    NaN gets this far: the gateway refuses it in a body (canaryctl/request_limits.py).
    """
    value = [route, job or "", normalised_request(chat)]
    try:
        text = b"o" + orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=str)
    except TypeError:
        text = b"j" + json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


class RecentRequests:
    """Fingerprints seen in the last `window` seconds, at most `capacity`, oldest first.

    Each entry is two ints: the fingerprint, and a stamp holding when it was last seen (in
    microseconds) with, in its lowest bit, whether that request was answered (a repeat of a
    failed one is a retry, not a redundant call). `clock` is monotonic seconds.
    """

    def __init__(
        self, window: float, capacity: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.window, self.capacity = window, capacity
        self.evicted_young = 0
        """Entries dropped before their window ended because the sketch was full."""
        self._clock = clock
        self._seen: OrderedDict[int, int] = OrderedDict()

    def see(self, key: int, answered: bool) -> Repeat:
        now = round(self._clock() * 1e6)
        horizon = now - round(self.window * 1e6)
        seen = self._seen
        while seen:
            oldest = next(iter(seen))
            if seen[oldest] >> 1 > horizon:
                break
            del seen[oldest]
        before = seen.pop(key, None)
        seen[key] = now << 1 | answered
        if len(seen) > self.capacity:
            seen.popitem(last=False)
            self.evicted_young += 1
        if before is None:
            return "new"
        return "redundant" if before & 1 else "retry"

    def __len__(self) -> int:
        return len(self._seen)


class _TopUsers(Collector):
    """Gauges for the sketch's heaviest users, computed at scrape time."""

    def __init__(self, sketch: SpaceSaving, n: int) -> None:
        self._sketch, self._n = sketch, n

    def collect(self) -> Iterator[GaugeMetricFamily]:
        cost = GaugeMetricFamily(
            TOP_USER_COST,
            "Space-saving estimate (an upper bound) of the USD each of the heaviest users spent "
            "since the gateway started",
            labels=["user"],
        )
        error = GaugeMetricFamily(
            TOP_USER_COST_ERROR,
            "How much of llm_top_user_cost_usd may belong to other users: the true spend is "
            "between the estimate minus this and the estimate",
            labels=["user"],
        )
        for heavy in self._sketch.top(self._n):
            cost.add_metric([heavy.item], heavy.estimate)
            error.add_metric([heavy.item], heavy.error)
        yield cost
        yield error


class _SpendChildren:
    """The spend families' children, bound once per label set (each request touched four)."""

    def __init__(self, m: GatewayMetrics) -> None:
        self.requests, self.tokens, self.cost = (
            Children(m.spend_requests),
            Children(m.spend_tokens),
            Children(m.spend_cost),
        )
        self.fallback_cost = Children(m.fallback_cost)
        self.redundant_requests, self.redundant_cost = (
            Children(m.redundant_requests),
            Children(m.redundant_cost),
        )
        self.retry_requests, self.retry_cost = Children(m.retry_requests), Children(m.retry_cost)


class SpendMeter:
    """Counts each request's spend into `metrics`; one per gateway app.

    `record` is called once per request that reached a model (whatever its outcome), with the
    OpenAI-shaped request, `cache_hit` once per answer the cache gave instead.
    """

    def __init__(
        self,
        spec: SpendSpec,
        metrics: GatewayMetrics,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._metrics = metrics
        self._children = _SpendChildren(metrics)
        self._teams = BoundedValues(spec.teams, spec.extra_values, spec.admit_share)
        self._jobs = BoundedValues(spec.jobs, spec.extra_values, spec.admit_share)
        self._users = SpaceSaving(spec.user_counters)
        self.recent = RecentRequests(spec.window, spec.fingerprints, clock=clock)
        metrics.spend_started.set(wall_clock())
        metrics.fingerprints.set_function(lambda: len(self.recent))
        if spec.top_users:
            metrics.registry.register(_TopUsers(self._users, spec.top_users))

    def record(
        self,
        route: str,
        model: ModelSpec,
        identity: Identity,
        chat: Mapping[str, Any],
        usage: Mapping[str, Any] | None,
        *,
        answered: bool,
        fell_back: bool,
    ) -> None:
        c = self._children
        team, job = self._teams.label(identity.team), self._jobs.label(identity.job)
        labels = (route, model.name, team, job)  # SPEND_LABELS' order
        prompt, completion = _tokens(usage)
        cost = model.usd(prompt, completion) or 0.0  # no price: nothing known to count
        c.requests(*labels).inc()
        if usage:
            c.tokens(*labels, "prompt").inc(prompt)
            c.tokens(*labels, "completion").inc(completion)
            c.cost(*labels).inc(cost)
        if fell_back and cost:
            c.fallback_cost(route, model.name).inc(cost)
        if identity.user and cost:
            self._users.add(identity.user, cost)
        evicted = self.recent.evicted_young
        repeat = self.recent.see(fingerprint(route, identity.job, chat), answered)
        if self.recent.evicted_young > evicted:
            self._metrics.fingerprints_evicted.inc()
        if repeat == "redundant":
            c.redundant_requests(route, job).inc()
            c.redundant_cost(route, job).inc(cost)
        elif repeat == "retry":
            c.retry_requests(route, job).inc()
            c.retry_cost(route, job).inc(cost)

    def cache_hit(self, route: str, model: ModelSpec | None, completion: Mapping[str, Any]) -> None:
        """The answer came from the cache: what it would have cost is what the cache saved."""
        if model is None:
            return
        prompt, completion_tokens = _tokens(completion.get("usage"))
        saved = model.usd(prompt, completion_tokens)
        if saved is None:  # no price: what the hit saved is unknown
            return
        self._metrics.cache_saved.labels(route=route, model=model.name).inc(saved)


def _tokens(usage: Mapping[str, Any] | None) -> tuple[int, int]:
    if not isinstance(usage, Mapping):
        return 0, 0
    return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
