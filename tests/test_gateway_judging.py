"""Online judges over real loopback HTTP with the lab's judge: scores of served answers reach
llm_quality_score with the labels of what served them, without any feedback; a bad judge reply
is counted and never scored; a full queue and a spent budget drop jobs and count them; users are
served before the judge answers; pairs are judged with the order swapped on every other pair."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from canaryctl.chaos import BackgroundServer
from canaryctl.errors import InvalidInput
from canaryctl.gateway.judging import Judges, pair_result
from canaryctl.gateway.metrics import GatewayMetrics
from canaryctl.gateway.upstream import Upstream
from canaryctl.lab import LabStack, SimulatedProvider
from canaryctl.runbook.gateway import GatewaySpec
from canaryctl.runbook.lab import LabSpec, ProviderProfile
from tests.test_gateway import FAST, chat, metric

MakeLab = Callable[..., LabSpec]
WriteFlags = Callable[..., Path]
QUESTION = {"role": "user", "content": "What is 17 + 25?"}
RIGHT = {"choices": [{"message": {"role": "assistant", "content": "17 + 25 = 42."}}]}
WRONG = {"choices": [{"message": {"role": "assistant", "content": "17 + 25 = 40."}}]}


def judged_lab(
    make_lab: MakeLab,
    judge: dict[str, Any] | None = None,
    judge_profile: dict[str, Any] | None = None,
    judge_model: dict[str, Any] | None = None,
) -> LabSpec:
    """Models a (always right) and b (always wrong) behind route bot, judged by lab judge `j`."""
    providers = [
        {"name": "a", "latency": FAST, "quality": 1.0},
        {"name": "b", "latency": FAST, "quality": 0.0},
        {"name": "j", "latency": FAST, "judge": {}, **(judge_profile or {})},
    ]
    models = [
        {"name": "a", "base_url": "lab://a"},
        {"name": "b", "base_url": "lab://b"},
        {"name": "j", "base_url": "lab://j", **(judge_model or {})},
    ]
    document = make_lab(providers, models).model_dump(mode="json", exclude_defaults=True)
    document["gateway"]["routes"][0]["judge"] = {"model": "j", "sample": 1.0, **(judge or {})}
    return LabSpec.model_validate(document)


def wait_for(stack: Any, name: str, value: float, **labels: str) -> None:
    """Until the metric reaches `value`; the 60 s is a bound for a loaded machine, not a pace."""
    deadline = time.monotonic() + 60
    while metric(stack, name, **labels) < value:
        assert time.monotonic() < deadline, f"{name} {labels} never reached {value}"
        time.sleep(0.02)


@pytest.fixture
def half_and_half(write_flags: WriteFlags) -> None:
    halves = [{"variation": 1, "weight": 50000}, {"variation": 0, "weight": 50000}]
    write_flags(["a", "b"], {"rollout": {"variations": halves}})


def test_judge_scores_reach_the_quality_summary_of_what_served(
    make_lab: MakeLab, half_and_half: None
) -> None:
    with LabStack(judged_lab(make_lab), traffic=False) as stack:
        served = [chat(stack, user=f"user-{i}").headers["x-canaryctl-variant"] for i in range(30)]
        wait_for(stack, "llm_judge_requests_total", 30, outcome="ok", kind="pointwise")
        count_a, count_b = served.count("a"), served.count("b")
        assert count_a and count_b
        assert metric(stack, "llm_quality_score_count", variant="a", model="a") == count_a
        assert metric(stack, "llm_quality_score_sum", variant="a", tier="free") == count_a
        assert metric(stack, "llm_quality_score_count", variant="b") == count_b
        assert metric(stack, "llm_quality_score_sum", variant="b") == 0
        assert metric(stack, "llm_judge_requests_total", route="bot", judge="j") == 30
        assert metric(stack, "llm_requests_total", model="j") == 0  # judges are not traffic


def test_streamed_answers_are_judged_as_assembled(
    make_lab: MakeLab, write_flags: WriteFlags
) -> None:
    write_flags(["b", "a"])  # b: always wrong
    with LabStack(judged_lab(make_lab), traffic=False) as stack:
        body = {"model": "bot", "stream": True, "messages": [QUESTION]}
        url = f"{stack.gateway_url}/v1/chat/completions"
        with httpx.stream("POST", url, json=body, timeout=10) as response:
            lines = [line for line in response.iter_lines() if line.startswith("data: {")]
        assert lines
        wait_for(stack, "llm_judge_requests_total", 1, outcome="ok")
        assert metric(stack, "llm_quality_score_count", variant="b", model="b") == 1
        assert metric(stack, "llm_quality_score_sum", variant="b") == 0


def test_bad_judge_replies_are_counted_and_never_scored(
    make_lab: MakeLab, write_flags: WriteFlags
) -> None:
    write_flags(["a", "b"])
    lab = judged_lab(make_lab, judge_profile={"judge": {"malformed": 1.0}})
    with LabStack(lab, traffic=False) as stack:
        for i in range(5):
            assert chat(stack, user=f"u{i}").status_code == 200
        wait_for(stack, "llm_judge_requests_total", 5, outcome="bad_reply")
        assert metric(stack, "llm_judge_requests_total", outcome="ok") == 0
        assert metric(stack, "llm_quality_score_count") == 0


def test_users_are_served_before_the_judge_answers_and_a_full_queue_drops(
    make_lab: MakeLab, write_flags: WriteFlags
) -> None:
    """The judge holds every request until the test lets it go (an event, not a timeout that a
    slow machine could reach first): users are answered all the same."""
    write_flags(["a", "b"])
    lab = judged_lab(
        make_lab,
        judge={"queue": 1, "concurrency": 1},
        judge_profile={"errors": {"rate": 1.0, "kinds": {"timeout": 1}}},
        judge_model={"timeout": 120.0},  # a bound: the judge answers when released below
    )
    with LabStack(lab, traffic=False, hold=120) as stack:
        responses = [chat(stack, user=f"u{i}") for i in range(6)]
        assert all(r.status_code == 200 for r in responses)
        assert metric(stack, "llm_judge_requests_total") == 0  # the judge has answered nothing
        # one held by the worker, one queued, the other four dropped
        assert metric(stack, "llm_judge_dropped_total", reason="queue_full", kind="pointwise") == 4
        # the judge fails the held request (504) and then the queued one, both counted
        stack._loop.call_soon_threadsafe(stack.providers["j"].release)  # on the lab's loop
        wait_for(stack, "llm_judge_requests_total", 2, outcome="error")
        assert metric(stack, "llm_quality_score_count") == 0


def test_past_its_hourly_budget_the_judge_is_not_called(
    make_lab: MakeLab, write_flags: WriteFlags
) -> None:
    write_flags(["a", "b"])
    lab = judged_lab(
        make_lab,
        judge={"max_usd_per_hour": 0.001},
        judge_model={"price": {"prompt_per_1k": 1.0}},  # one judge call costs more than that
    )
    with LabStack(lab, traffic=False) as stack:
        chat(stack)
        wait_for(stack, "llm_judge_requests_total", 1, outcome="ok")
        assert metric(stack, "llm_judge_cost_usd_total", route="bot", judge="j") > 0.001
        for i in range(3):
            assert chat(stack, user=f"u{i}").status_code == 200
        assert metric(stack, "llm_judge_dropped_total", reason="budget") == 3
        assert metric(stack, "llm_judge_requests_total") == 1


def test_an_unreadable_rubric_or_an_unknown_judge_is_refused_naming_the_field(
    tmp_path: Path,
) -> None:
    base = {
        "flags": {"provider": "file", "path": str(tmp_path / "flags.json")},
        "models": [{"name": "a", "base_url": "http://127.0.0.1:9"}],
    }
    route = {"name": "bot", "flag": "f", "default_model": "a"}
    with pytest.raises(ValueError, match=r"routes\[0\].judge.model: 'gpt-judge' is not a model"):
        GatewaySpec.model_validate({**base, "routes": [{**route, "judge": {"model": "gpt-judge"}}]})
    judged = {**route, "judge": {"model": "a", "rubric": str(tmp_path / "absent.txt")}}
    spec = GatewaySpec.model_validate({**base, "routes": [judged]})
    with pytest.raises(InvalidInput, match=r"routes\[0\].judge.rubric: cannot read .*absent.txt"):
        Judges(spec, GatewayMetrics())
    (tmp_path / "rubric.txt").write_bytes(b"\xff\xfe")
    judged["judge"]["rubric"] = str(tmp_path / "rubric.txt")  # type: ignore[index]
    with pytest.raises(InvalidInput, match="is not UTF-8 text"):
        Judges(GatewaySpec.model_validate({**base, "routes": [judged]}), GatewayMetrics())


def test_the_candidate_s_result_reads_the_winner_by_position() -> None:
    assert pair_result("B", swapped=False) == "win"
    assert pair_result("A", swapped=False) == "loss"
    assert pair_result("A", swapped=True) == "win"
    assert pair_result("B", swapped=True) == "loss"
    assert pair_result("tie", swapped=True) == "tie"


@pytest.fixture
def lab_judge() -> Iterator[Callable[..., str]]:
    """lab_judge(**JudgeProfile) -> the URL of a lab judge served on loopback."""
    servers: list[BackgroundServer] = []

    def start(**profile: Any) -> str:
        judge = ProviderProfile(name="j", latency={"median": 0, "p95": 0}, judge=profile)
        servers.append(BackgroundServer(SimulatedProvider(judge).app).start())
        return servers[-1].url

    yield start
    for server in servers:
        server.stop()


def judge_offline(
    url: str, tmp_path: Path, offers: int, offer: Any, **judge: Any
) -> GatewayMetrics:
    """`offer(judges)` `offers` times to Judges with the lab judge at `url`; its metrics once
    every offer is judged."""
    spec = GatewaySpec.model_validate(
        {
            "flags": {"provider": "file", "path": str(tmp_path / "flags.json")},
            "routes": [
                {"name": "bot", "flag": "f", "default_model": "a", "judge": {"model": "j", **judge}}
            ],
            "models": [{"name": "a", "base_url": url}, {"name": "j", "base_url": url}],
        }
    )
    metrics = GatewayMetrics()

    async def run() -> None:
        judges = Judges(spec, metrics)
        async with Upstream.open() as upstream:
            judges.start(upstream.complete)
            for _ in range(offers):
                offer(judges)
                await asyncio.sleep(0)
            while sum(s.value for s in _samples(metrics, "llm_judge_requests_total")) < offers:
                await asyncio.sleep(0.01)
            await judges.aclose()

    asyncio.run(asyncio.wait_for(run(), 20))
    return metrics


def pairwise_results(url: str, tmp_path: Path, pairs: int, **judge: Any) -> dict[str, float]:
    """Judge `pairs` pairs of a wrong primary and a right shadow; the candidate's results."""
    primary = {"route": "bot", "model": "a"}
    shadow = {"route": "bot", "model": "cand"}

    def offer(judges: Judges) -> None:
        judges.offer_pair("bot", {"messages": [QUESTION]}, primary, WRONG, shadow, RIGHT)

    metrics = judge_offline(url, tmp_path, pairs, offer, **judge)
    results = {"win": 0.0, "tie": 0.0, "loss": 0.0}
    for sample in _samples(metrics, "llm_judge_pairwise_total"):
        assert sample.labels["baseline"] == "a" and sample.labels["candidate"] == "cand"
        results[sample.labels["result"]] += sample.value
    return results


