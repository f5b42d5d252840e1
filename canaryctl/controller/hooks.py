"""Webhooks told about a promotion or a rollback, after the flag is already safe.

A notification must never stand between users and the safe state: the runner restores or promotes
first, then calls the hooks; a hook that times out or fails is logged and journaled, nothing more.
A webhook's URL may be its secret (Slack's is its path) and its headers may carry tokens, so a
hook is only ever reported by its URL's origin (canaryctl/redact.py), and an exception's text,
which may quote the full URL, never by more than its class name.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import httpx

from canaryctl.errors import InvalidInput
from canaryctl.redact import redact_webhook_url
from canaryctl.runbook.rollout import Hook, RolloutSpec, WebhookSpec

__all__ = ["HookResult", "HookRunner", "check_hook_urls", "webhook_url"]

log = logging.getLogger(__name__)


def webhook_url(webhook: WebhookSpec, where: str) -> str:
    """The URL to POST to: the runbook's, or the one in the environment variable `url_env`
    names. An unset variable is InvalidInput naming it (`where` is its field path)."""
    if webhook.url is not None:
        return webhook.url
    assert webhook.url_env is not None
    url = os.environ.get(webhook.url_env, "")
    if not url.startswith(("http://", "https://")):
        state = "is not set" if not url else "does not hold an http(s) URL"
        raise InvalidInput(f"{where}.url_env: environment variable {webhook.url_env} {state}")
    return url


def check_hook_urls(spec: RolloutSpec) -> None:
    """Every `on_rollback`/`on_promote` URL can be read, checked before anything moves: a
    variable found missing after a rollback would leave nobody told."""
    for key in ("on_rollback", "on_promote"):
        for index, hook in enumerate(getattr(spec, key)):
            webhook_url(hook.webhook, f"spec.{key}[{index}].webhook")


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
        try:
            url = webhook_url(webhook, "webhook")
        except InvalidInput as exc:  # checked at start; unset since: report it, change nothing
            log.warning("%s", exc)
            return HookResult(f"${webhook.url_env}", False, str(exc))
        target = redact_webhook_url(url)
        try:
            response = self._http().post(
                url, json=payload, headers=webhook.headers, timeout=webhook.timeout
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
