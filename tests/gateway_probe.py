"""Asking a running gateway which variants it serves now, as clients see them."""

from __future__ import annotations

import asyncio

import httpx

from canaryctl.lab import LabStack

__all__ = ["served"]


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
