"""The gateway's spend counting (canaryctl/gateway/spend.py): the sketches' guarantees, their
memory bound, bounded label values, and the families a SpendMeter writes."""

from __future__ import annotations

import random
import tracemalloc
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from canaryctl.gateway.identity import Identity
from canaryctl.gateway.metrics import GatewayMetrics
from canaryctl.gateway.spend import (
    BoundedValues,
    RecentRequests,
    SpaceSaving,
    SpendMeter,
    fingerprint,
)
from canaryctl.runbook.gateway import ModelSpec, PriceSpec, SpendSpec

EXPENSIVE = ModelSpec(
    name="gpt-4-turbo",
    base_url="http://127.0.0.1:1",
    price=PriceSpec(prompt_per_1k=0.01, completion_per_1k=0.03),
)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 40), st.floats(0.01, 5.0)), min_size=1, max_size=400),
    st.integers(1, 12),
)
def test_space_saving_holds_every_heavy_item_within_its_error(
    stream: list[tuple[int, float]], capacity: int
) -> None:
    sketch, truth = SpaceSaving(capacity), Counter[str]()
    for item, weight in stream:
        sketch.add(f"u{item}", weight)
        truth[f"u{item}"] += weight
    assert len(sketch) <= capacity
    total = sum(truth.values())
    for item, weight in truth.items():
        held = sketch.get(item)
        if weight > total / capacity + 1e-9:
            assert held is not None, f"{item} spent {weight} of {total} and was dropped"
        if held is not None:
            assert held.estimate + 1e-9 >= weight >= held.estimate - held.error - 1e-9


