"""One retry policy for every backend canaryctl calls: LaunchDarkly, Prometheus, the gateways'
/metrics, the chaos proxy, eval endpoints.

An attempt raises `Retryable` when another attempt could fix what went wrong (a network error,
a timeout, a 5xx, a 429, LaunchDarkly's 409); any other exception ends the call at once. Between
attempts the wait doubles from `backoff` up to `max_wait`, plus up to `jitter` random seconds so
that clients failing together do not retry together; a server's Retry-After, when the attempt
passes it on, replaces the backoff (capped by `max_wait` too, so one answer cannot hang a run).
After `attempts` tries the last Retryable is raised again, for the caller to turn into its own
backend error (exit 3) with the reason and the number of attempts.

Tenacity does the looping; this module only says how. Policies differ per call site only where
the stakes do: a flag restore, which must not give up while canary traffic is in place, retries
harder than a forward step, which may give up and roll back. `sleep` is a parameter everywhere,
so tests wait for nothing.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import tenacity

__all__ = [
    "BACKEND",
    "FLAG_RESTORE",
    "FLAG_WRITE",
    "RetryPolicy",
    "Retryable",
    "call",
    "call_async",
]

T = TypeVar("T")

OnRetry = Callable[["Retryable", float], None]
"""Told of each failed attempt that will be retried, and the seconds it will wait."""


@dataclass(frozen=True)
class RetryPolicy:
    """How many attempts, and how long to wait between them (seconds)."""

    attempts: int = 4
    backoff: float = 0.2
    max_wait: float = 5.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if self.attempts < 1 or min(self.backoff, self.max_wait, self.jitter) < 0:
            raise ValueError(f"{self}: needs attempts >= 1 and waits >= 0")

    def wait(self, failures: int, retry_after: float | None = None) -> float:
        """Seconds to wait after the `failures`-th failed attempt (1 for the first)."""
        base = self.backoff * 2 ** (failures - 1) if retry_after is None else retry_after
        return min(max(0.0, base), self.max_wait) + random.uniform(0, self.jitter)


BACKEND = RetryPolicy()
"""Metrics, the chaos proxy, eval endpoints: four attempts within about 1.5 s."""
FLAG_WRITE = RetryPolicy(attempts=5, backoff=0.5, max_wait=30.0, jitter=0.5)
"""A forward step on a flag: giving up means rolling back, which is safe."""
FLAG_RESTORE = RetryPolicy(attempts=12, backoff=1.0, max_wait=60.0, jitter=1.0)
"""Putting a flag back: giving up leaves canary traffic in place, so it tries for minutes."""


class Retryable(Exception):
    """An attempt failed in a way another attempt may fix; `reason` is shown if all fail."""

    def __init__(self, reason: str, *, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason, self.retry_after = reason, retry_after


def _wait(policy: RetryPolicy) -> Callable[[tenacity.RetryCallState], float]:
    def wait(state: tenacity.RetryCallState) -> float:
        failure = state.outcome.exception() if state.outcome is not None else None
        retry_after = failure.retry_after if isinstance(failure, Retryable) else None
        return policy.wait(state.attempt_number, retry_after)

    return wait


def _before_sleep(on_retry: OnRetry | None) -> Callable[[tenacity.RetryCallState], None]:
    def before_sleep(state: tenacity.RetryCallState) -> None:
        failure = state.outcome.exception() if state.outcome is not None else None
        if on_retry is not None and isinstance(failure, Retryable):
            on_retry(failure, state.next_action.sleep if state.next_action else 0.0)

    return before_sleep


def call(
    attempt: Callable[[], T],
    policy: RetryPolicy = BACKEND,
    *,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: OnRetry | None = None,
) -> T:
    """`attempt()` until it returns or raises something other than Retryable; after
    `policy.attempts` Retryables, the last one."""
    retrying = tenacity.Retrying(
        sleep=sleep,
        stop=tenacity.stop_after_attempt(policy.attempts),
        wait=_wait(policy),
        retry=tenacity.retry_if_exception_type(Retryable),
        before_sleep=_before_sleep(on_retry),
        reraise=True,
    )
    return retrying(attempt)


async def call_async(
    attempt: Callable[[], Awaitable[T]],
    policy: RetryPolicy = BACKEND,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    on_retry: OnRetry | None = None,
) -> T:
    """`call` for coroutines: the wait does not block the event loop."""
    retrying = tenacity.AsyncRetrying(
        sleep=sleep,
        stop=tenacity.stop_after_attempt(policy.attempts),
        wait=_wait(policy),
        retry=tenacity.retry_if_exception_type(Retryable),
        before_sleep=_before_sleep(on_retry),
        reraise=True,
    )

    async def run() -> T:  # tenacity awaits only what it sees is a coroutine function
        return await attempt()

    return await retrying(run)
