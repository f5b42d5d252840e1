"""The fault proxy's admin API as both ends know it: where it lives on the proxy's listener,
the variable its token comes from, and the header that names a fault. Apart from proxy.py, so
that the client (and `canaryctl chaos list`) loads no server."""

from __future__ import annotations

__all__ = ["ADMIN_PREFIX", "IDEMPOTENCY_KEY", "TOKEN_ENV"]

ADMIN_PREFIX = "/_chaos"
TOKEN_ENV = "CANARYCTL_CHAOS_TOKEN"
IDEMPOTENCY_KEY = "Idempotency-Key"
