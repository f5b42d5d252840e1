"""Webhooks told about a promotion or a rollback, after the flag is already safe.

A notification must never stand between users and the safe state: the runner restores or promotes
first, then calls the hooks; a hook that times out or fails is logged and journaled, nothing more.
Headers may carry tokens, so only a redacted URL is ever reported.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from canaryctl.runbook.rollout import Hook

__all__ = ["HookResult", "HookRunner", "redact_url"]

log = logging.getLogger(__name__)


def redact_url(url: str) -> str:
    """Scheme, host, port and path only: credentials and query strings may be secrets."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


@dataclass(frozen=True)
class HookResult:
    target: str
    ok: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "ok": self.ok, "detail": self.detail}


class HookRunner:
    """POSTs a JSON body to each webhook; pass `client` (e.g. on httpx.MockTransport) in tests."""

    def __init__(self, client: httpx.Client | None = None) -> None:
        self._client = client
        self._owned = client is None

    def call(self, hook: Hook, payload: dict[str, Any]) -> HookResult:
        webhook = hook.webhook
        target = redact_url(webhook.url)
        try:
            response = self._http().post(
                webhook.url, json=payload, headers=webhook.headers, timeout=webhook.timeout
            )
        except httpx.HTTPError as exc:
            # The exception text may echo the full URL; the class name says enough.
            log.warning("webhook %s failed: %s", target, type(exc).__name__)
            return HookResult(target, False, type(exc).__name__)
        if response.is_success:
            return HookResult(target, True, f"HTTP {response.status_code}")
        log.warning("webhook %s answered HTTP %s", target, response.status_code)
        return HookResult(target, False, f"HTTP {response.status_code}")

    def close(self) -> None:
        """Close the client we made; one passed in belongs to the caller."""
        if self._owned and self._client is not None:
            self._client.close()

    def _http(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client()
        return self._client
