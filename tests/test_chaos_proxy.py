"""The fault proxy over real loopback HTTP: a lab provider behind it, real httpx clients in front,
and for each fault what a client actually sees, streaming and not. Plus the fault table's pure
matching/expiry with a fake clock, the admin API's auth, and the CLI."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from canaryctl.chaos import BackgroundServer, ChaosClient, FaultTable, RequestFacts
from canaryctl.chaos.faults import draw_delay
from canaryctl.chaos.proxy import create_proxy_app
from canaryctl.cli import main
from canaryctl.clock import FakeClock
from canaryctl.errors import ChaosBackendError, InvalidInput
from canaryctl.lab.provider import SimulatedProvider
from canaryctl.retry import RetryPolicy
from canaryctl.runbook.lab import ProviderProfile
from canaryctl.runbook.scenario import FaultSpec

TOKEN = "test-chaos-token"
CHAT = {"model": "gpt-x", "messages": [{"role": "user", "content": "Hello there"}]}
STREAM = {**CHAT, "stream": True}


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    profile = ProviderProfile.model_validate(
        {"name": "primary", "latency": {"median": 0.02, "p95": 0.05}}
    )
    with BackgroundServer(SimulatedProvider(profile).app) as server:
        yield server.url


@pytest.fixture(scope="module")
def proxy(upstream: str) -> Iterator[str]:
    app = create_proxy_app(upstream, token=TOKEN, rng=random.Random(7))
    with BackgroundServer(app) as server:
        yield server.url


@pytest.fixture
def admin(proxy: str) -> Iterator[ChaosClient]:
    client = ChaosClient(proxy, TOKEN)
    client.clear()
    yield client
    client.clear()
    client.close()


def inject(admin: ChaosClient, **spec: Any) -> dict[str, Any]:
    return admin.add(FaultSpec.model_validate(spec))


def post(proxy: str, body: dict[str, Any] = CHAT, **kwargs: Any) -> httpx.Response:
    kwargs.setdefault("timeout", 10)
    return httpx.post(f"{proxy}/v1/chat/completions", json=body, **kwargs)


def stream_events(
    proxy: str, body: dict[str, Any] = STREAM, timeout: float = 10
) -> tuple[list[str], BaseException | None]:
    """The SSE data payloads a client read, and the error that ended the stream (if any)."""
    events: list[str] = []
    try:
        with httpx.stream(
            "POST", f"{proxy}/v1/chat/completions", json=body, timeout=timeout
        ) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("data:"):
                    events.append(line[5:].strip())
    except httpx.HTTPError as exc:
        return events, exc
    return events, None


def content_of(events: list[str]) -> tuple[str, str | None]:
    text, finish = "", None
    for data in events:
        if data == "[DONE]":
            continue
        for choice in json.loads(data)["choices"]:
            text += choice["delta"].get("content") or ""
            finish = choice.get("finish_reason") or finish
    return text, finish


# -- pass-through --


def test_without_faults_answers_pass_through(proxy: str, admin: ChaosClient) -> None:
    response = post(proxy)
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"]
    events, error = stream_events(proxy)
    assert error is None
    assert events[-1] == "[DONE]"
    text, finish = content_of(events)
    assert text and finish == "stop"


def test_a_stream_is_relayed_chunk_by_chunk_as_the_upstream_sends_it() -> None:
    """The first chunk reaches the client while the upstream still holds the last one back:
    the proxy neither reads a stream whole before answering nor keeps chunks for a later write."""
    client_has_first = threading.Event()
    sent: list[str] = []

    async def events() -> AsyncIterator[bytes]:
        sent.append("first")
        yield b'data: {"n": 1}\n\n'
        await asyncio.to_thread(client_has_first.wait, 10)  # a buffering proxy waits it out
        sent.append("last")
        yield b"data: [DONE]\n\n"

    async def chat(request: Request) -> StreamingResponse:
        await request.body()
        return StreamingResponse(events(), media_type="text/event-stream")

    held_back = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
    with (
        BackgroundServer(held_back) as upstream,
        BackgroundServer(create_proxy_app(upstream.url, token=TOKEN)) as proxy,
        httpx.stream("POST", f"{proxy.url}/v1/chat/completions", json=STREAM, timeout=20) as r,
    ):
        lines = (line for line in r.iter_lines() if line)
        first = next(lines)
        sent_when_it_arrived = list(sent)
        client_has_first.set()
        rest = list(lines)
    assert first == 'data: {"n": 1}'
    assert sent_when_it_arrived == ["first"]
    assert rest == ["data: [DONE]"]


class _NeverAsked(FaultTable):
    """A table that fails the request if the proxy matches anything against it."""

    def pick(self, facts: RequestFacts, rng: random.Random) -> None:
        raise AssertionError(f"matched {facts.path} with no fault in force")


def test_with_no_fault_in_force_nothing_is_matched_and_all_is_relayed_as_sent() -> None:
    """The idle path: no matching, and the upstream sees the client's method, encoded path,
    query, headers and body byte for byte (no header of the proxy's own but `accept-encoding`)."""
    seen: list[tuple[str, str, str, dict[str, str], bytes]] = []

    async def echo(request: Request) -> Response:
        headers = dict(request.headers)
        seen.append(
            (request.method, request.url.path, request.url.query, headers, await request.body())
        )
        return Response(b"not json \x00\xff", 207, headers={"x-upstream": "yes"})

    app = Starlette(routes=[Route("/{path:path}", echo, methods=["PUT"])])
    body = b"\x00 not JSON at all \xff"
    with (
        BackgroundServer(app) as upstream,
        BackgroundServer(create_proxy_app(upstream.url, token=TOKEN, table=_NeverAsked())) as proxy,
    ):
        response = httpx.put(
            f"{proxy.url}/v1/a%20b/c?x=1&y=%2F",
            content=body,
            headers={"X-Tier": "free", "Authorization": "Bearer sk-upstream"},
        )
    assert (response.status_code, response.content) == (207, b"not json \x00\xff")
    assert response.headers["x-upstream"] == "yes"
    [(method, path, query, headers, received)] = seen
    assert (method, path, query, received) == ("PUT", "/v1/a b/c", "x=1&y=%2F", body)
    assert headers["x-tier"] == "free" and headers["authorization"] == "Bearer sk-upstream"
    assert headers["accept-encoding"] == "identity"
    assert "python-httpx" in headers["user-agent"]  # the client's, not one of the proxy's


# -- errors --


def test_error_in_openai_shape(proxy: str, admin: ChaosClient) -> None:
    inject(admin, fault="error", status=503)
    response = post(proxy)
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["type"] == "server_error" and error["message"]


def test_error_529_in_anthropic_shape_on_messages(proxy: str, admin: ChaosClient) -> None:
    inject(admin, fault="error", status=529)
    response = httpx.post(
        f"{proxy}/v1/messages", json={"model": "claude", "max_tokens": 10, "messages": []}
    )
    assert response.status_code == 529
    assert response.json() == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }


