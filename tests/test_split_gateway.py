"""The gateway choosing models with the real Split SDK (`splitio-client`, localhost mode) while
rollouts write through Split's Admin API with the Split flag store.

`tests/split_server.py` stands in for Split: its Admin API takes the store's writes, and after
each one it rewrites the SDK's localhost JSON file from the definitions, as Split delivers them
to SDKs. The SDK re-reads that file every `poll_interval`; we wait for it to hold the definition
version the store returned (an event, not a time), then count what it serves. Bucketing is the
SDK's own (murmur3 of the key and the flag's seed), so the expected counts are binomial, and the
bounds below are computed from the percent written, not read back from the code.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from scipy.stats import binom

from canaryctl.flags import SplitFlagStore
from canaryctl.gateway.identity import Identity
from canaryctl.gateway.metrics import GatewayMetrics
from canaryctl.gateway.split_routing import SplitFlagRouter
from canaryctl.lab import LabStack
from canaryctl.runbook.gateway import GatewaySpec
from canaryctl.runbook.lab import LabSpec
from tests.split_server import SplitServer, make_definition, serve, tier_rule

pytestmark = pytest.mark.e2e

API_KEY = "split-admin-1a2b-SECRET-KEY"
WS, ENV, KEY = "ws-1234", "production", "support-bot-model"
BASELINE, CANARY, OTHER = "gpt-4-turbo", "gpt-4o-mini", "mixtral-8x7b"
USERS = 2000
ALPHA = 1e-6
"""Two-sided: a correct split falls outside its bound once in a million runs (and never here,
since the users are fixed and the SDK's hashing deterministic)."""


def bound(n: int, percent: float) -> tuple[int, int]:
    """The counts of n independent users a `percent`% treatment lands within, 1 - ALPHA."""
    low, high = binom.interval(1 - ALPHA, n, percent / 100)
    return int(low), int(high)


@pytest.fixture
def split(tmp_path: Path) -> Iterator[SplitServer]:
    server = SplitServer(API_KEY)
    rules = [tier_rule("free", [(BASELINE, 100)]), tier_rule("paid", [(BASELINE, 100)])]
    server.add(WS, KEY, {ENV: make_definition([BASELINE, CANARY, OTHER], [(BASELINE, 100)], rules)})
    server.localhost_file(tmp_path / "splits.json", WS, ENV)
    with serve(server):
        yield server


def store(split: SplitServer, **overrides: Any) -> SplitFlagStore:
    options: dict[str, Any] = {
        "workspace": WS,
        "environment": ENV,
        "key": KEY,
        "baseline": BASELINE,
        "canary": CANARY,
        "api_key": API_KEY,
        "base_url": split.base_url,
        **overrides,
    }
    return SplitFlagStore(**options)


def gateway_spec(path: Path) -> dict[str, Any]:
    return {
        "listen": "127.0.0.1:0",
        "flags": {"provider": "split", "path": str(path), "poll_interval": 1},
        "routes": [{"name": "support-bot", "flag": KEY, "default_model": BASELINE}],
        "models": [
            {"name": name, "base_url": f"lab://{name}"} for name in (BASELINE, CANARY, OTHER)
        ],
    }


def until(condition: Callable[[], bool], limit: float = 60.0) -> None:
    """Wait for `condition` (checked every 50 ms); `limit` only guards against a hang."""
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, "the SDK never took the new definition"
        time.sleep(0.05)


@pytest.fixture
def router(split: SplitServer, tmp_path: Path) -> Iterator[SplitFlagRouter]:
    spec = GatewaySpec.model_validate(gateway_spec(tmp_path / "splits.json"))
    routing = SplitFlagRouter(spec, GatewayMetrics())
    yield routing
    routing.close()


def counts(router: SplitFlagRouter, tier: str, users: int = USERS) -> collections.Counter[str]:
    route = router.route("support-bot")
    assert route is not None
    return collections.Counter(
        router.choose(route, Identity(user=f"user-{i}", tier=tier)).variant for i in range(users)
    )


def taken(router: SplitFlagRouter, version: int) -> Callable[[], bool]:
    """Has the SDK loaded the definition at `version` (Split's changeNumber)?"""
    return lambda: getattr(router._manager.split(KEY), "change_number", None) == version


def test_a_split_written_through_the_admin_api_is_what_the_sdk_serves(
    split: SplitServer, router: SplitFlagRouter
) -> None:
    assert counts(router, "none", 200) == {BASELINE: 200}
    flags = store(split)
    saved = flags.snapshot()
    step = flags.set_canary_weight(30, expect_version=saved.version, comment="run t step 1")
    until(taken(router, step.version))
    served = counts(router, "none")
    low, high = bound(USERS, 30)
    assert low <= served[CANARY] <= high, (served, (low, high))
    assert served[CANARY] + served[BASELINE] == USERS

    # Sticky: a user who had the canary at 30% keeps it at 60% (canary buckets come first).
    had = {i for i in range(USERS) if _variant(router, i, "none") == CANARY}
    wider = flags.set_canary_weight(60, expect_version=step.version, comment="run t step 2")
    until(taken(router, wider.version))
    assert all(_variant(router, i, "none") == CANARY for i in had)
    low, high = bound(USERS, 60)
    assert low <= counts(router, "none")[CANARY] <= high

    restored = flags.restore(saved, expect_version=wider.version, comment="run t rollback")
    until(taken(router, restored.version))  # the next read of the file after the restore
    assert counts(router, "none") == {BASELINE: USERS}


def test_a_tier_rule_moves_only_that_tier(split: SplitServer, router: SplitFlagRouter) -> None:
    flags = store(split, canary=OTHER, rule="tier=free")
    step = flags.set_canary_weight(50, expect_version=flags.snapshot().version, comment="free")
    until(taken(router, step.version))
    free = counts(router, "free")
    low, high = bound(USERS, 50)
    assert low <= free[OTHER] <= high and free[OTHER] + free[BASELINE] == USERS
    assert counts(router, "paid", 500) == {BASELINE: 500}
    assert counts(router, "none", 500) == {BASELINE: 500}  # the default rule is untouched


def test_an_unknown_flag_serves_the_default_model_and_counts_an_error(
    split: SplitServer, tmp_path: Path
) -> None:
    document = gateway_spec(tmp_path / "splits.json")
    document["routes"][0]["flag"] = "no-such-flag"
    metrics = GatewayMetrics()
    routing = SplitFlagRouter(GatewaySpec.model_validate(document), metrics)
    try:
        route = routing.route("support-bot")
        assert route is not None
        assert routing.choose(route, Identity(user="u", tier="free")).variant == BASELINE
        errors = metrics.flag_errors.labels(route="support-bot")._value.get()
        assert errors == 1.0
        assert routing.variation("no-such-flag", Identity(user="u", tier="free"), "x") == "x"
    finally:
        routing.close()


def _variant(router: SplitFlagRouter, i: int, tier: str) -> str:
    route = router.route("support-bot")
    assert route is not None
    return router.choose(route, Identity(user=f"user-{i}", tier=tier)).variant


# -- the whole gateway over HTTP ---------------------------------------------------------------


def served_counts(stack: LabStack, users: int) -> collections.Counter[str]:
    """The variant each of `users` fixed users gets from the running gateway (response
    header), asked 50 at a time."""
    body = {"model": "support-bot", "messages": [{"role": "user", "content": "hi"}]}

    async def ask() -> collections.Counter[str]:
        found: collections.Counter[str] = collections.Counter()
        async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as client:
            for start in range(0, users, 50):
                responses = await asyncio.gather(
                    *(
                        client.post(
                            "/v1/chat/completions",
                            json=body,
                            headers={"X-User": f"user-{i}", "X-Tier": "none"},
                        )
                        for i in range(start, min(users, start + 50))
                    )
                )
                found.update(r.headers["x-canaryctl-variant"] for r in responses)
        return found

    return asyncio.run(ask())


def test_the_gateway_serves_the_split_and_the_rollback(split: SplitServer, tmp_path: Path) -> None:
    quick = {"median": 0.002, "p95": 0.005}
    gateway = gateway_spec(tmp_path / "splits.json")
    lab = LabSpec.model_validate(
        {
            "seed": 7,
            "providers": [{"name": n, "latency": quick} for n in (BASELINE, CANARY, OTHER)],
            "gateway": gateway,
        }
    )
    flags = store(split)
    users = 200
    with LabStack(lab) as stack:
        assert served_counts(stack, 50) == {BASELINE: 50}
        saved = flags.snapshot()
        step = flags.set_canary_weight(25, expect_version=saved.version, comment="run g step 1")
        until(lambda: CANARY in served_counts(stack, 50))
        served = served_counts(stack, users)
        low, high = bound(users, 25)
        assert low <= served[CANARY] <= high and served[CANARY] + served[BASELINE] == users
        flags.restore(saved, expect_version=step.version, comment="run g rollback")
        until(lambda: served_counts(stack, 50) == {BASELINE: 50})
        assert served_counts(stack, users) == {BASELINE: users}
        metrics = httpx.get(stack.metrics_url, timeout=5).text
    assert "llm_flag_data_source_valid 1.0" in metrics
    assert API_KEY not in metrics
