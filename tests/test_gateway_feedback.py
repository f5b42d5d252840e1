"""Quality feedback: POST /v1/feedback scores an answer against the variant that served it, on
any replica that shares the signing key, once, and only with the key that received it."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from canaryctl.chaos import BackgroundServer
from canaryctl.errors import InvalidInput
from canaryctl.gateway import create_app
from canaryctl.gateway.feedback import OTHER_KEY, AnswerIds, open_answer_ids, parse_feedback
from canaryctl.gateway.identity import Refused
from canaryctl.lab import LabStack
from canaryctl.runbook.gateway import GatewaySpec
from canaryctl.runbook.lab import LabSpec
from tests.fixed_upstream import FIXED_UPSTREAM, flag_file
from tests.test_gateway import FAST, chat, metric
from tests.test_gateway_virtual_keys import Served

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
    completion_id = json.loads(first.removeprefix("data: "))["id"]
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


LABELS = {"route": "bot", "variant": "a", "model": "a", "provider": "openai", "tier": "free"}


def test_an_id_says_what_served_it_until_it_expires_and_is_scored_once() -> None:
    now = [1_000_000.0]
    ids = AnswerIds(b"k" * 32, ttl=10, remember=2, clock=lambda: now[0])
    first, fallback = ids.issue(LABELS), ids.issue({**LABELS, "model": "b"})
    assert first != ids.issue(LABELS)  # two answers, two ids
    assert len(first) < 120 and first.startswith("chatcmpl-")
    assert ids.take(first) == LABELS
    assert ids.take(first) is None  # scored once
    assert ids.take(fallback) == {**LABELS, "model": "b"}
    late = ids.issue(LABELS)
    now[0] += 10
    assert ids.take(late) is None  # expired
    assert len(ids) == 0  # expired scored ids are forgotten
    remembered = [ids.issue(LABELS) for _ in range(3)]
    assert all(ids.take(i) == LABELS for i in remembered)
    assert len(ids) == 2  # at most `remember`, the oldest forgotten first
    assert ids.take(remembered[0]) == LABELS  # the limit's price: the forgotten one scores again


def test_an_altered_or_foreign_id_reads_as_nothing() -> None:
    ids = AnswerIds(b"k" * 32)
    issued = ids.issue(LABELS)
    body, mac = issued.removeprefix("chatcmpl-").split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload[1] = "b"  # claim another variant
    forged = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    for bad in (
        f"chatcmpl-{forged}.{mac}",
        issued[:-1] + ("A" if issued[-1] != "A" else "B"),
        issued.removeprefix("chatcmpl-"),
        "chatcmpl-never",
        "chatcmpl-.",
        "chatcmpl-%%%.***",
    ):
        assert ids.take(bad) is None, bad
    assert AnswerIds(b"another key " * 3).take(issued) is None
    # The MAC's last base64 character carries 2 bits and 4 of padding: its other spellings
    # decode to the same bytes, and each would otherwise be one more score for one answer.
    padding = "=" * (-len(mac) % 4)
    mac_bytes = base64.urlsafe_b64decode(mac + padding)
    for other in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_":
        spelling = mac[:-1] + other
        if other != mac[-1] and base64.urlsafe_b64decode(spelling + padding) == mac_bytes:
            assert ids.take(f"chatcmpl-{body}.{spelling}") is None, spelling
    assert ids.take(issued) == LABELS


def test_an_answer_is_scored_only_with_the_key_it_was_served_to() -> None:
    served = AnswerIds(b"k" * 32)
    answer = served.issue({**LABELS, "variant": "a"}, "web")
    assert served.take(answer, "batch") is OTHER_KEY
    assert served.take(answer) is OTHER_KEY  # no key is not the key either
    assert served.take(answer, "web") == LABELS
    assert served.take(answer, "web") is None  # scored once
    keyless = served.issue(LABELS)
    assert served.take(keyless, "web") is OTHER_KEY


def gateway_spec(upstream: str, flags: Path, **spec: Any) -> GatewaySpec:
    return GatewaySpec.model_validate(
        {
            "flags": {"provider": "file", "path": str(flags), "poll_interval": 0.1},
            "routes": [{"name": "bot", "flag": "f", "default_model": "a"}],
            "models": [{"name": "a", "base_url": upstream}],
            **spec,
        }
    )


def test_replicas_sharing_the_key_take_each_others_ids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CANARYCTL_FEEDBACK_KEY", "a-shared-secret-0123456789")
    flags = flag_file(tmp_path / "flags.json", ["a"])
    with BackgroundServer(FIXED_UPSTREAM) as upstream:
        spec = gateway_spec(upstream.url, flags)
        with (
            BackgroundServer(create_app(spec)) as one,
            BackgroundServer(create_app(spec)) as two,
        ):
            url = f"{one.url}/v1/chat/completions"
            body = {"model": "bot", "messages": [{"role": "user", "content": "2 + 3?"}]}
            answers = [httpx.post(url, json=body, timeout=10).json()["id"] for _ in range(2)]
            scored = httpx.post(f"{two.url}/v1/feedback", json={"id": answers[0], "score": 1})
            assert scored.status_code == 200 and scored.json()["variant"] == "a"
            again = httpx.post(f"{two.url}/v1/feedback", json={"id": answers[0], "score": 1})
            assert again.status_code == 404  # scored once on a replica
            tampered = answers[1][:-2] + ("AA" if not answers[1].endswith("AA") else "BB")
            refused = httpx.post(f"{two.url}/v1/feedback", json={"id": tampered, "score": 1})
            assert refused.status_code == 404
            assert metric(Served(two.url), "llm_quality_score_count", variant="a") == 1
            assert metric(Served(one.url), "llm_quality_score_count") == 0
    monkeypatch.setenv("CANARYCTL_FEEDBACK_KEY", "another-secret-0123456789")
    other, _ = open_answer_ids(spec)
    assert other.take(answers[1]) is None  # a gateway with another key takes none of them


def test_without_a_shared_key_ids_are_this_process_s_and_the_gateway_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CANARYCTL_FEEDBACK_KEY", raising=False)
    spec = gateway_spec("http://127.0.0.1:9", tmp_path / "flags.json")
    one, warning = open_answer_ids(spec)
    two, _ = open_answer_ids(spec)
    assert warning is not None and warning.startswith("CANARYCTL_FEEDBACK_KEY is not set")
    assert two.take(one.issue(LABELS)) is None
    monkeypatch.setenv("CANARYCTL_FEEDBACK_KEY", "short")
    with pytest.raises(
        InvalidInput, match=r"feedback\.key_env: CANARYCTL_FEEDBACK_KEY holds fewer"
    ):
        open_answer_ids(spec)
    monkeypatch.setenv("CANARYCTL_FEEDBACK_KEY", "long-enough-secret-0123")
    assert open_answer_ids(spec)[1] is None
    short_limit = gateway_spec(
        "http://127.0.0.1:9", tmp_path / "flags.json", limits={"max_id_length": 64}
    )
    ids, _ = open_answer_ids(short_limit)
    assert 64 < len(ids.issue(LABELS, "web")) <= ids.max_length  # its own ids always fit


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
