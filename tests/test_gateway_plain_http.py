"""The gateway's calls to plain-HTTP models (canaryctl/http1.py under gateway/upstream.py), over
real loopback HTTP to an upstream that writes exactly the bytes each test gives it: every
framing of an answer arrives whole, connections are kept and reused (a stream's too), an
upstream that closes each one gets a new one, and a model that refuses connections, cuts its
answer short or goes silent is the failure the pipeline already counts (connection_error,
timeout), with its fallback answering. And the client's own bound on connections in use.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from canaryctl.gateway import create_app
from canaryctl.http1 import RawUpstream
from canaryctl.runbook.gateway import GatewaySpec
from canaryctl.serving import BackgroundServer
from tests.canned_upstream import canned_upstream
from tests.fixed_upstream import flag_file

pytestmark = pytest.mark.timeout(120)

KEY = "sk-plain-http-test-key"
CHAT = {"model": "bot", "messages": [{"role": "user", "content": "2 + 3?"}]}
COMPLETION = json.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "5"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
    }
).encode()
JSON = b"content-type: application/json\r\n"


def _chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


FRAMINGS = {
    "content-length": b"HTTP/1.1 200 OK\r\n%bcontent-length: %d\r\n\r\n%b"
    % (JSON, len(COMPLETION), COMPLETION),
    "chunked": b"HTTP/1.1 200 OK\r\n%btransfer-encoding: chunked\r\n\r\n%b"
    % (JSON, _chunked(COMPLETION[:20], COMPLETION[20:])),
    "the connection's end": b"HTTP/1.0 200 OK\r\n%b\r\n%b" % (JSON, COMPLETION),
}


@contextmanager
def gateway(tmp_path: Path, models: list[dict[str, Any]]) -> Iterator[str]:
    """A gateway whose route `bot` serves the first of `models`; yields its URL."""
    spec = GatewaySpec.model_validate(
        {
            "flags": {"provider": "file", "path": str(flag_file(tmp_path / "f.json", ["m"]))},
            "routes": [{"name": "bot", "flag": "f", "default_model": "m"}],
            "models": models,
        }
    )
    with BackgroundServer(create_app(spec), limits=spec.limits.server()) as server:
        yield server.url


def counted(url: str, family: str) -> dict[tuple[tuple[str, str], ...], float]:
    text = httpx.get(f"{url}/metrics").text
    return {
        tuple(sorted(s.labels.items())): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == family
    }


@pytest.mark.parametrize("framing", list(FRAMINGS))
def test_an_answer_arrives_whole_however_it_is_framed(tmp_path: Path, framing: str) -> None:
    close = framing == "the connection's end"
    with (
        canned_upstream(lambda _: FRAMINGS[framing], close=close) as (url, _, _),
        gateway(tmp_path, [{"name": "m", "base_url": url}]) as gw,
    ):
        response = httpx.post(f"{gw}/v1/chat/completions", json=CHAT)
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "5"


def test_requests_share_one_kept_connection_and_say_who_they_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PLAIN_HTTP_KEY", KEY)
    answer = FRAMINGS["content-length"]
    with (
        canned_upstream(lambda _: answer, close=False) as (url, accepted, requests),
        gateway(
            tmp_path,
            [{"name": "m", "base_url": f"{url}/proxy/v1", "api_key_env": "PLAIN_HTTP_KEY"}],
        ) as gw,
    ):
        for _ in range(3):
            assert httpx.post(f"{gw}/v1/chat/completions", json=CHAT).status_code == 200
    assert len(accepted) == 1
    head, _, body = requests[0].partition(b"\r\n\r\n")
    line, *fields = head.decode().split("\r\n")
    headers = {name.lower(): value for name, _, value in (f.partition(": ") for f in fields)}
    assert line == "POST /proxy/v1/chat/completions HTTP/1.1"
    assert headers["host"] == url.removeprefix("http://")
    assert headers["authorization"] == f"Bearer {KEY}"
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(body)
    assert json.loads(body)["messages"] == CHAT["messages"]


def test_an_upstream_that_closes_each_connection_gets_a_new_one_each_time(
    tmp_path: Path,
) -> None:
    def answer(n: int) -> bytes:
        content = COMPLETION.replace(b'"5"', b'"%d"' % n)
        return b"HTTP/1.1 200 OK\r\nconnection: close\r\n%bcontent-length: %d\r\n\r\n%b" % (
            JSON,
            len(content),
            content,
        )

    with (
        canned_upstream(answer, close=True) as (url, accepted, _),
        gateway(tmp_path, [{"name": "m", "base_url": url}]) as gw,
    ):
        said = [
            httpx.post(f"{gw}/v1/chat/completions", json=CHAT).json()["choices"][0]["message"]
            for _ in range(3)
        ]
    assert [s["content"] for s in said] == ["1", "2", "3"]
    assert len(accepted) == 3


def test_a_kept_connection_closed_as_it_is_reused_is_asked_again_on_a_new_one(
    tmp_path: Path,
) -> None:
    answered: list[int] = []

    def answer(n: int) -> bytes | None:
        if n == 1 and answered:  # the first connection's second request: closed unanswered
            return None
        answered.append(n)
        return FRAMINGS["content-length"]

    with (
        canned_upstream(answer, close=False) as (url, accepted, requests),
        gateway(tmp_path, [{"name": "m", "base_url": url}]) as gw,
    ):
        statuses = [httpx.post(f"{gw}/v1/chat/completions", json=CHAT).status_code for _ in "12"]
    assert statuses == [200, 200]
    assert (len(accepted), len(requests), answered) == (2, 3, [1, 2])


def _fallback_after(tmp_path: Path, broken: str, **model: Any) -> tuple[httpx.Response, dict]:
    """A request to model `m` at `broken` with `backup` behind it: the response and the
    fallbacks counted."""
    good = FRAMINGS["content-length"]
    with (
        canned_upstream(lambda _: good, close=False) as (backup, _, _),
        gateway(
            tmp_path,
            [
                {"name": "m", "base_url": broken, "fallback": ["backup"], **model},
                {"name": "backup", "base_url": backup},
            ],
        ) as gw,
    ):
        response = httpx.post(f"{gw}/v1/chat/completions", json=CHAT)
        fallbacks = counted(gw, "llm_fallbacks_total")
    return response, {dict(labels)["reason"]: value for labels, value in fallbacks.items()}


def test_a_model_that_refuses_connections_is_a_connection_error(tmp_path: Path) -> None:
    with canned_upstream(lambda _: b"", close=True) as (url, _, _):
        pass  # its port is free again: nothing listens there
    response, fallbacks = _fallback_after(tmp_path, url)
    assert response.status_code == 200
    assert response.headers["x-canaryctl-model"] == "backup"
    assert fallbacks == {"connection_error": 1.0}


def test_an_answer_cut_short_is_a_connection_error(tmp_path: Path) -> None:
    cut = b"HTTP/1.1 200 OK\r\n%bcontent-length: 500\r\n\r\n{" % JSON
    with canned_upstream(lambda _: cut, close=True) as (url, _, _):
        response, fallbacks = _fallback_after(tmp_path, url)
    assert response.headers["x-canaryctl-model"] == "backup"
    assert fallbacks == {"connection_error": 1.0}


def test_alone_a_cut_answer_is_a_502_saying_so(tmp_path: Path) -> None:
    cut = b"HTTP/1.1 200 OK\r\n%bcontent-length: 500\r\n\r\n{" % JSON
    with (
        canned_upstream(lambda _: cut, close=True) as (url, _, _),
        gateway(tmp_path, [{"name": "m", "base_url": url}]) as gw,
    ):
        response = httpx.post(f"{gw}/v1/chat/completions", json=CHAT)
    assert response.status_code == 502
    assert response.json()["error"]["message"] == "model m failed: its server cut its answer short"


def test_a_silent_model_is_a_timeout_and_alone_a_504(tmp_path: Path) -> None:
    released = threading.Event()

    def never(_: int) -> bytes:
        released.wait(60)  # answers only once the test is done with it
        return b""

    try:
        with (
            canned_upstream(never, close=True) as (url, _, _),
            gateway(tmp_path, [{"name": "m", "base_url": url, "timeout": 0.2}]) as gw,
        ):
            response = httpx.post(f"{gw}/v1/chat/completions", json=CHAT, timeout=30)
            outcomes = counted(gw, "llm_requests_total")
    finally:
        released.set()
    assert response.status_code == 504
    assert response.json()["error"]["type"] == "timeout"
    assert [dict(labels)["outcome"] for labels, v in outcomes.items() if v] == ["error"]


def test_a_streams_connection_is_kept_when_its_end_comes_after_its_last_event(
    tmp_path: Path,
) -> None:
    chunk = {"id": "c", "object": "chat.completion.chunk", "model": "m"}
    events = [
        {**chunk, "choices": [{"index": 0, "delta": {"content": "5"}, "finish_reason": "stop"}]},
        {**chunk, "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 1}},
    ]
    body = b"".join(b"data: %b\n\n" % json.dumps(e).encode() for e in events) + b"data: [DONE]\n\n"
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"
    last = _chunked(body)
    # the events, then (a moment later, in its own write) the chunk that ends the answer
    writes = [head + b"\r\n" + last[: -len(b"0\r\n\r\n")], b"0\r\n\r\n"]
    with (
        canned_upstream(
            lambda _: writes, close=False, between=lambda: threading.Event().wait(0.05)
        ) as (url, accepted, _),
        gateway(tmp_path, [{"name": "m", "base_url": url}]) as gw,
    ):
        for _ in range(2):
            streamed = httpx.post(f"{gw}/v1/chat/completions", json={**CHAT, "stream": True})
            assert streamed.status_code == 200
            assert streamed.text.endswith("data: [DONE]\n\n")
            assert '"content":"5"' in streamed.text
    assert len(accepted) == 1


def test_past_its_bound_a_request_waits_for_a_connection_to_come_back() -> None:
    answer = FRAMINGS["content-length"]
    request = b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n"

    async def two_at_once(url: str) -> list[int]:
        pool = RawUpstream(url, max_connections=1)
        loop = asyncio.get_running_loop()
        first, status = await pool.ask(request)
        second = asyncio.ensure_future(pool.ask(request))
        for _ in range(20):  # room to connect, were it allowed to
            await asyncio.sleep(0)
        waited = not second.done()
        await first.read(loop)
        pool.done(first)
        answer_2, status_2 = await second
        await answer_2.read(loop)
        pool.done(answer_2)
        pool.close()
        assert waited
        return [status, status_2]

    with canned_upstream(lambda _: answer, close=False) as (url, accepted, _):
        assert asyncio.run(two_at_once(url)) == [200, 200]
    assert len(accepted) == 1  # the second request went on the first one's connection