def test_rate_limit_carries_retry_after(proxy: str, admin: ChaosClient) -> None:
    inject(admin, fault="rate_limit", retry_after="1500ms")
    response = post(proxy)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "2"
    assert response.headers["retry-after-ms"] == "1500"
    assert response.json()["error"]["code"] == "rate_limit_exceeded"


# -- time --


def test_latency_delays_the_answer(proxy: str, admin: ChaosClient) -> None:
    inject(admin, fault="latency", delay="400ms")
    started = time.perf_counter()
    response = post(proxy)
    assert response.status_code == 200
    assert time.perf_counter() - started >= 0.4


def test_slow_first_token_delays_the_first_chunk_after_headers(
    proxy: str, admin: ChaosClient
) -> None:
    inject(admin, fault="slow_first_token", delay="500ms")
    with httpx.stream("POST", f"{proxy}/v1/chat/completions", json=STREAM, timeout=10) as r:
        headers_at = time.perf_counter()
        first = next(line for line in r.iter_lines() if line.startswith("data:"))
        waited = time.perf_counter() - headers_at
    assert r.status_code == 200 and json.loads(first[5:])["choices"]
    assert waited >= 0.45


def test_timeout_holds_until_the_client_gives_up(proxy: str, admin: ChaosClient) -> None:
    inject(admin, fault="timeout")
    with pytest.raises(httpx.ReadTimeout):
        post(proxy, timeout=httpx.Timeout(0.5))
    assert [f["fault"] for f in admin.faults()] == ["timeout"]


def test_timeout_ends_with_the_fault(proxy: str, admin: ChaosClient) -> None:
    inject(admin, fault="timeout", ttl="1s")
    response = post(proxy)  # held until the fault's TTL, then a 504
    assert response.status_code == 504


# -- connections --


def test_reset_drops_the_connection(proxy: str, admin: ChaosClient) -> None:
    inject(admin, fault="reset")
    with pytest.raises(httpx.ReadError, match="Connection reset by peer"):
        post(proxy)


