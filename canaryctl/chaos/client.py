"""The fault proxy's admin API from the outside: what `chaos inject|list|clear` and scenarios use.

httpx's errors stop here. Unreachable or failing proxies are retried with backoff and then become
ChaosBackendError (exit 3); a refused token or a fault the proxy rejects is the user's to fix
(InvalidInput, exit 2). A fault is named before it is sent (the Idempotency-Key), so retrying an
add whose answer was lost finds the fault the first try made instead of adding a second.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import httpx

from canaryctl import retry
from canaryctl.chaos.admin import ADMIN_PREFIX, IDEMPOTENCY_KEY, TOKEN_ENV
from canaryctl.chaos.faults import new_fault_id
from canaryctl.errors import ChaosBackendError, InvalidInput
from canaryctl.redact import redact_url
from canaryctl.retry import BACKEND, Retryable, RetryPolicy
from canaryctl.runbook.scenario import FaultSpec

__all__ = ["ChaosClient", "token_from_env"]


def token_from_env(variable: str = TOKEN_ENV) -> str:
    token = os.environ.get(variable)
    if not token:
        raise InvalidInput(f"environment variable {variable} (the chaos admin token) is not set")
    return token


class ChaosClient:
    """Talks to one proxy; `url` is the proxy's base URL (the admin API is under /_chaos)."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: float = 5.0,
        retry: RetryPolicy = BACKEND,
        sleep: Callable[[float], None] = time.sleep,
        client: httpx.Client | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.shown = redact_url(self.url)
        self._retry, self._sleep = retry, sleep
        self._client = client or httpx.Client(timeout=timeout)
        self._headers = {"Authorization": f"Bearer {token}"}

    def close(self) -> None:
        self._client.close()

    def faults(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/faults").json()["faults"])

    def add(self, spec: FaultSpec, fault_id: str | None = None) -> dict[str, Any]:
        """The fault in force as `fault_id` (a fresh name by default): added once, however
        many attempts it took."""
        body = spec.model_dump(mode="json", exclude_none=True)
        key = {IDEMPOTENCY_KEY: fault_id or new_fault_id()}
        return dict(self._call("POST", "/faults", json=body, headers=key).json())

    def remove(self, fault_id: str) -> bool:
        """False when the fault was already gone (expired or removed by someone else)."""
        return self._call("DELETE", f"/faults/{fault_id}", missing_ok=True).status_code == 200

    def clear(self) -> int:
        return int(self._call("DELETE", "/faults").json()["removed"])

    def _call(
        self,
        method: str,
        path: str,
        *,
        missing_ok: bool = False,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        url = f"{self.url}{ADMIN_PREFIX}{path}"
        headers = {**self._headers, **(headers or {})}  # the same idempotency key every attempt

        def attempt() -> httpx.Response:
            try:
                response = self._client.request(method, url, headers=headers, **kwargs)
            except httpx.HTTPError as exc:
                raise Retryable(type(exc).__name__) from exc
            if response.status_code in (401, 403, 422):
                raise InvalidInput(f"chaos proxy {self.shown} refused: {_error_of(response)}")
            if response.status_code == 404 and missing_ok:
                return response
            if response.status_code >= 500:
                raise Retryable(f"HTTP {response.status_code}")
            if response.status_code >= 400:
                raise InvalidInput(f"chaos proxy {self.shown}: {_error_of(response)}")
            return response

        try:
            return retry.call(attempt, self._retry, sleep=self._sleep)
        except Retryable as failure:
            raise ChaosBackendError(
                f"chaos proxy {self.shown} did not answer after {self._retry.attempts} "
                f"attempt(s): {failure.reason}"
            ) from failure.__cause__


def _error_of(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error"))
    except ValueError:
        return f"HTTP {response.status_code}"
