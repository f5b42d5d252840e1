"""The lab's simulated providers, traffic and LabStack, over real loopback HTTP."""

from __future__ import annotations

import asyncio
import json
import math
import re
import socket
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families
from prometheus_server import eventually

from canaryctl.cli import main
from canaryctl.lab import LabStack
from canaryctl.lab.arithmetic import answer_in, parse_question
from canaryctl.lab.behaviour import decide, request_rng
from canaryctl.lab.traffic import TrafficGenerator
from canaryctl.runbook.lab import LabSpec, ProviderProfile

FAST = {"median": 0.001, "p95": 0.003}
QUESTIONS = [f"What is {a} {op} {b}?" for a in (3, 17, 42) for op in "+-*" for b in (5, 25)]

MakeLab = Callable[..., LabSpec]
WriteFlags = Callable[..., Path]


def provider(name: str = "p", **profile: Any) -> dict[str, Any]:
    return {"name": name, "latency": FAST, **profile}


def ask(url: str, content: str, **body: Any) -> httpx.Response:
    payload = {"model": "m", "messages": [{"role": "user", "content": content}], **body}
    return httpx.post(f"{url}/v1/chat/completions", json=payload, timeout=5)


@pytest.fixture
def flags(write_flags: WriteFlags) -> Path:
    return write_flags(["p"])


def outcomes(lab: LabSpec) -> list[tuple[int, str]]:
    with LabStack(lab, traffic=False) as stack:
        url = stack.provider_urls["p"]
        return [(r.status_code, r.text) for r in (ask(url, q) for q in QUESTIONS)]


def test_same_seed_and_order_replays_the_same_outcomes(make_lab: MakeLab, flags: Path) -> None:
    errors = {"rate": 0.3, "kinds": {"500": 1, "503": 1, "429": 1}}
    first = outcomes(make_lab([provider(errors=errors)], seed=7))
    again = outcomes(make_lab([provider(errors=errors)], seed=7))
    other = outcomes(make_lab([provider(errors=errors)], seed=8))
    strip = [(status, json.loads(text).get("choices")) for status, text in first]
    assert strip == [(s, json.loads(t).get("choices")) for s, t in again]
    assert strip != [(s, json.loads(t).get("choices")) for s, t in other]
    assert {status for status, _ in first} >= {200}
    assert {status for status, _ in first} & {500, 503, 429}


