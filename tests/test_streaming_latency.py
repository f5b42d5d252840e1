"""Streaming latency as a first-class SLO: the gateway's first-token and per-token histograms,
the lab's first-token draw, the sources that read them and the analysis that judges them.

The regression measured in issue 23: baseline first token 0.06 s, canary 0.42 s, the same 0.5 s
end to end. The end-to-end latency cannot see it; `ttft_p95_seconds` must.
"""

from __future__ import annotations

import itertools
import math
import random
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from canaryctl.analysis import Outcome
from canaryctl.analysis.assess import assess
from canaryctl.errors import InvalidInput
from canaryctl.gateway.metrics import GatewayMetrics
from canaryctl.lab import LabStack
from canaryctl.lab.behaviour import Behaviour, decide, request_rng
from canaryctl.lab.provider import pacing
from canaryctl.metrics import Observation, ScrapeMetricsSource, VariantStats
from canaryctl.metrics.measures import measure, samples
from canaryctl.metrics.profile import ingredients_for, load_profile
from canaryctl.runbook.lab import LabSpec, ProviderProfile
from canaryctl.runbook.rollout import AnalysisSpec, ShadowStep, SloSpec

BASE, CANARY = "baseline", "canary"
LABELS = {"route": "bot", "variant": CANARY, "model": "m", "provider": "openai", "tier": "free"}


def exposition(metrics: GatewayMetrics) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name -> (labels, value) rows, as a scraper parses the gateway's /metrics."""
    rows: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for sample in family.samples:
            rows.setdefault(sample.name, []).append((sample.labels, sample.value))
    return rows


def cumulative(rows: list[tuple[dict[str, str], float]]) -> dict[float, float]:
    return {float(labels["le"]): value for labels, value in rows}


# -- the gateway's histograms ----------------------------------------------------------------


def test_first_token_and_per_token_histograms_carry_the_request_labels() -> None:
    metrics = GatewayMetrics()
    timing = metrics.stream_timing(*LABELS.values())
    timing.first_token(0.06)
    timing.first_token(0.42)
    timing.generated(1.0, {"completion_tokens": 11})  # 10 gaps after the first token
    rows = exposition(metrics)

    first = rows["llm_time_to_first_token_seconds_bucket"]
    assert {k: v for k, v in first[0][0].items() if k != "le"} == LABELS
    buckets = cumulative(first)
    # 0.06 and 0.42 land in different buckets, with edges close to each
    assert buckets[0.075] == 1 and buckets[0.05] == 0
    assert buckets[0.4] == 1 and buckets[0.5] == 2 and buckets[math.inf] == 2
    assert rows["llm_time_to_first_token_seconds_count"][0][1] == 2
    assert rows["llm_time_to_first_token_seconds_sum"][0][1] == pytest.approx(0.48)

    per_token = cumulative(rows["llm_time_per_output_token_seconds_bucket"])
    assert rows["llm_time_per_output_token_seconds_sum"][0][1] == pytest.approx(0.1)
    assert per_token[0.075] == 0 and per_token[0.1] == 1


def test_first_token_buckets_resolve_chat_slos() -> None:
    """Edges 25 to 250 ms apart up to 1 s: the bounds people pick are edges, and a 60 ms
    baseline has an edge within 15 ms of it, so the relative test's edge sits near its p95."""
    metrics = GatewayMetrics()
    metrics.stream_timing(*LABELS.values()).first_token(0.0)
    edges = sorted(cumulative(exposition(metrics)["llm_time_to_first_token_seconds_bucket"]))
    finite = [e for e in edges if math.isfinite(e)]
    for bound in (0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0):
        assert min(abs(e - bound) for e in finite) <= 1e-9, bound  # bounds people pick are edges
    assert min(abs(e - 0.06) for e in finite) <= 0.015
    assert all(b - a <= 0.25 + 1e-9 for a, b in itertools.pairwise(finite) if b <= 1.0)
    assert finite[-1] >= 10


def test_per_token_needs_two_reported_tokens() -> None:
    metrics = GatewayMetrics()
    timing = metrics.stream_timing(*LABELS.values())
    for usage in (None, {}, {"completion_tokens": 1}, {"completion_tokens": "9"}):
        timing.generated(1.0, usage)
    assert exposition(metrics)["llm_time_per_output_token_seconds_count"][0][1] == 0


