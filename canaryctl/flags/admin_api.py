"""What the flag stores behind a vendor's admin API (launchdarkly.py, split.py) share.

Each keeps one secret (an access token, an Admin API key): it is read from the environment once,
lives only in the store's httpx client header, and is never formatted into a message, a repr, a
log line or a snapshot. Each sends one request at a time and treats the same answers as worth
another attempt: a network error, 429 (after the vendor's own wait), 409 and 5xx. An attempt is
retried by the project's one retry policy (canaryctl/retry.py), and giving up is one
FlagBackendError naming the flag, what failed and why; the vendor decides what every other
refusal means.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any, TypeVar

import httpx

from canaryctl import retry
from canaryctl.errors import FlagBackendError, InvalidInput
from canaryctl.retry import Retryable, RetryPolicy

__all__ = ["Retry", "retried", "secret_from_env", "send", "store_repr"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class Retry(Retryable):
    """A response or network error worth another attempt; `ambiguous`: the request may have
    been applied (5xx, network error), so the next attempt checks first."""

    def __init__(self, reason: str, delay: float | None = None, *, ambiguous: bool = False) -> None:
        super().__init__(reason, retry_after=delay)
        self.ambiguous = ambiguous


def secret_from_env(variable: str, holds: str) -> str:
    """The secret in environment variable `variable`; InvalidInput saying what it must hold
    (`holds`) when it is unset or empty."""
    secret = os.environ.get(variable, "")
    if not secret:
        raise InvalidInput(f"environment variable {variable} is not set: it must hold {holds}")
    return secret


def store_repr(kind: str, where: str, baseline: str, canary: str, rule: str | None) -> str:
    """A store's repr: which flag and which variations, and nothing of its secret."""
    scope = f", rule={rule!r}" if rule else ""
    return f"{kind}({where}, baseline={baseline!r}, canary={canary!r}{scope})"


def send(
    client: httpx.Client,
    method: str,
    path: str,
    wait: Callable[[httpx.Response], float | None],
    **kwargs: Any,
) -> httpx.Response:
    """One request: a network error, 429 (to be retried after `wait(response)` seconds), 409
    and 5xx raise Retry; any other answer is returned for the vendor to read."""
    try:
        response = client.request(method, path, **kwargs)
    except httpx.TransportError as exc:
        raise Retry(f"network error: {type(exc).__name__}", ambiguous=True) from exc
    status = response.status_code
    if status == 429:
        raise Retry("429 Too Many Requests", wait(response))
    if status == 409:
        raise Retry("409 Conflict")
    if status >= 500:
        raise Retry(f"{status} {response.reason_phrase}", ambiguous=True)
    return response


def retried(
    attempt: Callable[[], T],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], None],
    where: str,
    what: str,
) -> T:
    """`attempt()` under `policy`, each retry logged; giving up is FlagBackendError saying
    `where` `what` failed and the last reason."""

    def retrying(failure: Retryable, delay: float) -> None:
        log.warning("%s: %s; retrying in %.1fs", where, failure, delay)

    try:
        return retry.call(attempt, policy, sleep=sleep, on_retry=retrying)
    except Retryable as failure:
        raise FlagBackendError(
            f"{where}: {what} failed after {policy.attempts} attempts: {failure}"
        ) from None
