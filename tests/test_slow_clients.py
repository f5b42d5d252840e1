"""Slow and greedy clients, over raw loopback sockets, against every kind of server canaryctl
starts (the gateway, the chaos proxy, a lab provider, and a bare app built the way the
controller's and the guard's are): a head or body that never finishes is answered 408 and its
connection closed; a head too large is 431, a body too large 413; a client past its share of
requests in flight is 429 while other addresses are served, and past the server's total 503.

Before, 3,000 connections that never finished their body were all still open after 180 s, and
nothing bounded a request's head in time. Each test waits for the server's answer and close
(a socket read that returns at end of stream), never for a length of time: the deadlines here
are short so that the wait is, and the socket's own timeout is only a guard.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from canaryctl.chaos.proxy import create_proxy_app
from canaryctl.gateway import create_app
from canaryctl.lab.provider import SimulatedProvider
from canaryctl.request_limits import ServerLimits
from canaryctl.runbook.gateway import GatewaySpec, LimitsSpec
from canaryctl.runbook.lab import ProviderProfile
from canaryctl.serving import BackgroundServer, limited
from tests.fixed_upstream import FIXED_UPSTREAM, flag_file

pytestmark = pytest.mark.timeout(120)

QUICK = {"header_timeout": 0.3, "body_timeout": 0.3, "max_header_bytes": 8192}
GUARD = 60.0
"""Seconds a socket read may block: far past any deadline here, so only a hang reaches it."""
CHAT = b'{"model": "bot", "messages": [{"role": "user", "content": "hi"}]}'


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with BackgroundServer(FIXED_UPSTREAM) as server:
        yield server.url


def _gateway_spec(upstream: str, directory: Path, **limits: Any) -> GatewaySpec:
    return GatewaySpec.model_validate(
        {
            "flags": {"provider": "file", "path": str(flag_file(directory / "flags.json", ["a"]))},
            "routes": [{"name": "bot", "flag": "f", "default_model": "a"}],
            "models": [{"name": "a", "base_url": upstream}],
            "limits": limits,
        }
    )


def _bare_app() -> Starlette:
    """An app set up as the controller's and the guard's are: its routes, `limited`."""

    async def echo(request: Request) -> JSONResponse:
        return JSONResponse({"bytes": len(await request.body())})

    return limited(Starlette(routes=[Route("/x", echo, methods=["POST"])]), ServerLimits())


@pytest.fixture(params=["gateway", "chaos proxy", "lab provider", "bare app"])
def server(
    request: pytest.FixtureRequest, upstream: str, tmp_path: Path
) -> Iterator[tuple[str, str]]:
    """(url, a POST path) of a server with short deadlines."""
    if request.param == "gateway":
        spec = _gateway_spec(upstream, tmp_path, **QUICK)
        app, path, limits = create_app(spec), "/v1/chat/completions", spec.limits.server()
    else:
        limits = ServerLimits(**QUICK)
        if request.param == "chaos proxy":
            app, path = create_proxy_app(upstream, token="t"), "/v1/chat/completions"
        elif request.param == "lab provider":
            app = SimulatedProvider(ProviderProfile(name="p")).app
            path = "/v1/chat/completions"
        else:
            app, path = _bare_app(), "/x"
    with BackgroundServer(app, limits=limits) as served:
        yield served.url, path


def _connect(url: str, source: str = "127.0.0.1") -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=GUARD, source_address=(source, 0))
    return sock


def _until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    sock.close()
    return answer


def _head(path: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def test_a_body_that_stops_coming_is_408_and_closed(server: tuple[str, str]) -> None:
    url, path = server
    sock = _connect(url)
    sock.sendall(_head(path, 1000) + b'{"model": "b')
    answer = _until_closed(sock)
    assert _status(answer) == 408, answer[:200]
    assert b"the request's body took more than 0.3s" in answer


def test_a_head_that_stops_coming_is_408_and_closed(server: tuple[str, str]) -> None:
    url, path = server
    sock = _connect(url)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Le".encode())
    answer = _until_closed(sock)
    assert _status(answer) == 408, answer[:200]
    assert b"the request's head took more than 0.3s" in answer
    silent = _connect(url)  # a connection that never sends a byte is closed too
    assert _status(_until_closed(silent)) == 408


def test_a_head_past_its_size_is_431_and_closed(server: tuple[str, str]) -> None:
    url, path = server
    sock = _connect(url)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\n".encode() + b"X-Pad: " + b"p" * 20_000)
    answer = _until_closed(sock)
    assert _status(answer) == 431, answer[:200]


def test_a_body_past_its_size_is_413_before_it_is_sent(server: tuple[str, str]) -> None:
    url, path = server
    sock = _connect(url)
    sock.sendall(_head(path, 5 * 1024 * 1024))  # over the 4 MiB default; no byte of it sent
    answer = _until_closed(sock)
    assert _status(answer) == 413, answer[:200]


def test_a_kept_alive_connection_is_served_then_closed_when_idle(server: tuple[str, str]) -> None:
    """The deadlines reset per request: a client that is quick is never cut."""
    url, path = server
    with httpx.Client(base_url=url, timeout=GUARD) as client:
        for _ in range(3):
            assert client.post(path, content=CHAT).status_code < 500


def test_a_client_past_its_share_is_429_and_others_are_served(
    upstream: str, tmp_path: Path
) -> None:
    """Two requests in flight from 127.0.0.1 (bodies stalled); the third from there is a 429;
    127.0.0.2 is still served; past the total of three, 127.0.0.3 gets a 503."""
    limits = {"body_timeout": 60, "max_in_flight_per_client": 2, "max_in_flight": 3}
    spec = _gateway_spec(upstream, tmp_path, **limits)
    with BackgroundServer(create_app(spec), limits=spec.limits.server()) as served:
        stalled = [_connect(served.url) for _ in range(2)]
        for sock in stalled:
            sock.sendall(_head("/v1/chat/completions", 1000) + b"{")
        first = _eventually(served.url, "127.0.0.1", 429)
        assert "2 requests in flight from your address" in first.text
        assert first.headers["retry-after"] == "1"
        other = _post(served.url, "127.0.0.2")
        assert other.status_code == 200
        stalled.append(_connect(served.url, "127.0.0.2"))
        stalled[-1].sendall(_head("/v1/chat/completions", 1000) + b"{")
        busy = _eventually(served.url, "127.0.0.3", 503)
        assert "requests in flight, its most" in busy.text
        for sock in stalled:
            sock.close()
        _eventually(served.url, "127.0.0.1", 200)  # the closed requests no longer count


def _post(url: str, source: str) -> httpx.Response:
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=GUARD) as client:
        return client.post(f"{url}/v1/chat/completions", content=CHAT)


def _eventually(url: str, source: str, status: int) -> httpx.Response:
    """Ask until the answer is `status`: the server counts a stalled request once its head is
    read, which the client cannot see; the test's timeout bounds the wait."""
    while (response := _post(url, source)).status_code != status:
        pass
    return response


def test_the_bodies_held_have_room_for_one_body_at_the_limit() -> None:
    with pytest.raises(ValueError, match="max_buffered_bytes must be at least max_body_bytes"):
        LimitsSpec(max_body_bytes=2 * 1024 * 1024, max_buffered_bytes=1024 * 1024)
    assert LimitsSpec(header_timeout="2s").server().header_timeout == 2.0
