"""Budget counters in Redis, shared by every gateway replica.

The check-and-add of a request's reservation is one Lua script, which Redis runs atomically: two
replicas asking for the last of a budget at the same moment are served one after the other, so
they cannot both pass. Each bucket is a plain integer key (INCRBY) that expires after its window.
Keys of one request may live on different hash slots, so this needs a single Redis (or a
replicated primary), not Redis Cluster.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from canaryctl.gateway.budgets import BudgetStoreError, Slot
from canaryctl.redact import redact_text, redact_url
from canaryctl.runbook.gateway import RedisBudgetStore

__all__ = ["RedisStore"]

_RESERVE = """
-- ARGV: mode ("reserve" or "add"), slot count, then per slot: bucket count, limit, amount, ttl.
-- KEYS: every slot's buckets, the current one first.
-- Returns {index of the first slot over its limit (nothing added) or 0, usage of each slot}.
local count = tonumber(ARGV[2])
local used, first, arg = {}, {}, {}
local k, a = 1, 3
for i = 1, count do
  local buckets = tonumber(ARGV[a])
  local sum = 0
  for _, v in ipairs(redis.call("MGET", unpack(KEYS, k, k + buckets - 1))) do
    if v then sum = sum + tonumber(v) end
  end
  used[i], first[i], arg[i] = sum, k, a
  k, a = k + buckets, a + 4
end
if ARGV[1] == "reserve" then
  for i = 1, count do
    if used[i] + tonumber(ARGV[arg[i] + 2]) > tonumber(ARGV[arg[i] + 1]) then
      table.insert(used, 1, i)
      return used
    end
  end
end
for i = 1, count do
  local amount = tonumber(ARGV[arg[i] + 2])
  if amount ~= 0 then
    redis.call("INCRBY", KEYS[first[i]], amount)
    redis.call("EXPIRE", KEYS[first[i]], tonumber(ARGV[arg[i] + 3]))
  end
  used[i] = used[i] + amount
end
table.insert(used, 1, 0)
return used
"""


def _reason(exc: RedisError) -> str:
    """redis-py's message, which may quote the URL it was given: shown with that redacted."""
    return redact_text(str(exc)) or type(exc).__name__


class RedisStore:
    """A BudgetStore on one Redis; the password, if any, comes from `password_env`."""

    def __init__(self, spec: RedisBudgetStore) -> None:
        password = os.environ.get(spec.password_env) if spec.password_env else None
        self._client = aioredis.Redis.from_url(
            spec.url,
            password=password,
            socket_timeout=spec.timeout,
            socket_connect_timeout=spec.timeout,
        )
        self._shown = redact_url(spec.url)
        self._prefix = spec.prefix
        self._script = self._client.register_script(_RESERVE)

    async def _run(
        self, mode: str, slots: Sequence[Slot], amounts: Sequence[int]
    ) -> tuple[int | None, list[int]]:
        keys: list[str] = []
        args: list[int | str] = [mode, len(slots)]
        for slot, amount in zip(slots, amounts, strict=True):
            keys.extend(slot.buckets)
            args.extend([len(slot.buckets), slot.limit, amount, slot.ttl])
        try:
            failed, *used = await self._script(keys=keys, args=args)
        except RedisError as exc:
            raise BudgetStoreError(f"budgets: redis at {self._shown}: {_reason(exc)}") from exc
        return (int(failed) - 1 if failed else None), [int(u) for u in used]

    async def reserve(
        self, slots: Sequence[Slot], amounts: Sequence[int]
    ) -> tuple[int | None, list[int]]:
        return await self._run("reserve", slots, amounts)

    async def add(self, slots: Sequence[Slot], amounts: Sequence[int]) -> list[int]:
        return (await self._run("add", slots, amounts))[1]

    async def counters(self) -> dict[str, int]:
        try:
            keys = [key async for key in self._client.scan_iter(match=f"{self._prefix}:*")]
            values = await self._client.mget(keys) if keys else []
        except RedisError as exc:
            raise BudgetStoreError(f"budgets: redis at {self._shown}: {_reason(exc)}") from exc
        return {
            key.decode(): int(value)
            for key, value in zip(keys, values, strict=True)
            if value is not None
        }

    async def close(self) -> None:
        await self._client.aclose()
