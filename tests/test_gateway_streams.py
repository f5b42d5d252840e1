"""A streamed answer over real loopback HTTP, as the gateway relays it (app.py's `_stream`, not
Starlette's StreamingResponse): each chunk reaches the client while the model is still
answering; a client that hangs up mid-stream has its model's stream closed (no tokens read, and
paid for, for no one) and the request still metered; and the server goes on serving.

The model here is a small app whose stream waits, between its two chunks, for the test to say
go; each test waits on events and counts, never on a length of time.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from canaryctl.gateway import create_app
from canaryctl.runbook.gateway import GatewaySpec
from canaryctl.serving import BackgroundServer
from tests.fixed_upstream import flag_file

pytestmark = pytest.mark.timeout(120)

GUARD = 60.0
"""Seconds a wait may last: far past anything here, so only a hang reaches it."""


def _chunk(content: str | None, finish: str | None = None) -> bytes:
    delta = {} if content is None else {"content": content}
    chunk = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": "a",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(chunk)}\n\n".encode()


@dataclass
class HeldModel:
    """A model whose stream sends "2 + 3", then waits for `go`, then " = 5" and ends; `closed`
    is set when its stream ends either way, `finished` only when it sent everything."""

    go: threading.Event = field(default_factory=threading.Event)
    closed: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)

    def app(self) -> Starlette:
        async def chat(request: Request) -> StreamingResponse:
            await request.body()

            async def events() -> AsyncIterator[bytes]:
                try:
                    yield _chunk("2 + 3")
                    while not self.go.is_set():
                        await asyncio.sleep(0.01)
                    yield _chunk(" = 5", "stop")
                    yield b"data: [DONE]\n\n"
                    self.finished.set()
                finally:
                    self.closed.set()

            return StreamingResponse(events(), media_type="text/event-stream")

        return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


@pytest.fixture
def held(tmp_path: Path) -> Iterator[tuple[HeldModel, str]]:
    """(the model, the gateway's URL in front of it)."""
    model = HeldModel()
    with BackgroundServer(model.app()) as upstream:
        spec = GatewaySpec.model_validate(
            {
                "flags": {"provider": "file", "path": str(flag_file(tmp_path / "f.json", ["a"]))},
                "routes": [{"name": "bot", "flag": "f", "default_model": "a"}],
                # a read timeout past the tests' guard: only the client's leaving ends a stream
                "models": [{"name": "a", "base_url": upstream.url, "timeout": 3 * GUARD}],
            }
        )
        with BackgroundServer(create_app(spec), limits=spec.limits.server()) as gateway:
            yield model, gateway.url


def _open_stream(url: str) -> socket.socket:
    """A raw connection that has sent a streamed chat request."""
    body = json.dumps(
        {"model": "bot", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    ).encode()
    port = int(url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=GUARD)
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    return sock


def _read_until(sock: socket.socket, marker: bytes) -> bytes:
    seen = b""
    while marker not in seen:
        data = sock.recv(65536)
        if not data:
            raise AssertionError(f"closed before {marker!r}: {seen!r}")
        seen += data
    return seen


def _requests_counted(url: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "llm_requests_total"
    )


def _eventually_counted(url: str, count: float) -> None:
    """Wait until llm_requests_total sums to `count` (the after-served stages ran)."""
    done = threading.Event()
    for _ in range(int(GUARD / 0.05)):
        if _requests_counted(url) == count:
            return
        done.wait(0.05)
    raise AssertionError(f"llm_requests_total never reached {count}")


def test_each_chunk_reaches_the_client_while_the_model_still_answers(
    held: tuple[HeldModel, str],
) -> None:
    model, url = held
    with _open_stream(url) as sock:
        first = _read_until(sock, b"2 + 3")
        assert b"200 OK" in first and b"transfer-encoding: chunked" in first.lower()
        assert not model.closed.is_set()  # the model is still answering
        model.go.set()
        rest = _read_until(sock, b"\r\n0\r\n\r\n")  # the chunked body's end
    assert b" = 5" in rest and b"data: [DONE]" in rest
    assert model.finished.wait(GUARD)
    _eventually_counted(url, 1)


def test_a_client_that_hangs_up_mid_stream_closes_the_models_stream(
    held: tuple[HeldModel, str],
) -> None:
    model, url = held
    with _open_stream(url) as sock:
        _read_until(sock, b"2 + 3")
    # the client is gone; the model is still waiting to send its second chunk
    assert model.closed.wait(GUARD)  # the gateway closed the model's stream
    assert not model.finished.is_set()
    _eventually_counted(url, 1)  # and the request was still metered
    model.go.set()
    # the server goes on serving: the next stream is whole
    model.closed.clear()
    with _open_stream(url) as sock:
        answer = _read_until(sock, b"\r\n0\r\n\r\n")
    assert b"2 + 3" in answer and b" = 5" in answer
    _eventually_counted(url, 2)
