"""A response written in one turn of the event loop leaves in one write (canaryctl/serving.py):
uvicorn writes a head and a body separately, and on loopback each write is a system call. And a
port is taken the moment it is bound, so two servers never share one."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from canaryctl.errors import InvalidInput
from canaryctl.serving import BackgroundServer, CoalescingTransport, bind


class Recording(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:  # type: ignore[override]
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def test_writes_in_one_turn_go_out_as_one_and_close_sends_what_is_held() -> None:
    async def scenario() -> Recording:
        real = Recording()
        transport = CoalescingTransport(real, asyncio.get_running_loop())
        transport.write(b"head ")
        transport.write(b"body")
        assert real.writes == []  # held until the turn ends
        await asyncio.sleep(0)
        assert real.writes == [b"head body"]
        transport.write(b"x" * 70_000)  # past the bound: at once
        assert real.writes[-1] == b"x" * 70_000
        transport.write(b"last")
        transport.close()
        assert real.writes[-1] == b"last" and real.closed
        await asyncio.sleep(0)  # the flush scheduled for "last" finds nothing
        return real

    assert len(asyncio.run(scenario()).writes) == 3


def test_whole_and_streamed_responses_arrive_intact() -> None:
    async def whole(request: Request) -> JSONResponse:
        return JSONResponse({"n": list(range(20_000))})

    async def streamed(request: Request) -> StreamingResponse:
        async def chunks() -> object:
            for i in range(50):
                await asyncio.sleep(0)
                yield f"{i},"

        return StreamingResponse(chunks(), media_type="text/plain")

    app = Starlette(routes=[Route("/whole", whole), Route("/streamed", streamed)])
    with BackgroundServer(app) as server, httpx.Client(base_url=server.url) as client:
        for _ in range(3):  # kept alive between requests
            assert client.get("/whole").json() == {"n": list(range(20_000))}
            assert client.get("/streamed").text == "".join(f"{i}," for i in range(50))


def test_a_port_bound_for_a_server_is_refused_to_a_second_one_at_once() -> None:
    """With SO_REUSEADDR Linux lets two sockets bind one port while neither listens: the lab's
    gateway and another test's server both got it, and the second failed inside uvicorn's
    start with no address named (seen in CI as "a server failed to start")."""
    first = bind("127.0.0.1", 0, "provider a")
    port = first.getsockname()[1]
    try:
        with pytest.raises(InvalidInput, match=f"gateway: cannot listen on 127.0.0.1:{port}"):
            bind("127.0.0.1", port, "gateway").close()
    finally:
        first.close()
