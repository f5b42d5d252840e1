"""What counts as an answer, case by case (the pure checks behind the gateway's outcomes)."""

from __future__ import annotations

from typing import Any

import pytest

from canaryctl.gateway.answers import (
    StreamWatch,
    checked_completion,
    checked_embeddings,
    checked_ollama,
    outcome_of,
)
from canaryctl.gateway.failures import UpstreamFailure, failure_for_status
from canaryctl.runbook.gateway import ModelSpec

MODEL = ModelSpec(name="m", base_url="http://127.0.0.1:9", api_key_env="M_KEY")


def completion(message: dict[str, Any], finish: str = "stop", **extra: Any) -> dict[str, Any]:
    return {"choices": [{"index": 0, "message": message, "finish_reason": finish}], **extra}


@pytest.mark.parametrize(
    "message",
    [
        {"role": "assistant", "content": "Five."},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Five."}]},
        {"role": "assistant", "content": None, "refusal": "I can't help with that."},
    ],
)
def test_content_a_tool_call_or_a_refusal_is_an_answer(message: dict[str, Any]) -> None:
    assert outcome_of(checked_completion(MODEL, completion(message))) == "ok"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({}, "malformed"),
        ([], "malformed"),
        ({"choices": []}, "malformed"),
        ({"choices": ["x"]}, "malformed"),
        (completion({"content": "x"}, usage="12"), "malformed"),
        (completion({"content": "x"}, usage={"prompt_tokens": True}), "malformed"),
        (completion({"content": "x"}, usage={"completion_tokens": 1.5}), "malformed"),
        (completion({"content": "x"}, usage={"total_tokens": -1}), "malformed"),
        (completion({"content": ""}), "empty_completion"),
        (completion({"content": "  \n"}), "empty_completion"),
        (completion({"content": None, "tool_calls": []}), "empty_completion"),
    ],
)
def test_what_is_not_an_answer_is_the_models_failure(data: Any, reason: str) -> None:
    with pytest.raises(UpstreamFailure) as failed:
        checked_completion(MODEL, data)
    assert failed.value.reason == reason
    assert failed.value.status == 502 and failed.value.outcome == "error"
    assert failed.value.retryable


def test_a_filtered_completion_is_filtered_even_when_empty() -> None:
    data = completion({"content": ""}, "content_filter")
    assert outcome_of(checked_completion(MODEL, data)) == "filtered"


def test_ollama_counts_must_be_counts_and_embeddings_need_vectors() -> None:
    with pytest.raises(UpstreamFailure, match="eval_count is -4"):
        checked_ollama(MODEL, {"message": {"content": "x"}, "eval_count": -4})
    with pytest.raises(UpstreamFailure, match="no embeddings"):
        checked_embeddings(MODEL, {"data": []})
    assert checked_embeddings(MODEL, {"data": [{"embedding": [0.1]}]})


def test_a_stream_is_decided_by_its_first_content_and_counted_at_its_end() -> None:
    watch = StreamWatch(MODEL)
    watch.see({"choices": [{"delta": {"role": "assistant", "content": ""}}]})
    assert not watch.decided
    with pytest.raises(UpstreamFailure, match="empty completion"):
        watch.ended()
    watch.see({"choices": [{"delta": {"content": "Fi"}}]})
    assert watch.decided and watch.outcome == "ok"
    watch.see({"choices": [{"delta": {}, "finish_reason": "content_filter"}]})
    assert watch.outcome == "filtered"
    with pytest.raises(UpstreamFailure, match=r"usage\.prompt_tokens"):
        watch.see({"choices": [], "usage": {"prompt_tokens": -1}})


@pytest.mark.parametrize(
    ("status", "client_status", "outcome"),
    [
        (400, 400, "rejected"),
        (413, 413, "rejected"),
        (422, 422, "rejected"),
        (401, 502, "error"),
        (403, 502, "error"),
        (404, 502, "error"),
        (409, 502, "error"),
        (429, 429, "error"),
        (500, 500, "error"),
        (529, 529, "error"),
    ],
)
def test_only_the_clients_own_mistakes_are_rejected(
    status: int, client_status: int, outcome: str
) -> None:
    provider_error = {"message": "Incorrect API key provided: sk-abc***xyz", "type": "x"}
    failure = failure_for_status(MODEL, status, provider_error, "Reason", "3")
    assert (failure.status, failure.outcome) == (client_status, outcome)
    assert failure.retryable is (outcome == "error")
    if client_status == 502:  # canaryctl's own words, naming the model; never the provider's
        assert "sk-abc" not in str(failure.body)
        assert failure.body["error"]["message"].startswith("model m:")
    if status in (401, 403):
        assert "M_KEY" in failure.body["error"]["message"]
