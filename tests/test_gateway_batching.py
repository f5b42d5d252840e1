"""Embeddings batching, the core: which requests may join, how a joined answer and its usage are
split back, and the Batcher on a real event loop with a hand-fired timer (no sleeps, no timed
asserts). Over real HTTP with the lab: tests/test_gateway_batching_e2e.py."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from canaryctl.gateway.batching import (
    Batcher,
    apportion,
    batch_key,
    joinable_inputs,
    split_answer,
    split_usage,
)
from canaryctl.gateway.failures import UpstreamFailure, error_body
from canaryctl.gateway.identity import Identity
from canaryctl.gateway.metrics import BatchMetrics
from canaryctl.gateway.routing import Choice
from canaryctl.runbook.gateway import BatchSpec, ModelSpec, RouteSpec

MODEL = ModelSpec(name="emb", base_url="http://x", batch=BatchSpec(window="5ms", max_inputs=6))
PLAIN = ModelSpec(name="plain", base_url="http://x")
ROUTE = RouteSpec(name="search", flag="f", default_model="emb")
CHOICE = Choice(ROUTE, "emb", MODEL)
ALICE = Identity("alice", "free", team="search", key_id="k1")


def test_the_batch_setting_reads_durations_and_is_bounded() -> None:
    assert MODEL.batch is not None and MODEL.batch.window == pytest.approx(0.005)
    assert PLAIN.batch is None  # off unless set
    for bad in ({"window": "2s"}, {"window": 0}, {"max_inputs": 1}, {"max_inputs": 4096}):
        with pytest.raises(ValueError):
            BatchSpec.model_validate(bad)


@given(st.integers(0, 10**9), st.lists(st.integers(1, 10**6), min_size=1, max_size=50))
def test_apportioned_shares_sum_exactly_and_each_is_within_one_of_its_quota(
    total: int, weights: list[int]
) -> None:
    shares = apportion(total, weights)
    assert sum(shares) == total
    for share, weight in zip(shares, weights, strict=True):
        assert abs(share * sum(weights) - total * weight) < sum(weights)


def test_leftover_units_go_to_the_largest_remainders_then_the_earlier_member() -> None:
    assert apportion(10, [1, 1, 1]) == [4, 3, 3]
    assert apportion(10, [1, 2, 1]) == [3, 5, 2]  # quotas 2.5, 5, 2.5: the tie goes first
    assert apportion(7, [3, 4]) == [3, 4]
    assert split_usage({"prompt_tokens": 9, "total_tokens": 9}, [1, 2]) == [
        {"prompt_tokens": 3, "total_tokens": 3},
        {"prompt_tokens": 6, "total_tokens": 6},
    ]
    assert split_usage(None, [1, 2]) == [None, None]


def test_only_non_empty_strings_may_join() -> None:
    assert joinable_inputs({"input": "refunds"}) == ["refunds"]
    assert joinable_inputs({"input": ["a", "b"]}) == ["a", "b"]
    for alone in ("", [], ["a", ""], [[1, 2, 3]], [1, 2], None, {"text": "a"}):
        assert joinable_inputs({"input": alone}) is None


def test_requests_join_only_with_the_same_tenant_route_variant_model_and_options() -> None:
    ask = {"model": "search", "input": ["a"], "dimensions": 8}
    key = batch_key(CHOICE, ALICE, MODEL, ask)
    same_tenant = Identity("bob", "paid", team="search", key_id="k1", job="nightly")
    assert batch_key(CHOICE, same_tenant, MODEL, {**ask, "input": "other"}) == key
    others = [
        batch_key(CHOICE, Identity("alice", "free", team="search", key_id="k2"), MODEL, ask),
        batch_key(CHOICE, Identity("alice", "free", team="ads", key_id="k1"), MODEL, ask),
        batch_key(CHOICE, ALICE, PLAIN, ask),
        batch_key(
            Choice(RouteSpec(name="ads", flag="f", default_model="emb"), "emb", MODEL),
            ALICE,
            MODEL,
            ask,
        ),
        batch_key(Choice(ROUTE, "canary", MODEL), ALICE, MODEL, ask),
        batch_key(CHOICE, ALICE, MODEL, {**ask, "dimensions": 4}),
        batch_key(CHOICE, ALICE, MODEL, {**ask, "user": "someone"}),
    ]
    assert all(other != key for other in others)
    assert len(set(others)) == len(others)


def vectors(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"object": "embedding", "index": i, "embedding": [float(start + i)]} for i in range(n)]


def test_a_joined_answer_is_cut_in_order_and_reindexed_per_member() -> None:
    shuffled = list(reversed(vectors(5)))
    answer = {"object": "list", "model": "m", "data": shuffled, "usage": {"prompt_tokens": 10}}
    first, second = split_answer(MODEL, answer, [2, 3], [2, 3])
    assert first["data"] == vectors(2)
    assert second["data"] == [{**v, "index": v["index"] - 2} for v in vectors(5)[2:]]
    assert (first["usage"], second["usage"]) == ({"prompt_tokens": 4}, {"prompt_tokens": 6})
    assert first["model"] == "m" and first["object"] == "list"


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (vectors(4), "4 embeddings for the 5 inputs"),
        ([*vectors(4), {"index": 7, "embedding": [0.0]}], "indexes are not those"),
        ([*vectors(4), {"embedding": [0.0]}], "some embeddings have an index"),
    ],
)
def test_an_answer_that_does_not_match_the_inputs_is_malformed(
    data: list[dict[str, Any]], problem: str
) -> None:
    with pytest.raises(UpstreamFailure, match=problem) as failed:
        split_answer(MODEL, {"data": data}, [2, 3], [1, 1])
    assert failed.value.reason == "malformed" and failed.value.retryable


@dataclass
class Timer:
    delay: float
    callback: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True

    def fire(self) -> None:
        assert not self.cancelled
        self.callback()


class World:
    """A Batcher whose upstream embeds each text as [its length] (or fails as told), whose
    clock the test sets and whose windows end when the test fires them."""

    def __init__(self) -> None:
        self.now = 100.0
        self.timers: list[Timer] = []
        self.calls: list[list[str]] = []
        self.fail: UpstreamFailure | None = None
        self.refuse_text = "too long"
        self.registry = CollectorRegistry()
        self.batcher = Batcher(
            self.send, BatchMetrics(self.registry), clock=lambda: self.now, schedule=self.arm
        )

    def arm(self, delay: float, callback: Callable[[], None]) -> Timer:
        self.timers.append(Timer(delay, callback))
        return self.timers[-1]

    async def send(self, model: ModelSpec, request: dict[str, Any]) -> dict[str, Any]:
        texts = request["input"] if isinstance(request["input"], list) else [request["input"]]
        self.calls.append(texts)
        await asyncio.sleep(0)
        if self.fail is not None:
            raise self.fail
        if self.refuse_text in texts:
            body = error_body("input too long", "invalid_request_error")
            raise UpstreamFailure("http_400", 400, body, rejected=True)
        tokens = sum(len(t) for t in texts)
        data = [{"index": i, "embedding": [float(len(t))]} for i, t in enumerate(texts)]
        return {"data": data, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    def embed(
        self, inputs: Any, identity: Identity = ALICE, model: ModelSpec = MODEL
    ) -> Coroutine[Any, Any, dict[str, Any]]:
        return self.batcher.embed(model, {"model": "search", "input": inputs}, CHOICE, identity)

    def sample(self, name: str) -> float:
        labels = {"route": "search", "variant": "emb", "model": "emb", "provider": "openai"}
        return self.registry.get_sample_value(name, labels) or 0.0


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def run(test: Callable[[World], Coroutine[Any, Any, None]]) -> World:
    world = World()
    asyncio.run(test(world))
    return world


def test_nothing_goes_out_before_the_window_ends_and_then_one_call_carries_all() -> None:
    async def scenario(world: World) -> None:
        first = asyncio.ensure_future(world.embed("aa"))
        await settle()
        world.now += 0.003
        second = asyncio.ensure_future(world.embed(["bbbb", "c"]))
        await settle()
        assert world.calls == []  # waiting for the window
        (timer,) = world.timers  # armed once, by the first request
        assert timer.delay == pytest.approx(0.005)
        world.now += 0.002
        timer.fire()
        one, two = await asyncio.gather(first, second)
        assert world.calls == [["aa", "bbbb", "c"]]
        assert [v["embedding"] for v in one["data"]] == [[2.0]]
        assert [(v["index"], v["embedding"]) for v in two["data"]] == [(0, [4.0]), (1, [1.0])]
        # 7 tokens reported for the batch, split by estimated tokens 1 : 2 (ceil(len / 4))
        assert one["usage"]["prompt_tokens"] + two["usage"]["prompt_tokens"] == 7
        assert (one["usage"]["prompt_tokens"], two["usage"]["prompt_tokens"]) == (2, 5)

    world = run(scenario)
    assert world.sample("llm_batch_requests_total") == 2
    assert world.sample("llm_batch_size_count") == 1  # calls: one saved
    assert world.sample("llm_batch_size_sum") == 2
    # the first waited the whole window, the second what was left of it: never more
    assert world.sample("llm_batch_wait_seconds_sum") == pytest.approx(0.005 + 0.002)


def test_a_full_batch_goes_at_once_and_one_that_would_overflow_goes_first() -> None:
    async def scenario(world: World) -> None:
        first = asyncio.ensure_future(world.embed(["a", "b", "c", "d"]))
        await settle()
        overflow = asyncio.ensure_future(world.embed(["e", "f", "g"]))  # 4 + 3 > 6
        await settle()
        assert world.calls == [["a", "b", "c", "d"]]  # the open batch went out before it
        await first
        filler = asyncio.ensure_future(world.embed(["h", "i", "j"]))  # 3 + 3 = 6: full
        await asyncio.gather(overflow, filler)
        assert world.calls[1] == ["e", "f", "g", "h", "i", "j"]
        assert [t.cancelled for t in world.timers] == [True, True]  # no window was waited
        big = await world.embed(["k"] * 6)  # a request that fills a batch by itself
        assert len(big["data"]) == 6 and world.calls[2] == ["k"] * 6
        assert len(world.timers) == 2

    world = run(scenario)
    assert world.sample("llm_batch_wait_seconds_sum") == 0  # the clock never moved


def test_tenants_and_unjoinable_inputs_never_share_a_call() -> None:
    async def scenario(world: World) -> None:
        bob = Identity("bob", "free", team="search", key_id="k2")
        asks = [
            world.embed("alice's"),
            world.embed("bob's", identity=bob),
            world.embed([[1, 2, 3]]),  # token arrays go alone, at once
            world.embed("plain", model=PLAIN),  # batching off: straight through
        ]
        tasks = [asyncio.ensure_future(a) for a in asks]
        await settle()
        assert sorted(map(str, world.calls)) == sorted(map(str, [[[1, 2, 3]], ["plain"]]))
        assert len(world.timers) == 2
        for timer in world.timers:
            timer.fire()
        await asyncio.gather(*tasks)
        assert ["alice's"] in world.calls and ["bob's"] in world.calls and len(world.calls) == 4

    world = run(scenario)
    assert world.sample("llm_batch_requests_total") == 3  # the unbatched model is not counted
    assert world.sample("llm_batch_size_count") == 3


def test_a_failed_call_fails_every_member_and_a_refused_one_is_asked_again_alone() -> None:
    async def scenario(world: World) -> None:
        world.fail = UpstreamFailure("http_503", 503, error_body("overloaded"))
        tasks = [asyncio.ensure_future(world.embed(t)) for t in ("a", "b", "c")]
        await settle()
        world.timers[0].fire()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(r is world.fail for r in results) and len(world.calls) == 1
        world.fail = None
        tasks = [asyncio.ensure_future(world.embed(t)) for t in ("a", "too long", "c")]
        await settle()
        world.timers[1].fire()
        a, refused, c = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(refused, UpstreamFailure) and refused.rejected
        assert isinstance(a, dict) and a["data"][0]["embedding"] == [1.0]
        assert isinstance(c, dict) and c["usage"] == {"prompt_tokens": 1, "total_tokens": 1}
        assert world.calls[1:] == [["a", "too long", "c"], ["a"], ["too long"], ["c"]]

    world = run(scenario)
    assert world.sample("llm_batch_refused_total") == 1
    # requests 6, calls 1 + (1 + 3): the refused batch cost one call more than asking alone
    assert world.sample("llm_batch_requests_total") - world.sample("llm_batch_size_count") == 1


def test_a_member_whose_caller_leaves_takes_nobody_else_with_it() -> None:
    async def scenario(world: World) -> None:
        leaving = asyncio.ensure_future(world.embed("gone"))
        staying = asyncio.ensure_future(world.embed("here"))
        await settle()
        leaving.cancel()
        await settle()
        world.timers[0].fire()
        answer = await staying
        assert answer["data"][0]["embedding"] == [4.0]
        assert leaving.cancelled()

    run(scenario)
