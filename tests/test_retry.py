"""The one retry policy: how many attempts, how long between them, what ends the loop at once.
Waits are recorded, never slept."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from canaryctl.retry import (
    BACKEND,
    FLAG_RESTORE,
    FLAG_WRITE,
    Retryable,
    RetryPolicy,
    call,
    call_async,
)

EXACT = RetryPolicy(attempts=4, backoff=0.5, max_wait=3.0, jitter=0.0)
"""No jitter, so every wait is known."""


def failing(times: int, *, retry_after: float | None = None) -> tuple[list[int], Callable[[], str]]:
    """An attempt that fails `times` times, then answers "ok"; and the list of its calls."""
    calls: list[int] = []

    def attempt() -> str:
        calls.append(len(calls) + 1)
        if len(calls) <= times:
            raise Retryable(f"failure {len(calls)}", retry_after=retry_after)
        return "ok"

    return calls, attempt


def test_waits_double_from_the_backoff_up_to_the_cap() -> None:
    slept: list[float] = []
    calls, attempt = failing(3)
    assert call(attempt, EXACT, sleep=slept.append) == "ok"
    assert calls == [1, 2, 3, 4]
    assert slept == [0.5, 1.0, 2.0]
    assert [EXACT.wait(n) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_the_last_failure_is_raised_after_every_attempt() -> None:
    slept: list[float] = []
    calls, attempt = failing(10)
    with pytest.raises(Retryable, match="failure 4"):
        call(attempt, EXACT, sleep=slept.append)
    assert len(calls) == EXACT.attempts == 4
    assert len(slept) == 3  # no wait after the last attempt


def test_retry_after_replaces_the_backoff_and_is_capped() -> None:
    slept: list[float] = []
    _, attempt = failing(2, retry_after=2.5)
    call(attempt, EXACT, sleep=slept.append)
    assert slept == [2.5, 2.5]
    slept.clear()
    _, attempt = failing(1, retry_after=600.0)  # ten minutes: one answer must not hang a run
    call(attempt, EXACT, sleep=slept.append)
    assert slept == [3.0]


def test_anything_but_retryable_ends_the_call_at_once() -> None:
    calls: list[int] = []
    slept: list[float] = []

    def attempt() -> None:
        calls.append(1)
        raise ValueError("refused: a 401 is not fixed by asking again")

    with pytest.raises(ValueError, match="401"):
        call(attempt, EXACT, sleep=slept.append)
    assert calls == [1] and slept == []


def test_jitter_adds_at_most_its_bound() -> None:
    policy = RetryPolicy(attempts=2, backoff=1.0, max_wait=10.0, jitter=0.25)
    waits = [policy.wait(1) for _ in range(200)]
    assert all(1.0 <= w <= 1.25 for w in waits)
    assert len(set(waits)) > 1  # clients failing together spread out


def test_each_retry_is_told_with_its_reason_and_wait() -> None:
    told: list[tuple[str, float]] = []
    _, attempt = failing(2)
    call(attempt, EXACT, sleep=lambda _: None, on_retry=lambda f, w: told.append((f.reason, w)))
    assert told == [("failure 1", 0.5), ("failure 2", 1.0)]


def test_the_async_call_waits_without_blocking_and_gives_up_the_same_way() -> None:
    slept: list[float] = []
    calls: list[int] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    async def attempt() -> str:
        calls.append(1)
        raise Retryable("HTTP 503")

    with pytest.raises(Retryable, match="HTTP 503"):
        asyncio.run(call_async(attempt, EXACT, sleep=sleep))
    assert len(calls) == 4 and slept == [0.5, 1.0, 2.0]


def test_a_restore_retries_harder_than_a_forward_step() -> None:
    assert FLAG_RESTORE.attempts > FLAG_WRITE.attempts > 1
    assert FLAG_RESTORE.max_wait >= FLAG_WRITE.max_wait
    assert BACKEND.attempts == 4  # "after 4 attempt(s)", as the messages say


@pytest.mark.parametrize(
    "fields", [{"attempts": 0}, {"backoff": -1.0}, {"jitter": -0.1}, {"max_wait": -2.0}]
)
def test_a_policy_that_cannot_work_is_refused(fields: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="attempts >= 1"):
        RetryPolicy(**fields)  # type: ignore[arg-type]