def test_children_are_bound_once_per_label_set() -> None:
    metrics = GatewayMetrics()
    one = metrics.stream_timing(*LABELS.values())
    assert metrics.stream_timing(*LABELS.values()) is one
    assert metrics.stream_timing("bot", BASE, "m", "openai", "free") is not one


# -- the lab ----------------------------------------------------------------------------------


def test_the_first_token_is_paced_apart_from_the_whole_answer() -> None:
    fast = Behaviour(None, 0.5, 40, "x", first_token=0.06)
    slow = Behaviour(None, 0.5, 40, "x", first_token=0.42)
    assert pacing(fast, 4) == (0.06, pytest.approx(0.44 / 4))
    assert pacing(slow, 4) == (0.42, pytest.approx(0.08 / 4))
    # the whole answer takes the same time: first token plus the gaps after it
    assert 0.06 + 3 * 0.44 / 4 < 0.5 and 0.42 + 3 * 0.08 / 4 < 0.5
    assert pacing(Behaviour(None, 0.4, 40, "x"), 4) == (0.1, pytest.approx(0.3 / 4))
    assert pacing(Behaviour(None, 0.2, 40, "x", first_token=0.3), 4) == (0.3, 0.0)


def test_a_first_token_profile_keeps_every_other_draw() -> None:
    plain = ProviderProfile(name="p", latency={"median": 0.5, "p95": 0.9})
    timed = ProviderProfile(
        name="p", latency={"median": 0.5, "p95": 0.9}, first_token={"median": 0.42, "p95": 0.42}
    )
    for n in range(1, 30):
        before = decide(plain, "What is 3 + 4?", request_rng(1, "p", n), sequence=n)
        after = decide(timed, "What is 3 + 4?", request_rng(1, "p", n), sequence=n)
        assert before.first_token is None
        assert after.first_token == pytest.approx(0.42)
        assert (after.error, after.latency, after.text) == (
            before.error,
            before.latency,
            before.text,
        )


def test_a_first_token_profile_is_a_latency_profile() -> None:
    with pytest.raises(ValueError, match="p95 must be at least the median"):
        ProviderProfile(name="p", first_token={"median": 0.4, "p95": 0.1})


# -- judging: the measured regression, straight through assess() ----------------------------

EDGES = (
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.25,
    0.3,
    0.4,
    0.5,
    0.6,
    0.75,
    1.0,
    1.5,
    2.0,
    3.0,
    math.inf,
)


def histogram(values: list[float]) -> tuple[tuple[float, float], ...]:
    return tuple((edge, float(sum(v <= edge for v in values))) for edge in EDGES)


def stats(n: int, first_token: float, total: float, rng: random.Random) -> VariantStats:
    """n streamed answers, each within 10% of `first_token` and `total`."""
    firsts = [first_token * rng.uniform(0.9, 1.1) for _ in range(n)]
    totals = [total * rng.uniform(0.9, 1.1) for _ in range(n)]
    return VariantStats(
        requests=n, latency_buckets=histogram(totals), ttft_buckets=histogram(firsts)
    )


def judged(slos: list[dict[str, Any]], canary_first: float) -> list[Outcome]:
    """Ten analyses of one window growing by 20 streamed answers a variant each."""
    rng = random.Random(23)
    specs = [SloSpec.model_validate(slo) for slo in slos]
    analysis = AnalysisSpec(min_requests=20)
    ledger: dict[str, Any] = {}
    outcomes = []
    base: list[VariantStats] = []
    canary: list[VariantStats] = []
    for k in range(1, 11):
        base.append(stats(20, 0.06, 0.5, rng))
        canary.append(stats(20, canary_first, 0.5, rng))
        window = Observation(0.0, 10.0 * k, {BASE: added(base), CANARY: added(canary)})
        verdict, ledger = assess(specs, analysis, window, ledger, baseline=BASE, canary=CANARY)
        outcomes.append(verdict.outcome)
        if verdict.outcome is Outcome.FAIL:
            break
    return outcomes


