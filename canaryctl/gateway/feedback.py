"""Quality feedback: a caller scores an answer it got, and the score is metered per variant.

Only the caller (or its grader) knows whether an answer was good, and it knows that after the
response, so the gateway remembers which route, variant and model served each completion id for a
while. The memory is bounded both ways: at most `capacity` ids (least recently served dropped
first) and each for `ttl` seconds, so a gateway under load never grows without bound. An id is
scored once: a second score for it would count the same answer twice. With virtual keys, an id
is scored only with the key that received the answer: anyone else's score would move the
quality SLO of a variant they were never served.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from canaryctl.gateway.identity import Refused
from canaryctl.request_limits import clip

__all__ = ["OTHER_KEY", "OtherKey", "ServedAnswers", "parse_feedback"]

LabelSet = tuple[tuple[str, str], ...]


class OtherKey:
    """What `take` answers for an id served to another virtual key (the entry stays for it)."""


OTHER_KEY = OtherKey()


class ServedAnswers:
    """Completion id -> the metric labels of what served it; LRU-bounded, each entry for `ttl`."""

    def __init__(
        self,
        capacity: int = 100_000,
        ttl: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if capacity < 1 or ttl <= 0:
            raise ValueError("ServedAnswers needs capacity >= 1 and ttl > 0")
        self._capacity, self._ttl, self._clock = capacity, ttl, clock
        self._served: OrderedDict[str, tuple[float, LabelSet, str | None]] = OrderedDict()
        self._label_sets: dict[LabelSet, LabelSet] = {}

    def __len__(self) -> int:
        return len(self._served)

    def remember(
        self, completion_id: object, labels: Mapping[str, str], key_id: str | None = None
    ) -> None:
        """Note who served `completion_id`, to which key; answers without a string id cannot be
        scored."""
        if not isinstance(completion_id, str) or not completion_id:
            return
        # A gateway serves few distinct label sets: keep one copy of each, not one per answer.
        label_set = tuple(sorted(labels.items()))
        label_set = self._label_sets.setdefault(label_set, label_set)
        self._served[completion_id] = (self._clock() + self._ttl, label_set, key_id)
        self._served.move_to_end(completion_id)
        while len(self._served) > self._capacity:
            self._served.popitem(last=False)

    def take(
        self, completion_id: str, key_id: str | None = None
    ) -> dict[str, str] | OtherKey | None:
        """The labels `completion_id` was served with, forgotten as they are handed out; None
        when the id is unknown, expired or already scored; OTHER_KEY when `key_id` is not the
        key it was served to."""
        entry = self._served.get(completion_id)
        if entry is None:
            return None
        expires, label_set, served_to = entry
        if self._clock() >= expires:
            del self._served[completion_id]
            return None
        if served_to != key_id:
            return OTHER_KEY
        del self._served[completion_id]
        return dict(label_set)


def parse_feedback(body: Any, max_id_length: int) -> tuple[str, float] | Refused:
    """(completion id, score) from a feedback body, or the 400 (413 for a long id) to answer."""
    if not isinstance(body, dict):
        return _bad("the body must be a JSON object")
    completion_id, score = body.get("id"), body.get("score")
    if not isinstance(completion_id, str) or not completion_id:
        return _bad("id: must be the completion id the gateway returned (a non-empty string)")
    if len(completion_id) > max_id_length:
        size = f"{len(completion_id)} characters, more than the {max_id_length} allowed"
        return Refused(413, f"id: {size}", "id_too_long")
    if isinstance(score, bool) or not isinstance(score, int | float):
        return _bad("score: must be a number from 0 to 1")
    if not math.isfinite(score) or not 0.0 <= score <= 1.0:
        return _bad(f"score: must be from 0 to 1, got {clip(score)}")
    return completion_id, float(score)


def _bad(message: str) -> Refused:
    return Refused(400, message, "invalid_request_error")
