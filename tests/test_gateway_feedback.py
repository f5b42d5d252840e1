"""Quality feedback: POST /v1/feedback scores an answer against the variant that served it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from canaryctl.gateway.feedback import OTHER_KEY, ServedAnswers, parse_feedback
from canaryctl.gateway.identity import Refused
from canaryctl.lab import LabStack
from canaryctl.runbook.lab import LabSpec
from tests.test_gateway import FAST, chat, metric

MakeLab = Callable[..., LabSpec]
WriteFlags = Callable[..., Path]


def feedback(stack: LabStack, body: Any) -> httpx.Response:
    return httpx.post(f"{stack.gateway_url}/v1/feedback", json=body, timeout=10)


@pytest.fixture
def split(make_lab: MakeLab, write_flags: WriteFlags) -> Iterator[LabStack]:
    """Models a and b, half the users on each."""
    halves = [{"variation": 1, "weight": 50000}, {"variation": 0, "weight": 50000}]
    write_flags(["a", "b"], {"rollout": {"variations": halves}})
    providers = [{"name": "a", "latency": FAST}, {"name": "b", "latency": FAST}]
    with LabStack(make_lab(providers), traffic=False) as stack:
        yield stack


def test_a_score_is_metered_against_the_variant_that_served_the_answer(
    split: LabStack,
) -> None:
    served: dict[str, list[str]] = {"a": [], "b": []}
    for user in range(40):
        response = chat(split, user=f"user-{user}")
        assert response.status_code == 200
        served[response.headers["x-canaryctl-variant"]].append(response.json()["id"])
    assert served["a"] and served["b"]
    for completion_id in served["a"]:
        assert feedback(split, {"id": completion_id, "score": 1}).json()["variant"] == "a"
    for completion_id in served["b"][:3]:
        assert feedback(split, {"id": completion_id, "score": 0.25}).status_code == 200

    assert metric(split, "llm_quality_score_count", variant="a", model="a") == len(served["a"])
    assert metric(split, "llm_quality_score_sum", variant="a", route="bot") == len(served["a"])
    assert metric(split, "llm_quality_score_count", variant="b", tier="free") == 3
    assert metric(split, "llm_quality_score_sum", variant="b") == pytest.approx(0.75)


def test_streamed_answers_can_be_scored(split: LabStack) -> None:
    with httpx.stream(
        "POST",
        f"{split.gateway_url}/v1/chat/completions",
        json={"model": "bot", "stream": True, "messages": [{"role": "user", "content": "1+1"}]},
        headers={"X-User": "u1"},
        timeout=10,
    ) as response:
        variant = response.headers["x-canaryctl-variant"]
        first = next(line for line in response.iter_lines() if line.startswith("data: {"))
    completion_id = first.removeprefix("data: ").split('"id": "')[1].split('"')[0]
    assert feedback(split, {"id": completion_id, "score": 0.5}).status_code == 200
    assert metric(split, "llm_quality_score_sum", variant=variant) == 0.5


def test_unknown_or_already_scored_ids_are_404_and_bad_scores_400(split: LabStack) -> None:
    completion_id = chat(split).json()["id"]
    for bad in (
        {"id": completion_id, "score": 1.5},
        {"id": completion_id, "score": "good"},
        {"id": completion_id, "score": True},
        {"score": 1},
        [completion_id],
    ):
        response = feedback(split, bad)
        assert response.status_code == 400, bad
        assert response.json()["error"]["type"] == "invalid_request_error"
    missing = feedback(split, {"id": "chatcmpl-never", "score": 1})
    assert missing.status_code == 404
    assert "chatcmpl-never" in missing.json()["error"]["message"]
    assert feedback(split, {"id": completion_id, "score": 0}).status_code == 200
    assert feedback(split, {"id": completion_id, "score": 0}).status_code == 404
    assert metric(split, "llm_quality_score_count") == 1


def test_served_answers_forget_the_oldest_and_the_expired() -> None:
    now = [0.0]
    served = ServedAnswers(capacity=2, ttl=10, clock=lambda: now[0])
    for name in ("x", "y", "z"):
        served.remember(name, {"variant": name})
    served.remember(None, {"variant": "no id"})
    assert len(served) == 2
    assert served.take("x") is None  # dropped for capacity
    assert served.take("y") == {"variant": "y"}
    now[0] = 10.0
    assert served.take("z") is None  # expired


def test_an_answer_is_scored_only_with_the_key_it_was_served_to() -> None:
    served = ServedAnswers()
    served.remember("x", {"variant": "a"}, "web")
    assert served.take("x", "batch") is OTHER_KEY
    assert served.take("x") is OTHER_KEY  # no key is not the key either
    assert served.take("x", "web") == {"variant": "a"}
    assert served.take("x", "web") is None  # scored once


def test_feedback_bodies_are_checked() -> None:
    assert parse_feedback({"id": "c", "score": 0}, 256) == ("c", 0.0)
    refused = [
        parse_feedback({"id": "c", "score": float("nan")}, 256),
        parse_feedback({"id": "", "score": 1}, 256),
        parse_feedback({"id": "c" * 257, "score": 1}, 256),
    ]
    assert all(isinstance(r, Refused) for r in refused)
    nan, empty, long = (r for r in refused if isinstance(r, Refused))
    assert (nan.status, empty.status, long.status) == (400, 400, 413)
    assert nan.message.startswith("score") and empty.message.startswith("id")
    assert long.message == "id: 257 characters, more than the 256 allowed"