def test_shadow_answers_are_scored_apart_from_the_live_variants(
    lab_judge: Callable[..., str], tmp_path: Path
) -> None:
    labels = {"route": "bot", "variant": "cand", "model": "cand", "provider": "openai"}
    labels["tier"] = "free"

    def offer(judges: Judges) -> None:
        judges.offer_answer(labels, {"messages": [QUESTION]}, RIGHT, shadow=True)

    metrics = judge_offline(lab_judge(), tmp_path, 3, offer, sample=1.0)
    shadow = {s.name: s.value for s in _samples(metrics, "llm_shadow_quality_score_count")}
    assert shadow == {"llm_shadow_quality_score_count": 3}
    assert not any(s.value for s in _samples(metrics, "llm_quality_score_count"))


def _samples(metrics: GatewayMetrics, name: str) -> list[Any]:
    text = metrics.exposition().decode()
    return [s for f in text_string_to_metric_families(text) for s in f.samples if s.name == name]


def test_pairs_are_judged_and_the_swap_cancels_a_judge_s_position_bias(
    lab_judge: Callable[..., str], tmp_path: Path
) -> None:
    fair = pairwise_results(lab_judge(), tmp_path, 20)
    assert fair == {"win": 20, "tie": 0, "loss": 0}  # the right shadow wins, in either position
    biased = lab_judge(position_bias=1.0)  # always says A, whatever the answers
    assert pairwise_results(biased, tmp_path, 20) == {"win": 10, "tie": 0, "loss": 10}
    assert pairwise_results(biased, tmp_path, 20, swap=False) == {"win": 0, "tie": 0, "loss": 20}


