"""An optional response cache for requests whose answer does not change: chat completions at
temperature 0, and embeddings.

The key is a hash of the route, the flag's variant and the normalised request (sorted JSON of the
OpenAI-shaped body, without fields that do not change the answer: `user`, `stream`,
`stream_options`), so two clients asking the same thing of the same model share one entry, and a
rollout's canary answers are never served to the baseline's users. Only answers from the
variant's own model are kept (a fallback's answer would outlive the outage), each for `ttl`
seconds, at most `max_entries` of them, the least recently used dropped first. A hit never
reaches a model: it is counted in llm_cache_requests_total, not in llm_requests_total.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from canaryctl.gateway.routing import Choice
from canaryctl.runbook.gateway import CacheSpec

__all__ = ["CachedAnswer", "ResponseCache", "cache_key", "normalised_request"]

_NOT_IN_KEY = frozenset({"user", "stream", "stream_options"})


def normalised_request(chat: Mapping[str, Any]) -> dict[str, Any]:
    """The request without the fields that do not change its answer: what makes two the same."""
    return {k: v for k, v in chat.items() if k not in _NOT_IN_KEY}


def cache_key(choice: Choice, chat: Mapping[str, Any], *, embeddings: bool = False) -> str | None:
    """The request's key, or None when its answer may differ from one call to the next."""
    sampled = chat.get("temperature") != 0 or chat.get("stream") is True or chat.get("n", 1) != 1
    if sampled and not embeddings:
        return None
    request = normalised_request(chat)
    kind = "embeddings" if embeddings else "chat"
    text = json.dumps(
        [kind, choice.route.name, choice.variant, request], sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class CachedAnswer:
    model: str
    """The model that answered, for the x-canaryctl-model header."""
    completion: dict[str, Any]
    """The answer in OpenAI shape (a completion rendered per dialect on each hit)."""


class ResponseCache:
    """Bounded LRU with a TTL; `clock` is monotonic seconds (tests fake it)."""

    def __init__(
        self,
        spec: CacheSpec,
        registry: CollectorRegistry,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spec = spec
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, CachedAnswer]] = OrderedDict()
        self._lookups = Counter(
            "llm_cache_requests_total",
            "Cacheable requests (temperature 0, embeddings) by result: hit or miss",
            ["route", "result"],
            registry=registry,
        )
        entries = Gauge(
            "llm_cache_entries", "Answers held in the response cache", registry=registry
        )
        entries.set_function(lambda: len(self._entries))

    def applies_to(self, route: str) -> bool:
        return self.spec.routes is None or route in self.spec.routes

    def get(self, route: str, key: str) -> CachedAnswer | None:
        found = self._entries.get(key)
        if found is not None and found[0] <= self._clock():
            del self._entries[key]
            found = None
        self._lookups.labels(route=route, result="miss" if found is None else "hit").inc()
        if found is None:
            return None
        self._entries.move_to_end(key)
        return found[1]

    def put(self, key: str, answer: CachedAnswer) -> None:
        self._entries[key] = (self._clock() + self.spec.ttl, answer)
        self._entries.move_to_end(key)
        while len(self._entries) > self.spec.max_entries:
            self._entries.popitem(last=False)
