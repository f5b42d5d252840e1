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
from typing import Any, TypeVar

import httpx

from canaryctl import fastjson, retry
from canaryctl.chaos.admin import ADMIN_PREFIX, IDEMPOTENCY_KEY, TOKEN_ENV, proxy_origin
from canaryctl.chaos.faults import new_fault_id
from canaryctl.errors import ChaosBackendError, InvalidInput
from canaryctl.redact import redact_url
from canaryctl.retry import BACKEND, Retryable, RetryPolicy
from canaryctl.runbook.scenario import FaultSpec

__all__ = ["ChaosClient", "token_from_env"]

T = TypeVar("T")


def token_from_env(variable: str = TOKEN_ENV) -> str:
    token = os.environ.get(variable)
    if not token:
        raise InvalidInput(f"environment variable {variable} (the chaos admin token) is not set")
    return token


class ChaosClient:
    """Talks to one proxy; `url` is the proxy's origin (the admin API is under /_chaos), and a
    URL with a path, query or credentials is InvalidInput. Only a fault proxy's answers are
    believed: an upstream's 200 without the fields the admin API sends is ChaosBackendError,
    so a fault that was not injected is never reported in force."""

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
        try:
            self.url = proxy_origin(url)
        except ValueError as exc:
            raise InvalidInput(f"chaos proxy {redact_url(url)}: {exc}") from None
        self.shown = redact_url(self.url)
        self._retry, self._sleep = retry, sleep
        self._client = client or httpx.Client(timeout=timeout)
        self._headers = {"Authorization": f"Bearer {token}"}

    def close(self) -> None:
        self._client.close()

    def faults(self) -> list[dict[str, Any]]:
        faults = self._answer(self._call("GET", "/faults"), "faults", list)
        if not all(isinstance(f, dict) and isinstance(f.get("id"), str) for f in faults):
            raise self._not_a_proxy("faults without ids")
        return faults

    def add(self, spec: FaultSpec, fault_id: str | None = None) -> dict[str, Any]:
        """The fault in force as `fault_id` (a fresh name by default): added once, however
        many attempts it took."""
        body = spec.model_dump(mode="json", exclude_none=True)
        fault_id = fault_id or new_fault_id()
        response = self._call("POST", "/faults", json=body, headers={IDEMPOTENCY_KEY: fault_id})
        if self._answer(response, "id", str) != fault_id:
            raise self._not_a_proxy(f"no fault {fault_id}")
        fault: dict[str, Any] = fastjson.loads(response.content)
        return fault

    def remove(self, fault_id: str) -> bool:
        """False when the fault was already gone (expired or removed by someone else)."""
        response = self._call("DELETE", f"/faults/{fault_id}", missing_ok=True)
        if response.status_code == 404:
            return False
        if self._answer(response, "removed", str) != fault_id:
            raise self._not_a_proxy(f"fault {fault_id} not removed")
        return True

    def clear(self) -> int:
        return self._answer(self._call("DELETE", "/faults"), "removed", int)

    def _answer(self, response: httpx.Response, key: str, kind: type[T]) -> T:
        """`key` of the admin API's JSON answer, of `kind`; ChaosBackendError when the answer
        is not one (a provider, or any server, answering 200 at that address)."""
        try:
            value = fastjson.loads(response.content).get(key)
        except (ValueError, AttributeError):
            value = None
        if not isinstance(value, kind) or isinstance(value, bool):
            raise self._not_a_proxy(f"no '{key}'")
        return value

    def _not_a_proxy(self, what: str) -> ChaosBackendError:
        return ChaosBackendError(
            f"chaos proxy {self.shown}: not a fault proxy's answer ({what}); is the URL the "
            "proxy's, not its upstream's?"
        )

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
        return str(fastjson.loads(response.content).get("error"))
    except ValueError:
        return f"HTTP {response.status_code}"