def test_error_kinds_have_the_shapes_clients_expect(make_lab: MakeLab, flags: Path) -> None:
    lab = make_lab(
        [
            provider("limited", errors={"rate": 1, "kinds": {"429": 1}, "retry_after": "2s"}),
            provider("overloaded", errors={"rate": 1, "kinds": {"503": 1}}),
            provider("broken", errors={"rate": 1, "kinds": {"500": 1}}),
        ]
    )
    with LabStack(lab, traffic=False) as stack:
        limited = ask(stack.provider_urls["limited"], "hi")
        assert limited.status_code == 429
        assert limited.headers["retry-after"] == "2"
        assert limited.json()["error"]["type"] == "rate_limit_exceeded"
        for name, status in (("overloaded", 503), ("broken", 500)):
            response = ask(stack.provider_urls[name], "hi")
            assert response.status_code == status
            assert response.json()["error"]["message"]
            assert "retry-after" not in response.headers
        ollama = httpx.post(
            stack.provider_urls["overloaded"] + "/api/chat",
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert ollama.status_code == 503
        assert isinstance(ollama.json()["error"], str)


def test_a_timeout_holds_past_the_client_and_ends_on_shutdown(
    make_lab: MakeLab, flags: Path
) -> None:
    lab = make_lab([provider(errors={"rate": 1, "kinds": {"timeout": 1}})])
    stack = LabStack(lab, traffic=False).start()
    url = stack.provider_urls["p"]
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{url}/v1/chat/completions", json={"messages": []}, timeout=0.3)
    held: list[int | str] = []

    def wait_patiently() -> None:
        try:
            held.append(ask(url, "hi").status_code)
        except httpx.HTTPError as exc:
            held.append(type(exc).__name__)

    waiter = threading.Thread(target=wait_patiently)
    waiter.start()
    provider_p = stack.providers["p"]
    eventually("the second request to arrive", lambda: provider_p.requests == 2)
    time.sleep(0.3)  # a slow machine can only make this wait longer, never answer it
    assert not held, "a timeout must not answer while the client waits"
    stack.stop()
    waiter.join(60)  # a bound; the hold alone would last provider_p.hold (120 s)
    assert held == [504]


def test_quality_is_the_share_of_right_answers(make_lab: MakeLab, flags: Path) -> None:
    with LabStack(make_lab([provider(quality=0.7)]), traffic=False) as stack:
        url = stack.provider_urls["p"]
        with httpx.Client(timeout=5) as client:
            right = 0
            for i in range(300):
                question = f"What is {i} * 3?"
                body = {"model": "m", "messages": [{"role": "user", "content": question}]}
                reply = client.post(f"{url}/v1/chat/completions", json=body).json()
                right += answer_in(reply["choices"][0]["message"]["content"]) == i * 3
        chat = ask(url, "Where do I change my email?").json()
    assert 0.6 < right / 300 < 0.8
    assert answer_in(chat["choices"][0]["message"]["content"]) is None
    assert chat["usage"]["completion_tokens"] > 0


def test_latency_draws_match_the_median_and_p95() -> None:
    profile = ProviderProfile(name="p", latency={"median": 0.4, "p95": 1.0})
    draws = sorted(decide(profile, "hi", request_rng(0, "p", i)).latency for i in range(4000))
    assert statistics.median(draws) == pytest.approx(0.4, rel=0.08)
    assert draws[int(0.95 * len(draws))] == pytest.approx(1.0, rel=0.1)


def test_completion_tokens_centre_on_the_mean_and_respect_max_tokens() -> None:
    profile = ProviderProfile(name="p", tokens={"completion_mean": 100, "completion_max": 130})
    counts = [decide(profile, "hi", request_rng(0, "p", i)).completion_tokens for i in range(500)]
    assert statistics.mean(counts) == pytest.approx(100, rel=0.05)
    assert max(counts) == 130
    capped = decide(profile, "hi", request_rng(0, "p", 1), max_tokens=5)
    assert capped.completion_tokens <= 5


def test_questions_parse_in_the_forms_people_write() -> None:
    assert parse_question("What is 17 + 25?").answer == 42
    assert parse_question("what's 9 x 3").answer == 27
    assert parse_question("What is 4 - 10?").answer == -6
    assert parse_question("Reset my password") is None
    assert answer_in("17 + 25 = 42. Thanks, 10,000 rows.") == 42


def test_openai_stream_sends_chunks_usage_and_done(make_lab: MakeLab, flags: Path) -> None:
    with LabStack(make_lab([provider()]), traffic=False) as stack:
        url = stack.provider_urls["p"]
        plain = ask(url, "What is 2 + 2?", stream=True).text
        with_usage = ask(
            url, "What is 2 + 2?", stream=True, stream_options={"include_usage": True}
        ).text
    events = [line[6:] for line in with_usage.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text.startswith("2 + 2 = ")
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert '"usage"' not in plain and plain.rstrip().endswith("data: [DONE]")


@pytest.mark.parametrize("body", [b"{", b'{"a": "\xff"}', b"[" * 5000 + b"]" * 5000])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/embeddings", "/v1/messages",
                                  "/api/chat", "/api/generate"])  # fmt: skip
