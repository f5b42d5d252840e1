"""The fault proxy's admin API as both ends know it: where it lives on the proxy's listener,
the variable its token comes from, and the header that names a fault. Apart from proxy.py, so
that the client (and `canaryctl chaos list`) loads no server; and the kinds of fault it takes,
which `chaos inject --help` lists without building the documents' models."""

from __future__ import annotations

from typing import Literal, get_args
from urllib.parse import urlsplit

__all__ = [
    "ADMIN_PREFIX",
    "FAULT_KINDS",
    "IDEMPOTENCY_KEY",
    "TOKEN_ENV",
    "FaultKind",
    "proxy_origin",
]

ADMIN_PREFIX = "/_chaos"
TOKEN_ENV = "CANARYCTL_CHAOS_TOKEN"
IDEMPOTENCY_KEY = "Idempotency-Key"


def proxy_origin(url: str) -> str:
    """The origin (`scheme://host:port`) of a fault proxy's base URL: where its admin API is.

    ValueError for a URL with more than an origin. A path would send the admin calls past
    `/_chaos` to the provider behind the proxy, whose 200 would then read as "injected"; a query
    or credentials are secrets that would be printed and journaled."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (a port out of range raises here)
    except ValueError:
        raise ValueError("not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http(s) URL with a host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(
            f"the fault proxy's URL takes no path or query: its admin API is at {ADMIN_PREFIX} "
            "on its origin"
        )
    if parts.username is not None or parts.password is not None:
        raise ValueError("the fault proxy's URL takes no credentials (its token comes from "
                         "token_env)")  # fmt: skip
    return f"{parts.scheme}://{parts.netloc}"


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
