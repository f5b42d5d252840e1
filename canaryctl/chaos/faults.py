"""The proxy's fault table: which fault (if any) hits a request, and when each fault ends.

Pure apart from an injected clock and random generator, so matching, probability and expiry are
tested without a network or a wait. Expiry is lazy: every read drops the faults whose time is up,
which is how the proxy enforces a fault's TTL without any help from whoever added it.

A fault may be named by whoever adds it (`put`): adding the same name twice with the same spec
is one fault, so a client that lost the answer to its first try can send it again safely.
"""

from __future__ import annotations

import math
import random
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from canaryctl.runbook.scenario import STREAM_ONLY, FaultSpec

__all__ = [
    "FAULT_ID",
    "ActiveFault",
    "FaultIdTaken",
    "FaultTable",
    "RequestFacts",
    "draw_delay",
    "new_fault_id",
]

FAULT_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
"""What a client may name a fault: fits a URL path segment and a log line."""


def new_fault_id() -> str:
    """A fresh name, random enough that two clients never pick the same one."""
    return f"f-{secrets.token_hex(8)}"


class FaultIdTaken(Exception):
    """A fault in force already has that name, with a different spec."""


_Z95 = 1.6448536269514722
"""The standard normal's 95th percentile: turns (median, p95) into a log-normal's sigma."""


@dataclass(frozen=True)
class RequestFacts:
    """What matching looks at: the path, the body's `model` and `stream`, lower-cased headers."""

    path: str
    model: str | None = None
    stream: bool = False
    headers: Mapping[str, str] | None = None


@dataclass(frozen=True)
class ActiveFault:
    id: str
    spec: FaultSpec
    added_at: float
    expires_at: float

    def matches(self, facts: RequestFacts) -> bool:
        if self.spec.fault in STREAM_ONLY and not facts.stream:
            return False
        match = self.spec.match
        if match.path is not None and not fnmatchcase(facts.path, match.path):
            return False
        if match.model is not None and not fnmatchcase(facts.model or "", match.model):
            return False
        headers = facts.headers or {}
        return all(headers.get(name.lower()) == value for name, value in match.headers.items())

    def to_dict(self, now: float) -> dict[str, Any]:
        return {
            "id": self.id,
            **self.spec.model_dump(mode="json", exclude_none=True),
            "expires_in": round(max(0.0, self.expires_at - now), 3),
        }


class FaultTable:
    """The faults in force, in the order they were added; safe to share between threads.

    `clock` is monotonic seconds (a fake one in tests), so a wall-clock jump can neither end a
    fault early nor keep it alive.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._faults: dict[str, ActiveFault] = {}
        self._lock = threading.Lock()

    def now(self) -> float:
        return self._clock()

    def add(self, spec: FaultSpec) -> ActiveFault:
        return self.put(spec, new_fault_id())[0]

    def put(self, spec: FaultSpec, fault_id: str) -> tuple[ActiveFault, bool]:
        """The fault named `fault_id`, and whether this call added it: False when it was in
        force already with this spec (a retry). FaultIdTaken when its spec differs."""
        if not FAULT_ID.fullmatch(fault_id):
            raise ValueError("a fault id is 1 to 64 letters, digits, '.', '_' or '-'")
        now = self._clock()
        with self._lock:
            existing = self._faults.get(fault_id)
            if existing is not None and existing.expires_at > now:
                if existing.spec != spec:
                    raise FaultIdTaken(fault_id)
                return existing, False
            fault = ActiveFault(fault_id, spec, now, now + spec.ttl)
            self._faults[fault_id] = fault
        return fault, True

    def remove(self, fault_id: str) -> bool:
        with self._lock:
            return self._faults.pop(fault_id, None) is not None

    def reset(self) -> int:
        with self._lock:
            count = len(self._faults)
            self._faults.clear()
        return count

    def idle(self) -> bool:
        """No fault is held (in force or expired but not yet dropped): a request needs no
        matching. A read of one reference, without the lock: the proxy asks on every request."""
        return not self._faults

    def active(self) -> list[ActiveFault]:
        now = self._clock()
        with self._lock:
            for fault_id in [f.id for f in self._faults.values() if f.expires_at <= now]:
                del self._faults[fault_id]
            return list(self._faults.values())

    def get(self, fault_id: str) -> ActiveFault | None:
        return next((f for f in self.active() if f.id == fault_id), None)

    def pick(self, facts: RequestFacts, rng: random.Random) -> ActiveFault | None:
        """The first matching fault whose dice roll hits; one fault per request at most."""
        for fault in self.active():
            if fault.matches(facts) and rng.random() < fault.spec.rate:
                return fault
        return None


def draw_delay(spec: FaultSpec, rng: random.Random) -> float:
    """`delay` seconds, or a log-normal draw with median `delay` and p95 `delay_p95`."""
    median = spec.delay or 0.0
    if spec.delay_p95 is None or median <= 0 or spec.delay_p95 <= median:
        return median
    sigma = math.log(spec.delay_p95 / median) / _Z95
    return rng.lognormvariate(math.log(median), sigma)
