"""How a model failed, and what the client is told: the gateway's side of the request outcomes.

A failure is the variant's model's (outcome `error`, and a fallback may answer) unless it is the
client's own fault: 400, 413 and 422 are `rejected`, passed on as the provider said them, and no
other model is tried. Everything else is the model's or its configuration's: 5xx, 529, 429,
timeouts, lost connections, 401/403 (a wrong or missing key), 404 (a model name or URL the
provider does not know), any other status, and 200s that are no answer (see answers.py).

A provider's own words reach the client only where they describe the client's request or the
provider's state (4xx client faults, 429, 5xx). 401/403 and the other configuration failures get
canaryctl's message naming the model instead, as 502: a provider's auth error may quote part of
the key, and the client did nothing wrong.
"""

from __future__ import annotations

from typing import Any

from canaryctl.runbook.gateway import ModelSpec

__all__ = ["CLIENT_FAULTS", "UpstreamFailure", "error_body", "failure_for_status"]

CLIENT_FAULTS = frozenset({400, 413, 422})
"""Statuses that say the request itself is wrong: outcome `rejected`, never a fallback."""


def error_body(message: str, kind: str = "upstream_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


class UpstreamFailure(Exception):
    """A model did not answer. `status` and `body` are what the client gets if nothing else does;
    `rejected` marks the client's own fault, which no fallback is asked to fix."""

    def __init__(
        self,
        reason: str,
        status: int,
        body: dict[str, Any],
        *,
        rejected: bool = False,
        retry_after: str | None = None,
    ) -> None:
        super().__init__(f"{reason}: {body.get('error')}")
        self.reason = reason
        self.status = status
        self.body = body
        self.rejected = rejected
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        """Whether the next model of the chain may answer instead."""
        return not self.rejected

    @property
    def outcome(self) -> str:
        return "rejected" if self.rejected else "error"


def failure_for_status(
    model: ModelSpec,
    status: int,
    upstream_error: object,
    phrase: str | None,
    retry_after: str | None,
) -> UpstreamFailure:
    """The failure a non-200 answer means; `upstream_error` is the `error` member of its body."""
    reason = f"http_{status}"

    def passed_on() -> dict[str, Any]:
        if isinstance(upstream_error, dict):
            return {"error": upstream_error}
        return error_body(str(upstream_error or phrase or f"HTTP {status}"))

    if status in CLIENT_FAULTS:
        return UpstreamFailure(reason, status, passed_on(), rejected=True)
    if status == 429 or status >= 500:
        return UpstreamFailure(reason, status, passed_on(), retry_after=retry_after)
    if status in (401, 403):
        where = f"the key in {model.api_key_env}" if model.api_key_env else "whether it needs a key"
        message = (
            f"model {model.name}: its provider refused the gateway's credentials "
            f"(HTTP {status}); check {where}"
        )
        return UpstreamFailure(reason, 502, error_body(message, "upstream_auth_error"))
    message = (
        f"model {model.name}: its provider answered HTTP {status}"
        f"{f' ({phrase})' if phrase else ''}; check the model's base_url and upstream_model"
    )
    return UpstreamFailure(reason, 502, error_body(message, "upstream_config_error"))
