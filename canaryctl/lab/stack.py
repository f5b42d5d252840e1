"""Run a whole lab in the background: simulated providers, the gateway, and traffic.

Every server listens on 127.0.0.1 and all of them share one asyncio loop in one background
thread, so a test or the demo drives the lab from ordinary synchronous code and `stop()` leaves
no thread, task or socket behind.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path
from types import TracebackType

import uvicorn
from starlette.types import ASGIApp

from canaryctl.errors import CanaryError
from canaryctl.gateway import create_app
from canaryctl.gateway.routing import check_flag_source
from canaryctl.lab.provider import SimulatedProvider
from canaryctl.lab.traffic import TrafficGenerator, TrafficStats
from canaryctl.request_limits import ServerLimits
from canaryctl.runbook.gateway import FileFlagSource, GatewaySpec, LaunchDarklyFlagSource
from canaryctl.runbook.lab import Lab, LabSpec
from canaryctl.serving import bind, server_for

__all__ = ["HOST", "LabStack"]

HOST = "127.0.0.1"
_GRACE = 3.0
"""Seconds a server waits for in-flight requests at shutdown before cancelling them."""


def _url(sock: socket.socket) -> str:
    return f"http://{HOST}:{sock.getsockname()[1]}"


class LabStack:
    """A running lab. Use as a context manager, or call `start()` and `stop()`::

        with LabStack(lab, flags_path=tmp / "flags.json") as stack:
            httpx.post(stack.gateway_url + "/v1/chat/completions", json=...)
            stack.set_traffic_rate(80)
            stack.traffic.snapshot().by_variant   # {"gpt-4o-mini": {"200": 412, ...}, ...}
            httpx.get(stack.metrics_url)          # the gateway's Prometheus exposition

    `flags_path` replaces the gateway's flag file (the demo points it at a copy it may rewrite).
    Port 0 in the document (a provider's `port`, the gateway's `listen`) picks a free port; the
    gateway's host is always 127.0.0.1. `traffic=False`, or a lab without `traffic`, sends none.
    `hold` bounds how long a simulated "timeout" keeps a request open.
    """

    def __init__(
        self,
        lab: Lab | LabSpec,
        *,
        flags_path: Path | None = None,
        traffic: bool = True,
        hold: float = 120.0,
        start_timeout: float = 15.0,
    ) -> None:
        self.spec = lab.spec if isinstance(lab, Lab) else lab
        self._flags_path = flags_path
        self._with_traffic = traffic and self.spec.traffic is not None
        self._hold = hold
        self._start_timeout = start_timeout
        self.providers: dict[str, SimulatedProvider] = {}
        self.provider_urls: dict[str, str] = {}
        self.gateway_url = ""
        self._generator: TrafficGenerator | None = None
        self._traffic_task: asyncio.Task[None] | None = None
        self._servers: list[tuple[uvicorn.Server, socket.socket]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None

    @property
    def metrics_url(self) -> str:
        return f"{self.gateway_url}/metrics"

    @property
    def traffic(self) -> TrafficStats | None:
        """Live counts from the traffic generator; None when the lab sends no traffic."""
        return self._generator.stats if self._generator else None

    def gateway_spec(self) -> GatewaySpec:
        """The gateway as served: lab:// URLs resolved, the flag file override applied."""
        models = [  # lab providers need no key
            m.model_copy(update={"base_url": self.provider_urls[m.base_url[6:]], "keyless": True})
            if m.base_url.startswith("lab://")
            else m
            for m in self.spec.gateway.models
        ]
        flags = self.spec.gateway.flags
        if self._flags_path is not None and isinstance(flags, FileFlagSource):
            flags = flags.model_copy(update={"path": Path(self._flags_path)})
        return self.spec.gateway.model_copy(update={"models": models, "flags": flags})

    def start(self) -> LabStack:
        """Bind every port, start serving, return once all servers (and traffic) are up."""
        if self._thread is not None:
            raise RuntimeError("a LabStack starts once")
        if isinstance(self.spec.gateway.flags, LaunchDarklyFlagSource):
            check_flag_source(self.spec.gateway.flags, "spec.gateway.flags")
        try:
            for profile in self.spec.providers:
                sock = bind(HOST, profile.port, f"provider {profile.name}")
                provider = SimulatedProvider(profile, seed=self.spec.seed, hold=self._hold)
                self._add_server(provider.app, sock, lifespan="off")
                self.providers[profile.name] = provider
                self.provider_urls[profile.name] = _url(sock)
            port = int(self.spec.gateway.listen.rsplit(":", 1)[1])
            sock = bind(HOST, port, "gateway")
            self.gateway_url = _url(sock)
            spec = self.gateway_spec()
            self._add_server(create_app(spec), sock, lifespan="on", limits=spec.limits.server())
        except BaseException:
            self._close_sockets()
            raise
        if self._with_traffic and self.spec.traffic is not None:
            self._generator = TrafficGenerator(
                self.gateway_url, self.spec.traffic, seed=self.spec.seed
            )
        self._thread = threading.Thread(target=self._run, name="canaryctl-lab", daemon=True)
        self._thread.start()
        if not self._ready.wait(self._start_timeout) or self._failure is not None:
            failure = self._failure
            self.stop()
            raise CanaryError(f"the lab did not start: {failure or 'timed out'}") from failure
        return self

    def stop(self) -> None:
        """Stop traffic, end held requests, shut every server down, join the thread. Idempotent."""
        thread, loop = self._thread, self._loop
        if thread is None:
            return
        if loop is not None and thread.is_alive():
            loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._shutdown()))
        thread.join(_GRACE + 10)
        if thread.is_alive():
            for server, _ in self._servers:
                server.force_exit = True
            thread.join(5)
        self._close_sockets()

    def set_traffic_rate(self, rate: float) -> None:
        """Change the arrival rate (requests per second) of running traffic."""
        if self._generator is None or self._loop is None:
            raise RuntimeError("this lab runs no traffic")
        if rate <= 0:
            raise ValueError("the traffic rate must be positive")
        self._loop.call_soon_threadsafe(self._generator.set_rate, rate)

    def __enter__(self) -> LabStack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _add_server(
        self,
        app: ASGIApp,
        sock: socket.socket,
        *,
        lifespan: str,
        limits: ServerLimits | None = None,
    ) -> None:
        server = server_for(app, limits, lifespan=lifespan, grace=_GRACE)
        self._servers.append((server, sock))

    def _close_sockets(self) -> None:
        for _, sock in self._servers:
            sock.close()

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to start(); the thread must not die silently
            self._failure = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        tasks = [asyncio.create_task(s.serve(sockets=[sock])) for s, sock in self._servers]
        try:
            while not all(server.started for server, _ in self._servers):
                if failed := [task for task in tasks if task.done()]:
                    why = failed[0].exception()
                    reason = f": {type(why).__name__}: {why}" if why else " (see the log above)"
                    raise CanaryError(f"a server failed to start{reason}")
                await asyncio.sleep(0.01)
            if self._generator is not None:
                self._traffic_task = asyncio.create_task(self._generator.run())
            self._ready.set()
            await asyncio.gather(*tasks)
        finally:
            for server, _ in self._servers:
                server.should_exit = True
            if self._generator is not None:
                self._generator.stop()
            traffic = [self._traffic_task] if self._traffic_task else []
            await asyncio.gather(*tasks, *traffic, return_exceptions=True)

    async def _shutdown(self) -> None:
        """Traffic first, so it sees no refused connections; then held requests; then servers."""
        if self._generator is not None and self._traffic_task is not None:
            self._generator.stop()
            await asyncio.gather(self._traffic_task, return_exceptions=True)
        for provider in self.providers.values():
            provider.release()
        for server, _ in self._servers:
            server.should_exit = True
