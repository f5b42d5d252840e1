"""Asking a running gateway which variants it serves now, as clients see them."""

from __future__ import annotations

import asyncio
import time

import httpx

from canaryctl.lab import LabStack

__all__ = ["served", "serves_soon"]


def served(stack: LabStack, tier: str = "none", users: int = 40) -> set[str]:
    """The variants the gateway serves now to `users` fixed users of `tier` (response header)."""

    async def ask() -> set[str]:
        async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as client:
            responses = await asyncio.gather(
                *(
                    client.post(
                        "/v1/chat/completions",
                        json={
                            "model": "support-bot",
                            "messages": [{"role": "user", "content": "2+2"}],
                        },
                        headers={"X-User": f"user-{i}", "X-Tier": tier},
                    )
                    for i in range(users)
                )
            )
        return {r.headers["x-canaryctl-variant"] for r in responses}

    return asyncio.run(ask())


def serves_soon(
    stack: LabStack, expected: set[str], *, tier: str = "none", users: int = 40
) -> None:
    """Ask until the gateway serves exactly `expected` to `users` users: its SDK re-reads the
    flag file on a poll (every 0.5 s), which a loaded machine runs late, so this waits for the
    change rather than a fixed time; fails naming what was served if it never comes."""
    deadline = time.monotonic() + 30  # a bound, not a pace
    while (now := served(stack, tier, users)) != expected:
        assert time.monotonic() < deadline, f"the gateway still serves {now}, not {expected}"
        time.sleep(0.2)