def test_stream_cut_ends_the_stream_after_n_chunks(proxy: str, admin: ChaosClient) -> None:
    inject(admin, fault="stream_cut", after_chunks=2)
    events, error = stream_events(proxy)
    assert len(events) == 2 and "[DONE]" not in events
    assert isinstance(error, httpx.RemoteProtocolError | httpx.ReadError)


def test_stream_stall_stops_sending_mid_stream(proxy: str, admin: ChaosClient) -> None:
    inject(admin, fault="stream_stall", after_chunks=1)
    # The stall lasts until the client hangs up, so only the wait for the headers and the first
    # chunk bounds this read timeout: 0.8 s was short of them on a loaded machine.
    events, error = stream_events(proxy, timeout=3)
    assert len(events) == 1
    assert isinstance(error, httpx.ReadTimeout)


# -- content --


def test_malformed_body_is_not_json(proxy: str, admin: ChaosClient) -> None:
    inject(admin, fault="malformed")
    response = post(proxy)
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.text)


def test_malformed_stream_has_a_broken_chunk(proxy: str, admin: ChaosClient) -> None:
    inject(admin, fault="malformed", after_chunks=1)
    events, error = stream_events(proxy)
    assert error is None
    json.loads(events[0])
    with pytest.raises(json.JSONDecodeError):
        json.loads(events[1])


@pytest.mark.parametrize(
    ("kind", "finish"), [("empty_completion", "stop"), ("content_filter", "content_filter")]
)
def test_empty_and_filtered_completions(
    proxy: str, admin: ChaosClient, kind: str, finish: str
) -> None:
    inject(admin, fault=kind)
    choice = post(proxy).json()["choices"][0]
    assert choice["message"]["content"] == "" and choice["finish_reason"] == finish
    events, error = stream_events(proxy)
    assert error is None and events[-1] == "[DONE]"
    assert content_of(events) == ("", finish)


@pytest.mark.parametrize(
    ("kind", "stop_reason"), [("empty_completion", "end_turn"), ("content_filter", "refusal")]
)
def test_empty_and_refused_answers_in_anthropics_shape(
    proxy: str, admin: ChaosClient, kind: str, stop_reason: str
) -> None:
    """On Anthropic's /v1/messages a filtered answer is `stop_reason: refusal`, streamed as
    message_start, message_delta carrying the reason, message_stop."""
    inject(admin, fault=kind)
    body = {"model": "claude", "max_tokens": 10, "messages": [{"role": "user", "content": "Hi"}]}
    message = httpx.post(f"{proxy}/v1/messages", json=body, timeout=10).json()
    assert message["type"] == "message" and message["content"] == []
    assert message["stop_reason"] == stop_reason and message["model"] == "claude"
    with httpx.stream(
        "POST", f"{proxy}/v1/messages", json={**body, "stream": True}, timeout=10
    ) as response:
        lines = [line for line in response.iter_lines() if line]
    names = [line.removeprefix("event: ") for line in lines if line.startswith("event: ")]
    assert names == ["message_start", "message_delta", "message_stop"]
    datas = [json.loads(line.removeprefix("data: ")) for line in lines if line.startswith("data: ")]
    assert [d["type"] for d in datas] == names
    assert datas[1]["delta"]["stop_reason"] == stop_reason


# -- which requests --


def test_rate_hits_about_that_share(proxy: str, admin: ChaosClient) -> None:
    inject(admin, fault="error", status=500, rate=0.5)
    statuses = [post(proxy).status_code for _ in range(120)]
    failed = statuses.count(500)
    assert 30 < failed < 90
    assert failed + statuses.count(200) == 120


def test_match_by_model_and_header(proxy: str, admin: ChaosClient) -> None:
    inject(
        admin, fault="error", status=502, match={"model": "gpt-*", "headers": {"X-Tier": "free"}}
    )
    assert post(proxy, headers={"X-Tier": "free"}).status_code == 502
    assert post(proxy, headers={"X-Tier": "paid"}).status_code == 200
    assert post(proxy, {**CHAT, "model": "claude"}, headers={"X-Tier": "free"}).status_code == 200


def test_stream_faults_leave_plain_requests_alone(proxy: str, admin: ChaosClient) -> None:
    inject(admin, fault="stream_cut", after_chunks=0)
    assert post(proxy).status_code == 200


