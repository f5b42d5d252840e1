"""The lab's judge grades arithmetic answers by the truth, wrong exactly as often as its profile
says, in the judge format the gateway asks and reads (gateway/verdicts.py)."""

from __future__ import annotations

import json
import random

import httpx
import pytest
from pydantic import ValidationError

from canaryctl.chaos import BackgroundServer
from canaryctl.gateway.verdicts import (
    pairwise_messages,
    pointwise_messages,
    read_score,
    read_task,
    read_winner,
)
from canaryctl.lab import SimulatedProvider
from canaryctl.lab.judge import UNREADABLE, true_score, true_winner, verdict
from canaryctl.runbook.lab import JudgeProfile, ProviderProfile

RIGHT, WRONG = "17 + 25 = 42. Happy to help.", "17 + 25 = 43. Happy to help."
QUESTION = "What is 17 + 25?"


def judged(messages: list[dict[str, str]], profile: JudgeProfile, n: int) -> list[str]:
    return [verdict(messages, profile, random.Random(i)) for i in range(n)]


def test_the_truth_decides_scores_and_winners() -> None:
    assert true_score(QUESTION, RIGHT) == 1.0
    assert true_score(QUESTION, WRONG) == 0.0
    assert true_score(QUESTION, "I am not sure.") == 0.0
    assert true_score("How are you?", RIGHT) is None
    assert true_winner(QUESTION, RIGHT, WRONG) == "A"
    assert true_winner(QUESTION, WRONG, RIGHT) == "B"
    assert true_winner(QUESTION, RIGHT, RIGHT) == "tie"
    assert true_winner(QUESTION, WRONG, "no idea") == "tie"


def test_a_perfect_judge_replies_with_the_truth_in_the_format_asked() -> None:
    perfect = JudgeProfile()
    rng = random.Random(0)
    assert verdict(pointwise_messages("Be fair.", QUESTION, RIGHT), perfect, rng) == (
        '{"score": 1.0}'
    )
    assert read_score(verdict(pointwise_messages("r", QUESTION, WRONG), perfect, rng)) == 0.0
    pair = pairwise_messages("r", QUESTION, WRONG, RIGHT)
    assert read_winner(verdict(pair, perfect, rng)) == "B"


def test_the_error_rate_is_the_share_of_wrong_verdicts() -> None:
    profile = JudgeProfile(error_rate=0.2)
    scores = [
        read_score(r) for r in judged(pointwise_messages("r", QUESTION, RIGHT), profile, 2000)
    ]
    assert set(scores) == {0.0, 1.0}
    assert 0.17 < scores.count(0.0) / 2000 < 0.23
    winners = [
        read_winner(r)
        for r in judged(pairwise_messages("r", QUESTION, RIGHT, WRONG), profile, 2000)
    ]
    assert 0.17 < (2000 - winners.count("A")) / 2000 < 0.23
    assert winners.count("B") and winners.count("tie")  # the wrong verdicts are both others


def test_position_bias_favours_the_first_answer_and_malformed_replies_are_prose() -> None:
    biased = JudgeProfile(position_bias=0.3)
    winners = [
        read_winner(r) for r in judged(pairwise_messages("r", QUESTION, WRONG, RIGHT), biased, 2000)
    ]
    assert 0.27 < winners.count("A") / 2000 < 0.33
    assert winners.count("A") + winners.count("B") == 2000
    sloppy = judged(pointwise_messages("r", QUESTION, RIGHT), JudgeProfile(malformed=0.5), 400)
    assert 150 < sum(read_score(r) is None for r in sloppy) < 250


def test_what_is_not_a_judge_request_gets_prose() -> None:
    profile = JudgeProfile()
    rng = random.Random(0)
    assert verdict([{"role": "user", "content": QUESTION}], profile, rng) == UNREADABLE
    assert verdict(pointwise_messages("r", "How are you?", RIGHT), profile, rng) == UNREADABLE
    assert verdict("not a list", profile, rng) == UNREADABLE
    assert read_task(pairwise_messages("r", QUESTION, "a", "b")).answers == ("a", "b")  # type: ignore[union-attr]


def test_replies_are_read_leniently_about_wrapping_and_strictly_about_content() -> None:
    assert read_score('{"score": 0.75}') == 0.75
    assert read_score('Sure! ```json\n{"score": 1}\n```') == 1.0
    assert read_score('My verdict: {"score": 0} because it is wrong.') == 0.0
    for bad in (
        '{"score": 7}',
        '{"score": true}',
        '{"score": "1"}',
        '{"score": NaN}',
        "1",
        "",
        '{"grade": 1}',
        '{"score": 1, "why": ' + "[" * 5000 + "]" * 5000 + "}",  # past the recursion limit
    ):
        assert read_score(bad) is None, bad
    assert read_winner('{"winner": "b"}') == "B"
    assert read_winner(' {"winner": "Tie"} ') == "tie"
    for bad in ('{"winner": "C"}', '{"winner": 1}', "A", '{"score": 1}'):
        assert read_winner(bad) is None, bad


def test_a_lab_judge_provider_answers_over_http_and_only_speaks_openai() -> None:
    profile = ProviderProfile(name="judge", latency={"median": 0, "p95": 0}, judge=JudgeProfile())
    with BackgroundServer(SimulatedProvider(profile).app) as server:
        body = {"model": "judge", "messages": pointwise_messages("r", QUESTION, WRONG)}
        reply = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=10).json()
    content = reply["choices"][0]["message"]["content"]
    assert json.loads(content) == {"score": 0.0}
    assert reply["usage"]["completion_tokens"] >= 1
    with pytest.raises(ValidationError, match="a lab judge speaks the OpenAI chat API"):
        ProviderProfile(name="j", api="anthropic", judge=JudgeProfile())