def test_space_saving_matches_an_exact_count_over_many_distinct_users() -> None:
    """20,000 users, most seen once or twice, through 200 counters: the stream that made every
    new user scan all counters. The guarantees hold against an exact count, and the counters
    still add up to the whole stream (each add lands on exactly one counter)."""
    capacity, rng = 200, random.Random(29)
    sketch, truth = SpaceSaving(capacity), Counter[str]()
    heavy = [f"heavy-{i}" for i in range(20)]
    for i in range(100_000):
        user = heavy[i // 4 % 20] if i % 4 == 0 else f"user-{rng.randrange(20_000)}"
        weight = rng.choice((0.25, 0.5, 1.0, 2.0))  # exact in binary: sums compare exactly
        sketch.add(user, weight)
        truth[user] += weight
    total = sum(truth.values())
    held = {h.item: h for h in sketch.top(capacity)}
    assert len(held) == capacity == len(sketch)
    assert sketch.total == total == sum(h.estimate for h in held.values())
    smallest = min(h.estimate for h in held.values())
    for user, weight in truth.items():
        if user in held:
            assert held[user].estimate - held[user].error <= weight <= held[user].estimate
        else:  # dropped: it never outweighed the smallest counter, nor total / capacity
            assert weight <= smallest <= total / capacity
    assert set(heavy) <= set(held)  # each about 1/80 of the stream, well past 1/200
    for user in heavy:
        assert held[user].estimate - held[user].error <= truth[user] <= held[user].estimate


def test_space_saving_ranks_the_heaviest_first() -> None:
    sketch = SpaceSaving(20)
    rng = random.Random(1)
    for _ in range(5000):
        sketch.add(f"user-{rng.randrange(500)}", 0.001)
    sketch.add("whale", 3.0)
    for _ in range(200):
        sketch.add("shark", 0.01)
    top = sketch.top(2)
    assert [h.item for h in top] == ["whale", "shark"]
    assert top[0].estimate - top[0].error <= 3.0 <= top[0].estimate


def test_bounded_values_keep_configured_and_heavy_values_and_call_the_rest_other() -> None:
    values = BoundedValues(["billing"], extra=2, admit_share=0.05)
    assert values.label(None) == "none" and values.label("") == "none"
    assert values.label("billing") == "billing"  # configured: its own series from the start
    labels = Counter()
    for i in range(3000):
        labels[values.label("nightly" if i % 3 == 0 else f"junk-{i}")] += 1
    assert labels["nightly"] >= 990, labels  # a third of the traffic: admitted within ten
    assert set(labels) == {"nightly", "other"}
    for _ in range(500):
        values.label("batch-2")
    assert values.label("batch-2") == "batch-2"
    # Two places only: a third heavy value stays `other`, however heavy.
    assert all(values.label("batch-3") == "other" for _ in range(500))


def test_recent_requests_tell_new_redundant_and_retry_within_the_window() -> None:
    now = [0.0]
    recent = RecentRequests(window=60, capacity=100, clock=lambda: now[0])
    assert recent.see(1, answered=True) == "new"
    now[0] = 30
    assert recent.see(1, answered=True) == "redundant"
    assert recent.see(2, answered=False) == "new"
    assert recent.see(2, answered=True) == "retry"  # the client asked again after a failure
    now[0] = 89.9
    assert recent.see(1, answered=True) == "redundant"  # 59.9 s after it was last seen
    now[0] = 200
    assert recent.see(1, answered=True) == "new"  # the window has passed
    assert len(recent) == 1  # the old ones expired on the way


def test_recent_requests_memory_is_bounded_by_capacity() -> None:
    capacity = 20_000
    recent = RecentRequests(window=3600, capacity=capacity, clock=lambda: 1.0)
    rng = random.Random(7)
    tracemalloc.start()  # before the keys: the sketch is what keeps them alive in a gateway
    for _ in range(3 * capacity):
        recent.see(rng.getrandbits(64), answered=True)
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(recent) == capacity
    assert recent.evicted_young == 2 * capacity
    # Two ints, a dict slot and an ordered-dict node per fingerprint: under 300 bytes each
    # (benchmarks/spend_memory.py measures the default's).
    assert held < 300 * capacity, f"{held / capacity:.0f} bytes per fingerprint"


def test_fingerprints_ignore_who_asked_and_how_but_not_what() -> None:
    chat = {"model": "bot", "messages": [{"role": "user", "content": "2+2?"}], "temperature": 0}
    same = fingerprint("bot", "nightly", {**chat, "user": "u-1", "stream": True})
    assert fingerprint("bot", "nightly", chat) == same
    assert fingerprint("bot", "other-job", chat) != same
    assert fingerprint("other", "nightly", chat) != same
    changed = {**chat, "messages": [{"role": "user", "content": "2+3?"}]}
    assert fingerprint("bot", "nightly", changed) != same


def test_fingerprints_are_one_per_request_whatever_its_key_order_or_values() -> None:
    chat = {"model": "bot", "temperature": 0, "messages": [{"role": "user", "content": "é"}]}
    reordered = {"messages": [{"content": "é", "role": "user"}], "temperature": 0, "model": "bot"}
    assert fingerprint("bot", None, chat) == fingerprint("bot", None, reordered)
    assert fingerprint("bot", None, chat) == fingerprint("bot", "", chat)  # no job is no job
    # Values JSON tells apart are told apart: 1 and 1.0, 0 and false, "1" and 1.
    kinds = [1, 1.0, 0, False, "1", None, -0.0]
    assert len({fingerprint("bot", None, {**chat, "seed": v}) for v in kinds}) == len(kinds)
    # What the fast writer refuses still has a fingerprint, distinct from its neighbours'.
    odd = [2**70, 2**70 + 1, "\ud800", "\ud801", float(2**70)]
    assert len({fingerprint("bot", None, {**chat, "seed": v}) for v in odd}) == len(odd)
    assert fingerprint("bot", None, {**chat, "seed": 2**70}) == fingerprint(
        "bot", None, {"seed": 2**70, **chat}
    )


def samples(metrics: GatewayMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.exposition().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_spend_meter_counts_cost_repeats_retries_users_and_savings() -> None:
    metrics = GatewayMetrics()
    now = [0.0]
    meter = SpendMeter(
        SpendSpec(teams=["search"], jobs=["nightly"], top_users=2, user_counters=10),
        metrics,
        clock=lambda: now[0],
    )
    chat = {"messages": [{"role": "user", "content": "SECRET-PROMPT-TEXT"}]}
    usage = {"prompt_tokens": 1000, "completion_tokens": 1000}  # $0.04 at EXPENSIVE's price
    who = Identity(user="alice", tier="paid", team="search", job="nightly")
    for _ in range(3):
        meter.record("bot", EXPENSIVE, who, chat, usage, answered=True, fell_back=False)
    meter.record("bot", EXPENSIVE, Identity("bob", "free"), {"messages": []}, None,
                 answered=False, fell_back=False)  # fmt: skip
    meter.record("bot", EXPENSIVE, Identity("bob", "free"), {"messages": []}, usage,
                 answered=True, fell_back=True)  # fmt: skip
    meter.cache_hit("bot", EXPENSIVE, {"usage": usage})
    got = samples(metrics)
    mine = (("llm_job", "nightly"), ("model", "gpt-4-turbo"), ("route", "bot"), ("team", "search"))
    assert got[("llm_spend_requests_total", mine)] == 3
    assert abs(got[("llm_spend_cost_usd_total", mine)] - 0.12) < 1e-9
    assert got[("llm_spend_tokens_total", tuple(sorted((*mine, ("kind", "completion")))))] == 3000
    nightly = (("llm_job", "nightly"), ("route", "bot"))
    assert got[("llm_redundant_requests_total", nightly)] == 2
    assert abs(got[("llm_redundant_cost_usd_total", nightly)] - 0.08) < 1e-9
    nobody = (("llm_job", "none"), ("route", "bot"))
    assert got[("llm_retry_requests_total", nobody)] == 1
    assert abs(got[("llm_fallback_cost_usd_total", (("model", "gpt-4-turbo"), ("route", "bot")))]
               - 0.04) < 1e-9  # fmt: skip
    assert abs(got[("llm_cache_saved_usd_total", (("model", "gpt-4-turbo"), ("route", "bot")))]
               - 0.04) < 1e-9  # fmt: skip
    assert abs(got[("llm_top_user_cost_usd", (("user", "alice"),))] - 0.12) < 1e-9
    assert got[("llm_top_user_cost_error_usd", (("user", "alice"),))] == 0
    assert got[("llm_request_fingerprints", ())] == 2
    # Prompts are hashed, never kept or exported.
    assert "SECRET-PROMPT-TEXT" not in metrics.exposition().decode()