def test_a_fault_ends_by_its_ttl(proxy: str, admin: ChaosClient) -> None:
    fault = inject(admin, fault="error", status=503, ttl="1s")
    assert [f["id"] for f in admin.faults()] == [fault["id"]]
    assert post(proxy).status_code == 503
    deadline = time.monotonic() + 10
    while admin.faults() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert admin.faults() == []
    assert post(proxy).status_code == 200


def test_remove_and_clear(proxy: str, admin: ChaosClient) -> None:
    first = inject(admin, fault="error")
    inject(admin, fault="reset")
    assert admin.remove(first["id"]) is True
    assert admin.remove(first["id"]) is False
    assert [f["fault"] for f in admin.faults()] == ["reset"]
    assert admin.clear() == 1
    assert admin.faults() == []


def test_counters_by_fault_type(proxy: str, admin: ChaosClient) -> None:
    def injected() -> float:
        text = httpx.get(f"{proxy}/_chaos/metrics").text
        for line in text.splitlines():
            if line.startswith('chaos_proxy_faults_injected_total{fault="error"}'):
                return float(line.split()[-1])
        return 0.0

    before = injected()
    inject(admin, fault="error")
    for _ in range(3):
        post(proxy)
    assert injected() == before + 3
    assert "chaos_proxy_requests_total" in httpx.get(f"{proxy}/_chaos/metrics").text


# -- admin API --


def test_admin_needs_the_token(proxy: str) -> None:
    assert httpx.get(f"{proxy}/_chaos/faults").status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert (
        httpx.post(f"{proxy}/_chaos/faults", json={"fault": "reset"}, headers=wrong).status_code
        == 401
    )
    assert httpx.delete(f"{proxy}/_chaos/faults", headers=wrong).status_code == 401


def test_admin_answers_loopback_only_by_default() -> None:
    app = create_proxy_app("http://127.0.0.1:9", token=TOKEN)
    headers = {"Authorization": f"Bearer {TOKEN}"}

    async def ask(app: Any) -> int:
        transport = httpx.ASGITransport(app, client=("10.1.2.3", 5555))
        async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as client:
            return (await client.get("/_chaos/faults", headers=headers)).status_code

    assert asyncio.run(ask(app)) == 403
    anywhere = create_proxy_app("http://127.0.0.1:9", token=TOKEN, admin_from_anywhere=True)
    assert asyncio.run(ask(anywhere)) == 200


