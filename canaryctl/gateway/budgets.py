"""Token and USD budgets per user, team, job or virtual key: reserve an estimate before the
call, settle the provider's reported usage after.

A request is admitted only if, for every budget that applies to it, the usage in the budget's
window plus the request's *estimate* (prompt tokens at about four characters a token, plus its
`max_tokens` or `completion_estimate`, priced at the chosen model) stays within the limit. The
estimate is added at once, in the same atomic step as the check, so concurrent requests (on one
gateway or on several sharing Redis) cannot all pass on the same remaining budget; after the call
the difference between the reported usage and the estimate is added (a failed call refunds its
estimate). Spend can therefore pass a limit only by what one request used beyond its estimate.

Past a budget's `soft_limit` share, a route listed in its `downgrade` map is served by the cheaper
model named there instead of the flag's choice; past the limit itself the gateway answers 429 with
an OpenAI-style error naming the budget and when its window resets.

Counters are integers (tokens, and micro-USD) in buckets named after their window: the calendar
period's start, or for rolling windows one of 60 slices. The store behind them is one of two
implementations of BudgetStore: budget_memory.py (one gateway, saved to SQLite) and
budget_redis.py (a Lua script, so replicas share one atomic counter). A store that fails lets
requests through (and counts the failure): budgets must not take the gateway down.
"""

from __future__ import annotations

import calendar
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal, Protocol
from urllib.parse import quote, unquote

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from canaryctl.errors import BackendError
from canaryctl.gateway.routing import Choice
from canaryctl.gateway.upstream import error_body
from canaryctl.runbook.gateway import BudgetSpec, BudgetsSpec, ModelSpec

__all__ = [
    "MICRO_USD",
    "Admission",
    "BudgetStore",
    "Budgets",
    "Refusal",
    "Slot",
    "estimate_tokens",
    "open_store",
    "parse_counter_key",
    "slots",
    "store_prefix",
    "usage_by_counter",
]

log = logging.getLogger(__name__)

Unit = Literal["tokens", "usd"]
MICRO_USD = 1_000_000
"""USD are counted in micro-dollars so that counters stay integers (Redis INCRBY)."""
SLICES = 60
"""A rolling window is 60 slices long: it forgets its oldest slice at each slice boundary."""
_PERIOD = {"hour": 3600, "day": 86400, "month": 30 * 86400}
_MAX_EXPORTED = 1000
"""Keys per budget kept for llm_budget_remaining: per-user budgets must not flood Prometheus."""


class BudgetStoreError(BackendError):
    """The budget store could not be read or written (Redis down, a SQLite file unwritable)."""


@dataclass(frozen=True)
class Slot:
    """One budget's counter for one requester and unit, in the window containing `now`."""

    budget: BudgetSpec
    who: str
    unit: Unit
    limit: int
    buckets: tuple[str, ...]
    """Store keys of the window's buckets, the current one first."""
    ttl: int
    """Seconds the current bucket must outlive its window's end, for the store to expire it."""
    resets_at: float
    """When the window resets (calendar) or its oldest slice leaves it (rolling)."""


class BudgetStore(Protocol):
    """Counters with an all-or-nothing check-and-add: budget_memory.py, budget_redis.py."""

    async def reserve(
        self, slots: Sequence[Slot], amounts: Sequence[int]
    ) -> tuple[int | None, list[int]]:
        """Add every amount if each slot stays within its limit, in one atomic step; else add
        nothing. Returns (None, usage after) when added, (index of the first slot that would
        pass its limit, usage before) when not."""
        ...

    async def add(self, slots: Sequence[Slot], amounts: Sequence[int]) -> list[int]:
        """Add unconditionally (settling, refunds); the usage of each slot afterwards."""
        ...

    async def counters(self) -> dict[str, int]:
        """Every live bucket key and its value, for `canaryctl budgets show`."""
        ...

    async def close(self) -> None: ...


