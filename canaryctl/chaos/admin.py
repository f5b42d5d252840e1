"""The fault proxy's admin API as both ends know it: where it lives on the proxy's listener,
the variable its token comes from, and the header that names a fault. Apart from proxy.py, so
that the client (and `canaryctl chaos list`) loads no server; and the kinds of fault it takes,
which `chaos inject --help` lists without building the documents' models."""

from __future__ import annotations

from typing import Literal, get_args

__all__ = ["ADMIN_PREFIX", "FAULT_KINDS", "IDEMPOTENCY_KEY", "TOKEN_ENV", "FaultKind"]

ADMIN_PREFIX = "/_chaos"
TOKEN_ENV = "CANARYCTL_CHAOS_TOKEN"
IDEMPOTENCY_KEY = "Idempotency-Key"

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