def test_a_bad_fault_is_refused_with_its_field(admin: ChaosClient, proxy: str) -> None:
    response = httpx.post(
        f"{proxy}/_chaos/faults",
        json={"fault": "latency", "status": 503},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert response.status_code == 422
    assert "status: does not apply to a latency fault" in response.json()["error"]


# -- CLI --


def test_cli_inject_list_clear(
    proxy: str, admin: ChaosClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CANARYCTL_CHAOS_TOKEN", TOKEN)
    runner = CliRunner()
    args = ["--proxy", proxy, "-o", "json"]
    result = runner.invoke(
        main,
        [
            "chaos",
            "inject",
            *args,
            "--fault",
            "error",
            "--status",
            "503",
            "--rate",
            "0.5",
            "--ttl",
            "5m",
        ],
    )
    assert result.exit_code == 0, result.output
    injected = json.loads(result.output)
    assert injected["fault"] == "error" and injected["status"] == 503 and injected["rate"] == 0.5
    assert 290 < injected["expires_in"] <= 300
    listed = runner.invoke(main, ["chaos", "list", *args])
    assert [json.loads(line)["id"] for line in listed.output.splitlines()] == [injected["id"]]
    text = runner.invoke(main, ["chaos", "list", "--proxy", proxy, "-o", "text"])
    assert "error (status=503) on 50% of requests" in text.output
    cleared = runner.invoke(main, ["chaos", "clear", *args])
    assert json.loads(cleared.output) == {"event": "cleared", "removed": 1}
    assert admin.faults() == []


def test_cli_bad_input_exits_2(proxy: str, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    monkeypatch.delenv("CANARYCTL_CHAOS_TOKEN", raising=False)
    missing = runner.invoke(main, ["chaos", "list", "--proxy", proxy])
    assert missing.exit_code == 2 and "CANARYCTL_CHAOS_TOKEN" in missing.output
    monkeypatch.setenv("CANARYCTL_CHAOS_TOKEN", TOKEN)
    bad = runner.invoke(
        main, ["chaos", "inject", "--proxy", proxy, "--fault", "latency", "--status", "503"]
    )
    assert bad.exit_code == 2
    assert "--status: does not apply to a latency fault" in bad.output
    monkeypatch.setenv("CANARYCTL_CHAOS_TOKEN", "wrong")
    refused = runner.invoke(main, ["chaos", "list", "--proxy", proxy])
    assert refused.exit_code == 2 and "wrong bearer token" in refused.output
    assert TOKEN not in refused.output


def test_cli_unreachable_proxy_exits_3(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANARYCTL_CHAOS_TOKEN", TOKEN)
    with pytest.raises(ChaosBackendError):
        ChaosClient("http://127.0.0.1:9", TOKEN, retry=RetryPolicy(attempts=1)).faults()
    result = CliRunner().invoke(main, ["chaos", "list", "--proxy", "http://127.0.0.1:9"])
    assert result.exit_code == 3 and "did not answer" in result.output


# -- the pure table --


def spec(**fields: Any) -> FaultSpec:
    return FaultSpec.model_validate(fields)


def test_table_expires_faults_by_its_own_clock() -> None:
    clock = FakeClock(start=100.0)
    table = FaultTable(clock.now)
    table.add(spec(fault="error", ttl="10s"))
    clock.sleep(9.9)
    assert len(table.active()) == 1
    clock.sleep(0.1)
    assert table.active() == []


def test_table_picks_the_first_fault_whose_roll_hits() -> None:
    table = FaultTable(FakeClock().now)
    never = table.add(spec(fault="error", rate=0.0))
    always = table.add(spec(fault="reset"))
    facts = RequestFacts("/v1/chat/completions", "m", stream=False, headers={})
    rng = random.Random(1)
    assert all(table.pick(facts, rng) == always for _ in range(50))
    table.remove(always.id)
    assert table.pick(facts, rng) is None
    assert never in table.active()


def test_table_matches_path_globs_and_stream_only_kinds() -> None:
    table = FaultTable(FakeClock().now)
    table.add(spec(fault="stream_stall", match={"path": "/v1/chat/*"}))
    rng = random.Random(0)
    assert table.pick(RequestFacts("/v1/chat/completions", stream=True), rng) is not None
    assert table.pick(RequestFacts("/v1/chat/completions", stream=False), rng) is None
    assert table.pick(RequestFacts("/api/chat", stream=True), rng) is None


def test_distributed_latency_has_the_asked_median_and_p95() -> None:
    rng = random.Random(3)
    fault = spec(fault="latency", delay="1s", delay_p95="3s")
    draws = sorted(draw_delay(fault, rng) for _ in range(4000))
    assert 0.9 < draws[2000] < 1.1
    assert 2.6 < draws[3800] < 3.4
    assert draw_delay(spec(fault="latency", delay="250ms"), rng) == 0.25


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"fault": "latency", "status": 503}, "status: does not apply to a latency fault"),
        ({"fault": "error", "status": 404}, "status: must be 500, 502, 503 or 529"),
        ({"fault": "latency", "delay": "2s", "delay_p95": "1s"}, "delay_p95: must be at least"),
        ({"fault": "error", "ttl": "2d"}, "ttl"),
        ({"fault": "error", "rate": 1.5}, "rate"),
    ],
)
def test_fault_spec_rejects_what_does_not_fit(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FaultSpec.model_validate(fields)


def test_client_turns_a_refusal_into_invalid_input(proxy: str) -> None:
    with pytest.raises(InvalidInput, match="wrong bearer token"):
        ChaosClient(proxy, "nope").faults()


def test_cli_remove_of_an_unknown_fault_exits_2_naming_it(
    proxy: str, admin: ChaosClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Like `rollout status 99` ("no run 99 in ..."): an id the proxy does not hold is bad
    input, exit 2 naming the id and the proxy, not a success; a known one is removed, exit 0."""
    monkeypatch.setenv("CANARYCTL_CHAOS_TOKEN", TOKEN)
    runner = CliRunner()
    injected = runner.invoke(
        main, ["chaos", "inject", "--proxy", proxy, "-o", "json", "--fault", "error",
               "--status", "503", "--ttl", "5m"],
    )  # fmt: skip
    fault_id = json.loads(injected.output)["id"]
    removed = runner.invoke(main, ["chaos", "remove", "--proxy", proxy, fault_id])
    assert removed.exit_code == 0, removed.output
    assert admin.faults() == []
    for output in ("text", "json"):
        again = runner.invoke(main, ["chaos", "remove", "--proxy", proxy, "-o", output, fault_id])
        assert again.exit_code == 2, again.output
        assert f"no fault {fault_id} on {proxy}" in again.output
        assert "Traceback" not in again.output