def counter_key(prefix: str, budget: BudgetSpec, who: str, unit: Unit, bucket: int) -> str:
    return f"{prefix}:{budget.name}:{budget.per}:{quote(who, safe='')}:{unit}:{bucket}"


def parse_counter_key(prefix: str, key: str) -> tuple[str, str, str, str, int] | None:
    """(budget, per, who, unit, bucket) of a key made by counter_key, None for anything else."""
    if not key.startswith(prefix + ":"):
        return None
    parts = key[len(prefix) + 1 :].split(":")
    if len(parts) != 5 or not parts[4].lstrip("-").isdigit():
        return None
    budget, per, who, unit, bucket = parts
    return budget, per, unquote(who), unit, int(bucket)


def _calendar_start(window: str, now: float) -> tuple[int, int]:
    """(start, next start) of the calendar hour, day or month around `now`, in UTC seconds."""
    if window == "hour":
        start = int(now // 3600 * 3600)
        return start, start + 3600
    if window == "day":
        start = int(now // 86400 * 86400)
        return start, start + 86400
    moment = datetime.fromtimestamp(now, UTC)
    start = calendar.timegm((moment.year, moment.month, 1, 0, 0, 0))
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    return start, calendar.timegm((year, month, 1, 0, 0, 0))


def slots(budget: BudgetSpec, who: str, now: float, prefix: str) -> list[Slot]:
    """The budget's counters (one per unit it limits) for `who` at `now`: pure window math."""
    if budget.kind == "calendar":
        start, end = _calendar_start(budget.window, now)
        indexes = [start]
        ttl = end - int(now) + 60
        resets_at = float(end)
    else:
        width = _PERIOD[budget.window] / SLICES
        current = int(now // width)
        indexes = list(range(current, current - SLICES, -1))
        ttl = math.ceil(_PERIOD[budget.window] + width - (now - current * width)) + 60
        resets_at = (current + 1) * width
    limits: list[tuple[Unit, int]] = []
    if budget.tokens is not None:
        limits.append(("tokens", budget.tokens))
    if budget.usd is not None:
        limits.append(("usd", round(budget.usd * MICRO_USD)))
    return [
        Slot(
            budget,
            who,
            unit,
            limit,
            tuple(counter_key(prefix, budget, who, unit, i) for i in indexes),
            ttl,
            resets_at,
        )
        for unit, limit in limits
    ]


def _text_tokens(content: Any) -> int:
    if isinstance(content, list):
        content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return math.ceil(len(str(content or "")) / 4)


def estimate_tokens(request: Mapping[str, Any], completion_estimate: int) -> tuple[int, int]:
    """(prompt, completion) tokens a request may use: about four characters a token (three
    more per message, as OpenAI counts), and the completion the client allowed for, else
    `completion_estimate`. An embeddings request (`input`) has no completion."""
    if "input" in request:
        inputs = request["input"] if isinstance(request["input"], list) else [request["input"]]
        return max(1, sum(_text_tokens(text) for text in inputs)), 0
    prompt = sum(
        _text_tokens(message.get("content")) + 3
        for message in request.get("messages") or []
        if isinstance(message, dict)
    )
    limit = request.get("max_completion_tokens") or request.get("max_tokens")
    completion = limit if isinstance(limit, int) and limit > 0 else completion_estimate
    return max(1, prompt), completion


def _usd_micro(model: ModelSpec, prompt: int, completion: int) -> int:
    return math.ceil((model.usd(prompt, completion) or 0.0) * MICRO_USD)  # no price: unknown


def _amounts(slots_: Sequence[Slot], tokens: int, usd_micro: int) -> list[int]:
    return [tokens if s.unit == "tokens" else usd_micro for s in slots_]


def usage_by_counter(
    counters: Mapping[str, int], spec: BudgetsSpec, prefix: str, now: float
) -> Iterator[tuple[Slot, int]]:
    """Each (slot, usage in its current window) found among a store's counters."""
    budgets = {b.name: b for b in spec.limits}
    seen: set[tuple[str, str]] = set()
    for key in sorted(counters):
        parsed = parse_counter_key(prefix, key)
        if parsed is None or parsed[0] not in budgets:
            continue
        name, _, who, _, _ = parsed
        if (name, who) in seen:
            continue
        seen.add((name, who))
        for slot in slots(budgets[name], who, now, prefix):
            yield slot, sum(counters.get(bucket, 0) for bucket in slot.buckets)


@dataclass(frozen=True)
class Admission:
    """A request let through: the choice to serve (downgraded or not) and what it reserved."""

    choice: Choice
    slots: tuple[Slot, ...]
    reserved: tuple[int, ...]
    downgraded_by: str | None = None
    share: float = 0.0
    """The highest share of a limit the requester has used, this request's estimate included."""


@dataclass(frozen=True)
class Refusal:
    """A request over a budget: the 429 to send."""

    slot: Slot
    used: int
    body: dict[str, Any]
    retry_after: int


def _describe(slot: Slot, amount: int) -> str:
    if slot.unit == "usd":
        return f"{amount / MICRO_USD:.4f} USD"
    return f"{amount} tokens"


def _refusal(slot: Slot, used: int, now: float) -> Refusal:
    budget = slot.budget
    resets = datetime.fromtimestamp(slot.resets_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    window = f"this {budget.window}" if budget.kind == "calendar" else f"the last {budget.window}"
    when = "resets" if budget.kind == "calendar" else "starts freeing up"
    message = (
        f"budget '{budget.name}' exceeded for {budget.per} '{slot.who}': "
        f"{_describe(slot, used)} of {_describe(slot, slot.limit)} used {window}; "
        f"it {when} at {resets}"
    )
    body = error_body(message, "budget_exceeded")
    body["error"].update(code="budget_exceeded", budget=budget.name, resets_at=resets)
    return Refusal(slot, used, body, retry_after=max(1, math.ceil(slot.resets_at - now)))


class _Remaining(Collector):
    """llm_budget_remaining from the usage last seen per (budget, who, unit), bounded."""

    def __init__(self) -> None:
        self.seen: dict[str, OrderedDict[tuple[str, str], tuple[Slot, int]]] = {}

    def record(self, slot: Slot, used: int) -> None:
        keys = self.seen.setdefault(slot.budget.name, OrderedDict())
        keys[(slot.who, slot.unit)] = (slot, used)
        keys.move_to_end((slot.who, slot.unit))
        if len(keys) > _MAX_EXPORTED:
            keys.popitem(last=False)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "llm_budget_remaining",
            "Budget left in the current window, as last seen (tokens, or USD)",
            labels=["budget", "per", "key", "unit"],
        )
        for keys in self.seen.values():
            for slot, used in keys.values():
                left = max(0, slot.limit - used)
                value = left / MICRO_USD if slot.unit == "usd" else float(left)
                family.add_metric([slot.budget.name, slot.budget.per, slot.who, slot.unit], value)
        yield family


class Budgets:
    """Admission and settlement for one gateway; `clock` is wall-clock seconds (tests fake it)."""

    def __init__(
        self,
        spec: BudgetsSpec,
        models: Mapping[str, ModelSpec],
        store: BudgetStore,
        registry: CollectorRegistry,
        *,
        prefix: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.spec = spec
        self.store = store
        self._models = models
        self._prefix = prefix
        self._clock = clock
        self._remaining = _Remaining()
        registry.register(self._remaining)
        self._rejections = Counter(
            "llm_budget_rejections_total",
            "Requests refused with 429 because a budget was spent",
            ["budget", "route"],
            registry=registry,
        )
        self._downgrades = Counter(
            "llm_budget_downgrades_total",
            "Requests served by a budget's cheaper model past its soft limit",
            ["budget", "route"],
            registry=registry,
        )
        self._store_errors = Counter(
            "llm_budget_store_errors_total",
            "Budget store calls that failed; the request was let through",
            registry=registry,
        )

    async def admit(
        self,
        choice: Choice,
        who: Mapping[str, str],
        chat: Mapping[str, Any],
    ) -> Admission | Refusal:
        """`who` names the requester per budget kind (Identity.budget_keys: a kind it lacks has
        no budget here); `chat` is the OpenAI-shaped request: a chat, or embeddings (`input`)."""
        now = self._clock()
        applying = [
            slot
            for budget in self.spec.limits
            if budget.per in who and (budget.routes is None or choice.route.name in budget.routes)
            for slot in slots(budget, who[budget.per], now, self._prefix)
        ]
        if not applying:
            return Admission(choice, (), ())
        prompt, completion = estimate_tokens(chat, self.spec.completion_estimate)
        usd = _usd_micro(choice.model, prompt, completion)
        amounts = _amounts(applying, prompt + completion, usd)
        try:
            failed, used = await self.store.reserve(applying, amounts)
        except BudgetStoreError as exc:
            log.warning("budgets: %s; letting the request through", exc)
            self._store_errors.inc()
            return Admission(choice, (), ())
        for slot, slot_used in zip(applying, used, strict=True):
            self._remaining.record(slot, slot_used)
        if failed is not None:
            refused = applying[failed]
            self._rejections.labels(budget=refused.budget.name, route=choice.route.name).inc()
            return _refusal(refused, used[failed], now)
        share = max(u / s.limit if s.limit else 1.0 for s, u in zip(applying, used, strict=True))
        admission = Admission(choice, tuple(applying), tuple(amounts), share=share)
        return self._maybe_downgrade(admission, used)

    def _maybe_downgrade(self, admission: Admission, used: Sequence[int]) -> Admission:
        choice = admission.choice
        for slot, now_used in zip(admission.slots, used, strict=True):
            budget = slot.budget
            cheaper = budget.downgrade.get(choice.route.name)
            if cheaper is None or budget.soft_limit is None or cheaper == choice.model.name:
                continue
            if now_used >= budget.soft_limit * slot.limit:
                self._downgrades.labels(budget=budget.name, route=choice.route.name).inc()
                served = replace(choice, model=self._models[cheaper])
                return replace(admission, choice=served, downgraded_by=budget.name)
        return admission

    async def settle(
        self, admission: Admission, model: ModelSpec, usage: Mapping[str, Any] | None
    ) -> None:
        """Replace the estimate by what the provider reported (nothing reported: a refund)."""
        if not admission.slots:
            return
        if usage:
            prompt = int(usage.get("prompt_tokens") or 0)
            completion = int(usage.get("completion_tokens") or 0)
            actual = _amounts(
                admission.slots, prompt + completion, _usd_micro(model, prompt, completion)
            )
        else:
            actual = [0] * len(admission.slots)
        deltas = [a - r for a, r in zip(actual, admission.reserved, strict=True)]
        try:
            used = await self.store.add(admission.slots, deltas)
        except BudgetStoreError as exc:
            log.warning("budgets: could not settle a request: %s", exc)
            self._store_errors.inc()
            return
        for slot, now_used in zip(admission.slots, used, strict=True):
            self._remaining.record(slot, now_used)


def open_store(spec: BudgetsSpec) -> BudgetStore:
    """The store the document names; call on the gateway's event loop. Imported lazily so that
    a gateway without Redis budgets never imports the Redis client."""
    if spec.store.provider == "redis":
        from canaryctl.gateway.budget_redis import RedisStore

        return RedisStore(spec.store)
    from canaryctl.gateway.budget_memory import MemoryStore

    return MemoryStore(spec.store.path, save_interval=spec.store.save_interval)


def store_prefix(spec: BudgetsSpec) -> str:
    return spec.store.prefix if spec.store.provider == "redis" else "budget"