def added(parts: list[VariantStats]) -> VariantStats:
    """The window so far: counts and cumulative buckets add up."""

    def summed(name: str) -> tuple[tuple[float, float], ...]:
        return tuple(
            (edge, sum(getattr(p, name)[i][1] for p in parts)) for i, edge in enumerate(EDGES)
        )

    return VariantStats(
        requests=sum(p.requests for p in parts),
        latency_buckets=summed("latency_buckets"),
        ttft_buckets=summed("ttft_buckets"),
    )


END_TO_END = {"metric": "latency_p95_seconds", "compare": "baseline", "max_ratio": 1.2}
ABSOLUTE = {"metric": "ttft_p95_seconds", "max": 0.25}
RELATIVE = {"metric": "ttft_p95_seconds", "compare": "baseline", "max_ratio": 2}


def test_end_to_end_latency_alone_cannot_see_a_late_first_token() -> None:
    assert Outcome.FAIL not in judged([END_TO_END], canary_first=0.42)


@pytest.mark.parametrize("slo", [ABSOLUTE, RELATIVE], ids=["absolute", "relative"])
def test_a_late_first_token_fails_its_p95_bound(slo: dict[str, Any]) -> None:
    outcomes = judged([END_TO_END, slo], canary_first=0.42)
    assert outcomes[-1] is Outcome.FAIL


@pytest.mark.parametrize("slo", [ABSOLUTE, RELATIVE], ids=["absolute", "relative"])
def test_a_canary_equal_at_the_first_token_passes(slo: dict[str, Any]) -> None:
    outcomes = judged([END_TO_END, slo], canary_first=0.06)
    assert Outcome.FAIL not in outcomes and outcomes[-1] is Outcome.PASS


def test_first_token_percentiles_rest_on_the_streamed_answers_only() -> None:
    mixed = VariantStats(requests=1000, ttft_buckets=histogram([0.06] * 30 + [0.42] * 10))
    assert samples("ttft_p95_seconds", mixed) == 40
    assert samples("latency_p95_seconds", mixed) == 1000
    assert measure("ttft_p50_seconds", mixed) == pytest.approx(0.05 + 0.025 * 20 / 30)
    assert measure("ttft_p95_seconds", mixed) == pytest.approx(0.4 + 0.1 * 8 / 10)
    assert measure("ttft_p95_seconds", VariantStats(requests=10)) is None


def test_an_observation_keeps_its_streaming_histograms_through_the_journal() -> None:
    stats = VariantStats(requests=3, ttft_buckets=((0.1, 2.0), (math.inf, 3.0)),
                         tpot_buckets=((0.02, 1.0), (math.inf, 3.0)))  # fmt: skip
    again = Observation.from_dict(Observation(0, 1, {CANARY: stats}).to_dict())
    assert again.of(CANARY) == stats


# -- runbooks and profiles ---------------------------------------------------------------------


def test_profiles_feed_first_token_slos_and_litellm_cannot_feed_per_token_ones() -> None:
    ttft = [SloSpec(metric="ttft_p95_seconds", max=0.5)]
    tpot = [SloSpec(metric="tpot_p95_seconds", max=0.05)]
    assert ingredients_for(ttft, load_profile("canaryctl"), "canaryctl") >= {"ttft_buckets"}
    assert ingredients_for(tpot, load_profile("canaryctl"), "canaryctl") >= {"tpot_buckets"}
    assert ingredients_for(ttft, load_profile("litellm"), "litellm") >= {"ttft_buckets"}
    with pytest.raises(InvalidInput, match=r"spec.slos\[0\]: tpot_p95_seconds needs tpot_buckets"):
        ingredients_for(tpot, load_profile("litellm"), "litellm")


# -- the scrape source reads what the gateway exposes ---------------------------------------