def test_shadow_pairs_and_shadow_answers_reach_the_route_s_judge(
    make_lab: MakeLab, write_flags: WriteFlags
) -> None:
    """The whole loop in one gateway: users get a (always right), every request is mirrored to
    b (always wrong), and the lab judge calls every pair a loss for b and scores b's answers 0,
    in the shadow families only."""
    write_flags(["a", "b"])
    document = judged_lab(make_lab, judge={"sample": 1.0, "pairs": 1.0}).model_dump(
        mode="json", exclude_defaults=True
    )
    document["gateway"]["routes"][0]["shadow"] = {"model": "b", "percent": 100}
    with LabStack(LabSpec.model_validate(document), traffic=False) as stack:
        for i in range(6):
            response = chat(stack, user=f"user-{i}")
            assert response.headers["x-canaryctl-model"] == "a"
        wait_for(stack, "llm_judge_pairwise_total", 6, baseline="a", candidate="b")
        wait_for(stack, "llm_shadow_quality_score_count", 6, variant="b")
        assert metric(stack, "llm_judge_pairwise_total", result="loss") == 6
        assert metric(stack, "llm_shadow_quality_score_sum", variant="b") == 0
        assert metric(stack, "llm_quality_score_count", variant="a") == 6
        assert metric(stack, "llm_quality_score_count", variant="b") == 0  # no user saw b