def test_a_body_that_is_not_json_is_a_400_on_every_endpoint(
    make_lab: MakeLab, flags: Path, path: str, body: bytes
) -> None:
    """Cut JSON, bytes that are not UTF-8, JSON nested past the recursion limit: the simulated
    provider refuses each as its real one would, never with a 500."""
    api = "anthropic" if path == "/v1/messages" else "openai"
    with LabStack(make_lab([provider(api=api)]), traffic=False) as stack:
        headers = {"content-type": "application/json", "anthropic-version": "2023-06-01"}
        answer = httpx.post(stack.provider_urls["p"] + path, content=body, headers=headers)
    assert answer.status_code == 400, answer.text
    assert "not JSON" in answer.text


def test_ollama_endpoints_stream_ndjson_by_default(make_lab: MakeLab, flags: Path) -> None:
    with LabStack(make_lab([provider()]), traffic=False) as stack:
        url = stack.provider_urls["p"]
        messages = [{"role": "user", "content": "What is 6 * 7?"}]
        streamed = httpx.post(f"{url}/api/chat", json={"model": "llama3", "messages": messages})
        single = httpx.post(
            f"{url}/api/generate", json={"model": "llama3", "prompt": "hi", "stream": False}
        )
    assert streamed.headers["content-type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in streamed.text.splitlines()]
    assert [line["done"] for line in lines] == [False] * (len(lines) - 1) + [True]
    assert "".join(line["message"]["content"] for line in lines).startswith("6 * 7 = ")
    assert lines[-1]["eval_count"] > 0 and lines[-1]["prompt_eval_count"] > 0
    body = single.json()
    assert body["done"] is True and body["response"] and body["eval_count"] > 0


def test_traffic_arrives_at_the_rate_and_follows_set_traffic_rate(
    make_lab: MakeLab, flags: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counted on the generator's own schedule, not the wall clock: each arrival comes after
    the gap it drew (paced, not a flood; a slow machine only makes waits longer), the gaps drawn
    are those of a Poisson process at the set rate (arrivals per scheduled second), and after
    set_traffic_rate they are those of the new rate. Every scheduled arrival is sent or shed."""
    gaps: list[tuple[float, float, float]] = []  # (rate, gap drawn, seconds waited) per arrival
    original = TrafficGenerator._gap

    async def recorded(generator: TrafficGenerator, seconds: float) -> bool:
        loop = asyncio.get_running_loop()
        started = loop.time()
        arrived = await original(generator, seconds)
        if arrived:
            gaps.append((generator.rate, seconds, loop.time() - started))
        return arrived

    monkeypatch.setattr(TrafficGenerator, "_gap", recorded)
    lab = make_lab([provider()], traffic={"route": "bot", "rate": 50, "users": 20})
    with LabStack(lab) as stack:
        traffic = stack.traffic
        assert traffic is not None
        eventually("60 arrivals at 50/s", lambda: len(gaps) >= 60)
        stack.set_traffic_rate(250)
        eventually("150 arrivals at 250/s", lambda: sum(r == 250 for r, _, _ in gaps) >= 150)
    late = traffic.snapshot()
    for rate, drawn, waited in gaps:
        assert waited >= drawn - 0.002, (rate, drawn, waited)
    for rate in (50, 250):
        drawn = [gap for r, gap, _ in gaps if r == rate]
        per_scheduled_second = len(drawn) / sum(drawn)
        # n >= 60 exponential gaps: the mean's relative sd is under 13%, these bounds 4 sd wide
        assert 0.6 * rate <= per_scheduled_second <= 1.7 * rate, (rate, per_scheduled_second)
    # an arrival whose request had not begun when traffic stopped is cancelled uncounted
    assert len(gaps) - 1 <= late.sent + late.shed <= len(gaps)
    assert set(late.by_variant) == {"p"} and set(late.by_outcome) == {"200"}
    assert late.correct["p"] > 0.7 * late.requests("p")


def test_stop_leaves_no_thread_or_listening_socket(make_lab: MakeLab, flags: Path) -> None:
    lab = make_lab([provider()], traffic={"route": "bot", "rate": 100})
    before = set(threading.enumerate())  # other tests' threads may end meanwhile: compare sets
    with LabStack(lab) as stack:
        ports = [
            int(u.rsplit(":", 1)[1]) for u in [stack.gateway_url, *stack.provider_urls.values()]
        ]
        assert httpx.get(stack.gateway_url + "/health").json() == {"status": "ok"}
        time.sleep(0.3)
    assert [t for t in threading.enumerate() if t not in before and t.is_alive()] == []
    for port in ports:
        with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port)):
            pass


def test_lab_serve_prints_urls_and_stops_after_duration(
    tmp_path: Path, write_flags: WriteFlags
) -> None:
    write_flags(["p"])
    doc = tmp_path / "lab.yaml"
    doc.write_text(
        "apiVersion: canaryctl/v1\nkind: Lab\nmetadata: {name: tiny}\nspec:\n"
        "  providers: [{name: p, latency: {median: 0.001, p95: 0.002}}]\n"
        "  gateway:\n    listen: 127.0.0.1:0\n"
        "    flags: {provider: file, path: flags.json}\n"
        "    routes: [{name: bot, flag: model-flag, default_model: p}]\n"
        "    models: [{name: p, base_url: 'lab://p'}]\n"
        "  traffic: {route: bot, rate: 40}\n"
    )
    result = CliRunner().invoke(main, ["lab", "serve", str(doc), "--duration", "1s", "-o", "json"])
    assert result.exit_code == 0, result.output
    started, stopped = (json.loads(line) for line in result.output.splitlines())
    assert started["gateway_url"].startswith("http://127.0.0.1:")
    assert set(started["providers"]) == {"p"}
    # traffic ran and was summarized; how much of it fits in 1 s is the machine's pace (the
    # rate itself is test_traffic_arrives_at_the_rate_and_follows_set_traffic_rate's)
    assert stopped["traffic"]["by_variant"]["p"]["200"] > 0

    bad = CliRunner().invoke(main, ["lab", "serve", str(doc), "--duration", "soon"])
    assert bad.exit_code == 2


def test_lab_serve_port_moves_the_gateway_so_two_labs_can_run(
    tmp_path: Path, write_flags: WriteFlags
) -> None:
    from loopback import free_port

    write_flags(["p"])
    doc = tmp_path / "lab.yaml"
    doc.write_text(
        "apiVersion: canaryctl/v1\nkind: Lab\nmetadata: {name: tiny}\nspec:\n"
        "  providers: [{name: p, latency: {median: 0.001, p95: 0.002}}]\n"
        "  gateway:\n    flags: {provider: file, path: flags.json}\n"
        "    routes: [{name: bot, flag: model-flag, default_model: p}]\n"
        "    models: [{name: p, base_url: 'lab://p'}]\n"
    )  # the document keeps the default listen, 127.0.0.1:8080
    port = free_port()
    args = ["lab", "serve", str(doc), "--port", str(port), "--no-traffic", "--duration", "0.2s"]
    result = CliRunner().invoke(main, [*args, "-o", "json"])
    assert result.exit_code == 0, result.output
    started = json.loads(result.output.splitlines()[0])
    assert started["gateway_url"] == f"http://127.0.0.1:{port}"
    bad = CliRunner().invoke(main, ["lab", "serve", str(doc), "--port", "70000"])
    assert bad.exit_code == 2 and "--port" in bad.output


def test_gateway_latency_buckets_are_where_rollouts_look() -> None:
    from canaryctl.gateway import BUCKETS

    assert sum(1 <= b <= 3 for b in BUCKETS) >= 6
    assert min(BUCKETS) <= 0.05 and max(BUCKETS) >= 30 and not math.isinf(max(BUCKETS))


def quality_scores(stack: LabStack) -> tuple[float, float]:
    """(sum, count) of the gateway's llm_quality_score summary, all labels together."""
    totals = {"llm_quality_score_sum": 0.0, "llm_quality_score_count": 0.0}
    for family in text_string_to_metric_families(httpx.get(stack.metrics_url).text):
        for sample in family.samples:
            if sample.name in totals:
                totals[sample.name] += sample.value
    return totals["llm_quality_score_sum"], totals["llm_quality_score_count"]


@pytest.mark.parametrize("feedback", [0.5, 0.0])
def test_traffic_grades_a_share_of_answers_back_to_the_gateway(
    make_lab: MakeLab, flags: Path, feedback: float
) -> None:
    traffic = {"route": "bot", "rate": 200, "users": 50, "feedback": feedback}
    lab = make_lab([provider(quality=0.6)], traffic=traffic)
    with LabStack(lab) as stack:
        assert stack.traffic is not None
        deadline = time.monotonic() + 30
        while stack.traffic.snapshot().by_outcome.get("200", 0) < 400:
            assert time.monotonic() < deadline, "traffic did not get 400 answers"
            time.sleep(0.05)
        snapshot = stack.traffic.snapshot()
        total, count = quality_scores(stack)
    answered = snapshot.by_outcome["200"]
    if feedback == 0:
        assert count == 0 and snapshot.scored == {}
        return
    # The gateway records a score before it answers the grader, so it has at least as many.
    assert count >= snapshot.scored["p"]
    assert 0.35 * answered <= snapshot.scored["p"] <= 0.65 * answered
    assert 0.45 < total / count < 0.75  # the provider's quality, 0.6


def test_traffic_streams_a_share_of_its_requests_and_grades_them_whole(
    make_lab: MakeLab, flags: Path
) -> None:
    """Streamed answers are read to the end and graded like plain ones; only they have a
    first token in the gateway's histogram."""
    traffic = {"route": "bot", "rate": 100, "users": 50, "stream": 0.5, "feedback": 1}
    lab = make_lab([provider(quality=1)], traffic=traffic)
    with LabStack(lab) as stack:
        assert stack.traffic is not None
        deadline = time.monotonic() + 30
        while stack.traffic.snapshot().scored.get("p", 0) < 100:
            assert time.monotonic() < deadline, "traffic did not get 100 graded answers"
            time.sleep(0.05)
        snapshot = stack.traffic.snapshot()
        text = httpx.get(stack.metrics_url, timeout=5).text
    streamed = sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "llm_time_to_first_token_seconds_count"  # one series per tier
    )
    answered = snapshot.requests("p")
    assert snapshot.correct["p"] == snapshot.by_outcome["200"]  # every answer read whole
    assert 0.3 * answered <= streamed <= 0.7 * answered


def test_lab_serve_says_how_many_requests_were_cut_at_the_stop(
    tmp_path: Path, write_flags: WriteFlags
) -> None:
    """Requests still waiting for an answer when the lab stops are cancelled: the summary says
    so, rather than "stopped after N requests" over counts that add up to fewer."""
    write_flags(["p"])
    doc = tmp_path / "lab.yaml"
    doc.write_text(
        "apiVersion: canaryctl/v1\nkind: Lab\nmetadata: {name: slow}\nspec:\n"
        "  providers: [{name: p, latency: {median: 30s, p95: 40s}}]\n"
        "  gateway:\n    listen: 127.0.0.1:0\n"
        "    flags: {provider: file, path: flags.json}\n"
        "    routes: [{name: bot, flag: model-flag, default_model: p}]\n"
        "    models: [{name: p, base_url: 'lab://p', timeout: 60s}]\n"
        "  traffic: {route: bot, rate: 40, timeout: 60s}\n"
    )
    args = ["lab", "serve", str(doc), "--duration", "1s"]
    stopped = json.loads(CliRunner().invoke(main, [*args, "-o", "json"]).output.splitlines()[1])
    traffic = stopped["traffic"]
    assert traffic["sent"] > 0 and traffic["by_variant"] == {}  # none answered in 1 s
    assert traffic["unanswered"] == traffic["sent"]
    text = CliRunner().invoke(main, [*args, "-o", "text"]).output
    assert re.search(r"stopped after (\d+) requests \(0 shed; \1 still unanswered", text), text