def test_the_scrape_source_adds_up_first_tokens_per_variant() -> None:
    metrics = GatewayMetrics()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text=metrics.exposition().decode())

    now = [1000.0]
    source = ScrapeMetricsSource(
        ["http://gw:1/metrics"],
        route="bot",
        clock=lambda: now[0],
        client=httpx.Client(transport=httpx.MockTransport(handler)),
    )
    metrics.stream_timing("bot", CANARY, "m", "openai", "free").first_token(1.0)  # before
    source.check()
    now[0] += 30
    metrics.requests.labels(**LABELS, outcome="ok").inc(4)
    for model, tier, first in (("m", "free", 0.42), ("m", "paid", 0.42), ("backup", "free", 0.06)):
        timing = metrics.stream_timing("bot", CANARY, model, "openai", tier)
        timing.first_token(first)
        timing.generated(0.5, {"completion_tokens": 26})
    metrics.stream_timing("other-route", CANARY, "m", "openai", "free").first_token(9.0)

    canary = source.observe(since=1000.0).of(CANARY)
    first = dict(canary.ttft_buckets)
    assert first[math.inf] == 3 and first[0.075] == 1 and first[0.4] == 1 and first[0.5] == 3
    assert dict(canary.tpot_buckets)[0.02] == 3 and dict(canary.tpot_buckets)[0.015] == 0


# -- through a real gateway, streamed ----------------------------------------------------------


def lab_with_first_token(make_lab: Any, first_token: float) -> LabSpec:
    provider = {
        "name": "p",
        "latency": {"median": 0.3, "p95": 0.3},
        "first_token": {"median": first_token, "p95": first_token},
        "tokens": {"completion_mean": 40, "completion_max": 40},
    }
    return make_lab([provider])


def families(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    rows: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            rows.setdefault(sample.name, []).append((sample.labels, sample.value))
    return rows


@pytest.mark.parametrize("dialect", ["openai", "ollama"])
def test_a_streamed_answer_records_its_first_token_and_a_plain_one_does_not(
    make_lab: Any, write_flags: Any, dialect: str
) -> None:
    write_flags(["p"])
    with LabStack(lab_with_first_token(make_lab, 0.2), traffic=False) as stack:
        url = stack.gateway_url
        messages = [{"role": "user", "content": "hi"}]
        headers = {"X-Tier": "paid"}
        if dialect == "openai":
            path, body = "/v1/chat/completions", {"model": "bot", "messages": messages}
            plain = httpx.post(url + path, json=body, headers=headers, timeout=10)
            assert plain.status_code == 200
            streamed = {**body, "stream": True}
        else:
            path, streamed = "/api/chat", {"model": "bot", "messages": messages}
        with httpx.stream("POST", url + path, json=streamed, headers=headers, timeout=10) as r:
            assert r.status_code == 200
            assert "".join(r.iter_text())
        rows = families(url)

    first = rows["llm_time_to_first_token_seconds_count"]
    assert len(first) == 1
    labels, count = first[0]
    assert labels == {"route": "bot", "variant": "p", "model": "p", "provider": "openai",
                      "tier": "paid"}  # fmt: skip
    assert count == 1  # the plain answer has no first token of its own
    # the first token came no sooner than the lab held it back
    assert rows["llm_time_to_first_token_seconds_sum"][0][1] >= 0.2
    assert cumulative(rows["llm_time_to_first_token_seconds_bucket"])[0.15] == 0
    assert rows["llm_time_per_output_token_seconds_count"][0][1] == 1


def test_the_lab_document_takes_a_first_token_profile(tmp_path: Path) -> None:
    spec = LabSpec.model_validate(
        {
            "providers": [{"name": "p", "first_token": {"median": "60ms", "p95": "100ms"}}],
            "gateway": {
                "flags": {"provider": "file", "path": str(tmp_path / "f.json")},
                "routes": [{"name": "bot", "flag": "f", "default_model": "p"}],
                "models": [{"name": "p", "base_url": "lab://p"}],
            },
        }
    )
    first = spec.providers[0].first_token
    assert first is not None and (first.median, first.p95) == (0.06, 0.1)


def test_a_shadow_step_cannot_bound_what_only_streams_show() -> None:
    """Shadow calls are sent plain, never streamed: a first-token SLO there could never be
    judged, so the runbook is refused naming it."""
    with pytest.raises(ValueError, match=r"slos\[1\]\.metric: ttft_p95_seconds is measured on st"):
        ShadowStep.model_validate(
            {
                "percent": 10,
                "slos": [
                    {"metric": "error_rate", "max": 0.05},
                    {"metric": "ttft_p95_seconds", "max": 0.5},
                ],
            }
        )
