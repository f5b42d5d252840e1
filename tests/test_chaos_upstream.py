"""The fault proxy's no-fault path to a plain-HTTP upstream (canaryctl/http1.py), over
real loopback HTTP: kept-alive connections, a base URL's path, an upstream that is down, cuts
its answer or its stream short, sends 100 Continue first or closes each connection; and what
still takes aiohttp's path (HEAD, credentials in the upstream's URL)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from canaryctl.chaos import BackgroundServer
from canaryctl.chaos.proxy import create_proxy_app
from tests.canned_upstream import canned_upstream

TOKEN = "test-chaos-token"
CHAT = {"model": "gpt-x", "messages": [{"role": "user", "content": "Hello"}]}


def recording_upstream(seen: list[dict[str, object]]) -> Starlette:
    """Answers every request with 200 and notes its path, client port and headers."""

    async def note(request: Request) -> Response:
        await request.body()
        port = request.client.port if request.client else None
        seen.append({"path": request.url.path, "port": port, "headers": dict(request.headers)})
        return JSONResponse({"ok": True})

    methods = ["GET", "POST", "HEAD"]
    return Starlette(routes=[Route("/{path:path}", note, methods=methods)])


@contextmanager
def proxy_to(upstream: str) -> Iterator[str]:
    with BackgroundServer(create_proxy_app(upstream, token=TOKEN)) as proxy:
        yield proxy.url


def test_requests_one_after_another_share_one_upstream_connection() -> None:
    seen: list[dict[str, object]] = []
    with BackgroundServer(recording_upstream(seen)) as upstream, proxy_to(upstream.url) as proxy:
        for _ in range(3):
            assert httpx.post(f"{proxy}/v1/chat/completions", json=CHAT).status_code == 200
    assert len({s["port"] for s in seen}) == 1


def test_the_upstream_base_urls_path_comes_before_the_requests() -> None:
    seen: list[dict[str, object]] = []
    with (
        BackgroundServer(recording_upstream(seen)) as upstream,
        proxy_to(f"{upstream.url}/openai/") as proxy,
    ):
        assert httpx.post(f"{proxy}/v1/chat/completions", json=CHAT).status_code == 200
    assert seen[0]["path"] == "/openai/v1/chat/completions"
    host = seen[0]["headers"]["host"]  # type: ignore[index]
    assert host == upstream.url.removeprefix("http://")


def test_an_upstream_that_is_down_is_a_502_counted_as_an_upstream_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
    with proxy_to(f"http://127.0.0.1:{port}") as proxy:
        response = httpx.post(f"{proxy}/v1/chat/completions", json=CHAT)
        metrics = httpx.get(f"{proxy}/_chaos/metrics").text
    assert response.status_code == 502
    assert response.json()["error"]["type"] == "upstream_error"
    assert "chaos_proxy_upstream_errors_total 1.0" in metrics


def test_a_whole_answer_cut_short_is_a_502() -> None:
    cut = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{"
    with canned_upstream(lambda _: cut, close=True) as (url, _, _), proxy_to(url) as proxy:
        response = httpx.post(f"{proxy}/v1/chat/completions", json=CHAT)
    assert response.status_code == 502
    assert "cut its answer short" in response.json()["error"]["message"]


def test_a_stream_cut_short_ends_short_for_the_client_too() -> None:
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"
    first = b'data: {"n": 1}\n\n'
    cut = head + b"\r\n" + b"%x\r\n%b\r\n" % (len(first), first)  # no last chunk: cut
    received = b""
    with (
        canned_upstream(lambda _: cut, close=True) as (url, _, _),
        proxy_to(url) as proxy,
        httpx.stream("POST", f"{proxy}/v1/chat/completions", json=CHAT) as response,
    ):
        assert response.status_code == 200
        try:
            for chunk in response.iter_bytes():
                received += chunk
        except httpx.HTTPError:
            pass  # the stream ending early may show as a protocol error; the bytes count
    assert received == first


def test_a_body_without_a_length_ends_with_the_connection() -> None:
    answer = b'HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n{"ok": true}'
    with canned_upstream(lambda _: answer, close=True) as (url, _, _), proxy_to(url) as proxy:
        response = httpx.post(f"{proxy}/v1/chat/completions", json=CHAT)
    assert (response.status_code, response.json()) == (200, {"ok": True})


def test_an_interim_100_continue_is_skipped_for_the_answer_after_it() -> None:
    answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok"
    with canned_upstream(lambda _: answer, close=False) as (url, _, _), proxy_to(url) as proxy:
        response = httpx.post(f"{proxy}/v1/chat/completions", json=CHAT)
    assert (response.status_code, response.content) == (201, b"ok")


def test_an_upstream_that_closes_each_connection_gets_a_new_one_each_time() -> None:
    def answer(n: int) -> bytes:
        return b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\n%d" % n

    with canned_upstream(answer, close=True) as (url, accepted, _), proxy_to(url) as proxy:
        bodies = [httpx.post(f"{proxy}/v1/chat/completions", json=CHAT).text for _ in range(3)]
    assert bodies == ["1", "2", "3"]
    assert len(accepted) == 3


def test_head_and_credentials_in_the_url_still_reach_the_upstream() -> None:
    seen: list[dict[str, object]] = []
    with BackgroundServer(recording_upstream(seen)) as upstream:
        with proxy_to(upstream.url) as proxy:
            assert httpx.head(f"{proxy}/v1/models").status_code == 200
        with_credentials = upstream.url.replace("http://", "http://user:secret@")
        with proxy_to(with_credentials) as proxy:
            assert httpx.get(f"{proxy}/v1/models").status_code == 200
    assert seen[-1]["headers"]["authorization"] == "Basic dXNlcjpzZWNyZXQ="  # type: ignore[index]
