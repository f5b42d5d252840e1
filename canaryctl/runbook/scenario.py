"""Faults the chaos proxy injects, and the `ChaosScenario` document that injects them.

A FaultSpec is both the body of the proxy's admin API and an entry of a scenario's `faults`, so
a fault reads the same wherever it is written. Parameters that do not apply to a fault's kind are
errors, not silently ignored: `status` on a latency fault is a typo someone must hear about.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field, model_validator

from canaryctl.runbook.common import Duration, Strict

__all__ = [
    "FAULT_KINDS",
    "STREAM_ONLY",
    "FaultKind",
    "FaultMatch",
    "FaultSpec",
]

FaultKind = Literal[
    "error",
    "rate_limit",
    "latency",
    "slow_first_token",
    "timeout",
    "reset",
    "stream_cut",
    "stream_stall",
    "malformed",
    "empty_completion",
    "content_filter",
]
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)

STREAM_ONLY = frozenset({"slow_first_token", "stream_cut", "stream_stall"})
"""Kinds that only mean something for a streamed answer; they never hit other requests."""

_PARAMETERS: dict[str, frozenset[str]] = {
    "error": frozenset({"status", "shape"}),
    "rate_limit": frozenset({"retry_after", "shape"}),
    "latency": frozenset({"delay", "delay_p95"}),
    "slow_first_token": frozenset({"delay"}),
    "timeout": frozenset(),
    "reset": frozenset(),
    "stream_cut": frozenset({"after_chunks"}),
    "stream_stall": frozenset({"after_chunks"}),
    "malformed": frozenset({"after_chunks"}),
    "empty_completion": frozenset(),
    "content_filter": frozenset(),
}
_MAX_TTL = 86400.0


class FaultMatch(Strict):
    """Which requests a fault may hit; every given field must match (globs for path and model)."""

    path: str | None = Field(default=None, description="glob on the URL path, e.g. /v1/chat/*")
    model: str | None = Field(default=None, description="glob on the request body's `model`")
    headers: dict[str, str] = Field(default_factory=dict, description="header name -> exact value")


class FaultSpec(Strict):
    """One fault: its kind, the share of matching requests it hits, and how long it lives.

    The time-to-live is enforced by the proxy itself, so the fault ends on time even if whoever
    added it died.
    """

    fault: FaultKind
    rate: float = Field(default=1.0, ge=0, le=1, description="probability per matching request")
    ttl: Duration = Field(default=300.0, gt=0, le=_MAX_TTL, description="lifetime; at most 1d")
    match: FaultMatch = FaultMatch()
    status: int | None = Field(default=None, description="error: 500, 502, 503 or 529")
    shape: Literal["openai", "anthropic"] | None = Field(
        default=None, description="error body shape; default: anthropic on /v1/messages"
    )
    retry_after: Duration | None = Field(default=None, description="rate_limit: Retry-After")
    delay: Duration | None = Field(default=None, description="latency, slow_first_token")
    delay_p95: Duration | None = Field(
        default=None, description="latency: log-normal with median `delay` and this p95"
    )
    after_chunks: int | None = Field(
        default=None, ge=0, description="stream_cut, stream_stall, malformed: SSE chunks first"
    )

    @model_validator(mode="after")
    def _parameters_fit_the_kind(self) -> FaultSpec:
        allowed = _PARAMETERS[self.fault]
        for name in ("status", "shape", "retry_after", "delay", "delay_p95", "after_chunks"):
            if getattr(self, name) is not None and name not in allowed:
                raise ValueError(f"{name}: does not apply to a {self.fault} fault")
        if self.status is not None and self.status not in (500, 502, 503, 529):
            raise ValueError("status: must be 500, 502, 503 or 529")
        if self.delay_p95 is not None and self.delay_p95 < (self.delay or 0.0):
            raise ValueError("delay_p95: must be at least delay")
        if self.delay_p95 is not None and not self.delay:
            raise ValueError("delay_p95: needs a delay (the median) above zero")
        return self

    def describe(self) -> str:
        params = [
            f"{name}={getattr(self, name):g}"
            if isinstance(getattr(self, name), float)
            else f"{name}={getattr(self, name)}"
            for name in ("status", "shape", "retry_after", "delay", "delay_p95", "after_chunks")
            if getattr(self, name) is not None
        ]
        matched = self.match.model_dump(exclude_defaults=True)
        where = f" where {matched}" if matched else ""
        extra = f" ({', '.join(params)})" if params else ""
        return f"{self.fault}{extra} on {self.rate:.0%} of requests{where}, ttl {self.ttl:g}s"
