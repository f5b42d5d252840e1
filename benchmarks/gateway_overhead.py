"""What the gateway adds to a request, measured against going straight to the upstream and
against LiteLLM's proxy in front of the same upstream.

Three processes on loopback: a lab provider that answers at once (zero latency), the server
under test (none, the canaryctl gateway, or LiteLLM's proxy), and this script's load generator,
a small raw HTTP/1.1 client over keep-alive connections (so the client's own cost stays small
and identical for every target). For each target and each of plain and streamed requests:

- max throughput (closed loop, `--concurrency` requests in flight for `--seconds`);
- fixed rate (open loop, `--rate` then `--low-rate` req/s for `--seconds` each): p50 and p99
  of the full response time; a proxy's *added* latency is its percentile minus the direct one.
  A rate above 80% of the target's max throughput is reported as "overloaded" instead of run
  (LiteLLM cannot keep up with 200 req/s on 2 cores, hence the gentler second rate).

Each measurement is repeated `--rounds` times and the median round kept: the machine this
runs on is usually shared, and one stalled round should not make the figure.

LiteLLM (the exact version benchmarks/litellm_env.py pins) is installed by that module into its
own virtual environment (`--litellm-venv`, default ~/.cache/canaryctl-bench/litellm-VERSION), and
run with no database, no callbacks and the bundled model-cost map. `--no-litellm` skips it.
`--profile FILE` runs the gateway under cProfile and writes the stats to FILE (for
`python -m pstats FILE`). Every round's figures go to benchmarks/results/gateway_overhead.json,
so the tables can state the run-to-run spread next to each difference.

Then the alternatives, each alone on the same upstream: the upstream HTTP clients on the
gateway's own call (`--no-clients` skips them); the gateway's app on other servers
(`--servers`, see SERVERS; granian comes with the `bench` extra); and where the gateway's CPU
goes, py-spy's samples of it by part during one more closed loop (`--no-sample` skips it).

    python benchmarks/gateway_overhead.py [--rate 200] [--low-rate 20] [--seconds 10]
        [--rounds 3] [--concurrency 32] [--modes plain,stream] [--no-litellm] [--profile F]
        [--no-clients] [--servers uvicorn-h11,granian,raw-httptools] [--no-sample]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import record
from litellm_env import LITELLM_VENV, install_litellm, litellm_version

HOST = "127.0.0.1"
TIMEOUT = 30.0
"""Seconds a benchmark request may take before it counts as an error."""
SUSTAINABLE = 0.8
"""A fixed rate is run only below this share of the target's max throughput: above it the
queue grows for the whole run and the percentiles measure the queue, not the proxy."""
ROUTE = "bot"
PROMPT = "What is 2 + 3?"
BENCH_KEY = f"sk-{secrets.token_hex(16)}"
"""LiteLLM's proxy refuses to start without a master key; the others ignore it."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


# --- the upstream: a lab provider with zero latency, in its own process ---------------------


def serve_upstream(port: int) -> None:
    import uvicorn

    from canaryctl.lab.provider import SimulatedProvider
    from canaryctl.runbook.lab import ProviderProfile

    profile = ProviderProfile.model_validate(
        {"name": "upstream", "latency": {"median": 0, "p95": 0}, "tokens": {"completion_mean": 40}}
    )
    app = SimulatedProvider(profile).app
    uvicorn.run(app, host=HOST, port=port, log_level="warning", access_log=False)


# --- servers under test -----------------------------------------------------------------------


def wait_healthy(url: str, process: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{url}: the server exited with {process.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code < 500:
                return
        time.sleep(0.2)
    raise SystemExit(f"{url}: not up after {timeout:g}s")


@contextlib.contextmanager
def running(command: list[str], health: str, **popen: object) -> Iterator[int]:
    """The server's process id while it runs."""
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, **popen)  # type: ignore[call-overload]
    try:
        wait_healthy(health, process)
        yield process.pid
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def gateway_document(work: Path, upstream: str) -> Path:
    flag = {
        "key": "bot-model",
        "on": True,
        "variations": ["fast"],
        "fallthrough": {"variation": 0},
        "offVariation": 0,
        "version": 1,
        "salt": "bot-model",
        "targets": [],
        "contextTargets": [],
        "rules": [],
        "prerequisites": [],
    }
    (work / "flags.json").write_text(json.dumps({"flags": {"bot-model": flag}, "segments": {}}))
    document = work / "gateway.yaml"
    document.write_text(
        "apiVersion: canaryctl/v1\nkind: Gateway\nmetadata: {name: bench}\nspec:\n"
        "  flags: {provider: file, path: flags.json}\n"
        f"  routes: [{{name: {ROUTE}, flag: bot-model, default_model: fast}}]\n"
        f"  models: [{{name: fast, base_url: '{upstream}', price: {{prompt_per_1k: 0.001}}}}]\n"
    )
    return document


def litellm_config(work: Path, upstream: str) -> Path:
    config = work / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {ROUTE}\n"
        "    litellm_params:\n"
        "      model: openai/fast\n"
        f"      api_base: {upstream}/v1\n"
        "      api_key: not-used\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
        "  callbacks: []\n"
        "  success_callback: []\n"
        "  failure_callback: []\n"
        "  set_verbose: false\n"
        "general_settings: {}\n"
    )
    return config


# --- the load generator: raw HTTP/1.1 over keep-alive connections ---------------------------


class Connection:
    """One keep-alive connection; `request()` returns once the whole response has been read."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    async def request(self, raw: bytes) -> int:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lines = head.lower().split(b"\r\n")
        length = next((int(h[15:]) for h in lines if h.startswith(b"content-length:")), None)
        if length is not None:
            await self.reader.readexactly(length)
            return status
        while True:  # chunked
            size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
            await self.reader.readexactly(size + 2)
            if size == 0:
                return status

    def close(self) -> None:
        self.writer.close()


def request_bytes(port: int, path: str, stream: bool, i: int) -> bytes:
    """A chat request; on /v1/messages in Anthropic's shape (for anthropic_overhead.py)."""
    body: dict[str, Any] = {
        "model": ROUTE,
        "messages": [{"role": "user", "content": PROMPT}],
        "stream": stream,
    }
    extra = ""
    if path.endswith("/v1/messages"):
        body.update(max_tokens=256, metadata={"user_id": f"user-{i % 1000}"})
        extra = "anthropic-version: 2023-06-01\r\n"
    else:
        body["user"] = f"user-{i % 1000}"
    payload = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {BENCH_KEY}\r\n{extra}Content-Length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


class Pool:
    def __init__(self, port: int) -> None:
        self.port = port
        self.idle: list[Connection] = []

    async def send(self, raw: bytes) -> int:
        conn = self.idle.pop() if self.idle else await Connection.open(self.port)
        try:
            status = await conn.request(raw)
        except BaseException:
            conn.close()
            raise
        self.idle.append(conn)
        return status

    def close(self) -> None:
        for conn in self.idle:
            conn.close()


@dataclass
class Run:
    latencies: list[float]
    errors: int
    seconds: float

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def fixed_rate(port: int, path: str, stream: bool, rate: float, seconds: float) -> Run:
    """Open loop: arrivals on a fixed schedule whatever the server does (no coordinated
    omission); latency counts from the scheduled start."""
    pool = Pool(port)
    latencies: list[float] = []
    errors = 0
    total = int(rate * seconds)

    async def one(i: int, due: float) -> None:
        nonlocal errors
        try:
            raw = request_bytes(port, path, stream, i)
            status = await asyncio.wait_for(pool.send(raw), TIMEOUT)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
            errors += 1
            return
        if status != 200:
            errors += 1
            return
        latencies.append(time.perf_counter() - due)

    started = time.perf_counter()
    tasks = []
    for i in range(total):
        due = started + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, due)))
    await asyncio.gather(*tasks)
    pool.close()
    return Run(latencies, errors, time.perf_counter() - started)


async def closed_loop(port: int, path: str, stream: bool, concurrency: int, seconds: float) -> Run:
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def worker(w: int) -> None:
        nonlocal errors
        conn = await Connection.open(port)
        i = w
        try:
            while time.perf_counter() < stop:
                begun = time.perf_counter()
                raw = request_bytes(port, path, stream, i)
                status = await asyncio.wait_for(conn.request(raw), TIMEOUT)
                if status == 200:
                    latencies.append(time.perf_counter() - begun)
                else:
                    errors += 1
                i += concurrency
        finally:
            conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return Run(latencies, errors, time.perf_counter() - started)


@dataclass
class Figures:
    latency_ms: dict[float, tuple[float, float] | None]
    """Fixed rate (req/s) -> (p50, p99) in milliseconds; None where the rate overloads it."""
    errors: int
    max_rps: float
    cpu_ms_per_request: float
    """The server's CPU per request at max throughput (direct: the upstream's), median round."""
    rounds: dict[str, Any]
    """Every round's figures, behind each median: the spread is the noise."""

    def as_json(self) -> dict[str, Any]:
        return {
            "max_rps": self.max_rps,
            "cpu_ms_per_request": self.cpu_ms_per_request,
            "errors": self.errors,
            "rates": {
                f"{rate:g}": None if pair is None else {"p50_ms": pair[0], "p99_ms": pair[1]}
                for rate, pair in self.latency_ms.items()
            },
            "rounds": self.rounds,
        }


def cpu_seconds(pid: int) -> float:
    """User + system CPU of process `pid` and its children (a proxy's workers), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if stat.parent.name == str(pid) or fields[1] == str(pid):  # itself, or its child
                total += (int(fields[11]) + int(fields[12])) / tick
    return total


def measure(port: int, path: str, stream: bool, args: argparse.Namespace, pid: int) -> Figures:
    """Max throughput first (closed loop: nothing is left queued when it ends), with the CPU
    server `pid` spent per request (which a busy machine's timings hide); then each fixed rate
    the target can sustain; each `--rounds` times, keeping the median round (this machine is
    shared, and one stalled round should not make the figure)."""
    asyncio.run(fixed_rate(port, path, stream, args.low_rate, 2))  # warm up the pools
    errors = 0
    throughputs, cpu = [], []
    for _ in range(args.rounds):
        before = cpu_seconds(pid)
        loaded = asyncio.run(closed_loop(port, path, stream, args.concurrency, args.seconds))
        spent = cpu_seconds(pid) - before
        throughputs.append(len(loaded.latencies) / loaded.seconds)
        cpu.append(spent * 1000 / max(1, len(loaded.latencies)))
        errors += loaded.errors
    max_rps = statistics.median(throughputs)
    rounds: dict[str, Any] = {"max_rps": throughputs, "cpu_ms_per_request": cpu}
    latency: dict[float, tuple[float, float] | None] = {}
    for rate in (args.rate, args.low_rate):
        if rate > SUSTAINABLE * max_rps:
            latency[rate] = None
            continue
        p50s, p99s = [], []
        for _ in range(args.rounds):
            timed = asyncio.run(fixed_rate(port, path, stream, rate, args.seconds))
            p50s.append(timed.pct(0.50) * 1000)
            p99s.append(timed.pct(0.99) * 1000)
            errors += timed.errors
        latency[rate] = (statistics.median(p50s), statistics.median(p99s))
        rounds[f"{rate:g}"] = {"p50_ms": p50s, "p99_ms": p99s}
    return Figures(latency, errors, max_rps, statistics.median(cpu), rounds)


def measure_both(port: int, path: str, args: argparse.Namespace, pid: int) -> dict[str, Figures]:
    return {mode: measure(port, path, mode == "stream", args, pid) for mode in args.modes}


# --- the alternatives: upstream HTTP clients, measured on the gateway's own call -------------


class _RawProtocol(asyncio.Protocol):
    """The least a Python client can do per request: one keep-alive connection, httptools'
    C parser, no pool, no timeouts, no redirects, no decompression. Not something to ship: the
    bound on what replacing aiohttp could win."""

    def __init__(self) -> None:
        import httptools

        self.parser = httptools.HttpResponseParser(self)
        self.body: list[bytes] = []
        self.done: asyncio.Future[bytes] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        assert self.done is not None
        self.done.set_result(b"".join(self.body))
        self.body = []

    async def post(self, head: bytes, payload: bytes) -> bytes:
        assert self.transport is not None
        self.done = asyncio.get_running_loop().create_future()
        self.transport.write(head + payload)
        return await self.done


async def _client_run(kind: str, port: int, concurrency: int, seconds: float) -> tuple[int, float]:
    """Closed loop of the gateway's upstream call (POST a chat, read and parse the JSON) with
    one client library: (requests done, this process's CPU seconds)."""
    url = f"http://{HOST}:{port}/v1/chat/completions"
    body = {"model": "fast", "messages": [{"role": "user", "content": PROMPT}], "stream": False}
    payload = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    done = 0
    stop = time.perf_counter() + seconds
    cpu = time.process_time()
    if kind == "aiohttp":
        import aiohttp

        connector = aiohttp.TCPConnector(limit=1000, ttl_dns_cache=300)
        async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=TIMEOUT, sock_read=TIMEOUT)

            async def one() -> None:
                async with session.post(
                    url, data=payload, headers=headers, timeout=timeout
                ) as response:
                    json.loads(await response.read())

            done = await _loop(one, concurrency, stop)
    elif kind == "httpx":
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=1000)
        async with httpx.AsyncClient(limits=limits, timeout=TIMEOUT, trust_env=False) as client:

            async def one() -> None:
                response = await client.post(url, content=payload, headers=headers)
                json.loads(response.content)

            done = await _loop(one, concurrency, stop)
    elif kind == "canaryctl-http1":
        from canaryctl.http1 import RawUpstream

        loop = asyncio.get_running_loop()
        pool = RawUpstream(f"http://{HOST}:{port}", connect_timeout=TIMEOUT, read_timeout=TIMEOUT)
        request = (
            f"POST /v1/chat/completions HTTP/1.1\r\nhost: {HOST}:{port}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(payload)}\r\n\r\n"
        ).encode() + payload

        async def one() -> None:
            answer, _ = await pool.ask(request)
            try:
                json.loads(await answer.read(loop))
            finally:
                pool.done(answer)

        done = await _loop(one, concurrency, stop)
        pool.close()
    else:
        loop = asyncio.get_running_loop()
        head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        ).encode()
        idle: list[_RawProtocol] = []

        async def one() -> None:
            conn = (
                idle.pop() if idle else (await loop.create_connection(_RawProtocol, HOST, port))[1]
            )
            json.loads(await conn.post(head, payload))
            idle.append(conn)

        done = await _loop(one, concurrency, stop)
        for conn in idle:
            assert conn.transport is not None
            conn.transport.close()
    return done, time.process_time() - cpu


async def _loop(one: Any, concurrency: int, stop: float) -> int:
    done = 0

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await one()
            done += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done


CLIENTS = ("aiohttp", "httpx", "canaryctl-http1", "raw-httptools")
"""canaryctl-http1 is the client the gateway ships for plain-HTTP models (canaryctl/http1.py:
pool, timeouts, flow control); raw-httptools the least a client can do, the bound."""


def compare_clients(port: int, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Each client library's req/s and CPU per request on the gateway's upstream call, under
    uvloop as the gateway runs; median of `--rounds` rounds."""
    import uvloop

    figures: dict[str, dict[str, Any]] = {}
    for kind in CLIENTS:
        rps, cpu = [], []
        uvloop.run(_client_run(kind, port, args.concurrency, 1))  # warm up
        for _ in range(args.rounds):
            done, spent = uvloop.run(_client_run(kind, port, args.concurrency, args.seconds))
            rps.append(done / args.seconds)
            cpu.append(spent * 1000 / max(1, done))
        figures[kind] = {
            "max_rps": statistics.median(rps),
            "cpu_ms_per_request": statistics.median(cpu),
            "rounds": {"max_rps": rps, "cpu_ms_per_request": cpu},
        }
    return figures


# --- where the gateway's CPU goes: py-spy's samples, by part ------------------------------


PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("socket writes: the answer to the client", ("CoalescingTransport.flush ",)),
    (
        "socket writes: the request to the model",
        ("StreamWriter._writelines (aiohttp", "RawUpstream.ask (canaryctl/http1.py"),
    ),
    ("event loop (uvloop's C: polling, reads, callbacks)", ("Runner.run (",)),
    ("LaunchDarkly SDK: the flag's evaluation", ("ldclient/",)),
    ("metrics (prometheus_client)", ("prometheus_client/", "gateway/metrics.py")),
    ("JSON (orjson, json)", ("fastjson.py", "json/")),
    (
        "the upstream client (canaryctl/http1.py; aiohttp for HTTPS)",
        ("canaryctl/http1.py", "aiohttp/", "multidict/", "yarl/"),
    ),
    ("uvicorn: HTTP parsing and the ASGI cycle", ("uvicorn/", "canaryctl/serving.py")),
    ("Starlette and the request limits", ("starlette/", "request_limits.py", "gateway/app.py")),
    ("asyncio: tasks and futures", ("asyncio/",)),
    ("the pipeline's own stages (canaryctl/gateway)", ("canaryctl/",)),
)
"""Each sample goes to the part of its innermost frame that names one (first match in this
order); a sample with none is `other`."""


def part_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, marks in PARTS:
            if any(mark in frame for mark in marks):
                return name
    return "other"


def sample_parts(pid: int, port: int, stream: bool, args: argparse.Namespace) -> dict[str, Any]:
    """py-spy's samples of the server `pid`'s main thread during one more closed loop, by part
    (the other threads, LaunchDarkly's and the thread pool's, wait: their samples are left
    out). A separate round: sampling slows the server, so its figures are not kept."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "samples.txt"
        seconds = max(2, round(args.seconds))
        command = ["py-spy", "record", "-f", "raw", "-r", "250", "-o", str(out)]
        spy = subprocess.Popen(
            [*command, "-p", str(pid), "-d", str(seconds + 1)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)  # py-spy attaches
        asyncio.run(closed_loop(port, "/v1/chat/completions", stream, args.concurrency, seconds))
        spy.wait()
        lines = out.read_text().splitlines() if out.exists() else []
    parts: dict[str, int] = {}
    for line in lines:
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if any("Thread._bootstrap" in frame for frame in frames):
            continue
        part = part_of(frames)
        parts[part] = parts.get(part, 0) + int(count)
    total = sum(parts.values())
    return {"samples": total, "parts": {k: v / total for k, v in parts.items()} if total else {}}


# --- the alternatives: HTTP servers, each serving the same gateway app ------------------------


SERVERS = ("uvicorn-h11", "granian", "raw-httptools")
"""What else could serve the gateway, beside `canaryctl gateway serve` (uvicorn with httptools'
parser on uvloop, canaryctl/serving.py's deadlines): uvicorn with its pure-Python h11 parser;
granian, a Rust HTTP server running the same ASGI app; and a bound, not a server to ship."""
GATEWAY_DOCUMENT = "CANARYCTL_BENCH_GATEWAY"
"""The environment variable naming the Gateway document `gateway_app` serves (for granian)."""


def gateway_app() -> Any:
    """The gateway's ASGI app for the document in $CANARYCTL_BENCH_GATEWAY (granian's factory)."""
    from canaryctl.gateway import create_app
    from canaryctl.runbook import Gateway, load_document

    return create_app(load_document(os.environ[GATEWAY_DOCUMENT], expect=Gateway).spec)


class _RawServer(asyncio.Protocol):
    """The least a Python server can do per request: httptools' parser, and each POST handed to
    the gateway's pipeline as it is (`Pipeline.serve`), its response written straight to the
    socket (chunked when it has no length). No uvicorn cycle, no Starlette, no request limits,
    no deadlines, no flow control, no pipelining: the bound on what moving the hot path out of
    uvicorn and Starlette could win, not something to ship."""

    def __init__(self, pipeline: Any, routes: dict[str, Any]) -> None:
        import httptools

        self.pipeline, self.routes = pipeline, routes
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.url = b""
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_begin(self) -> None:
        self.headers, self.url, self.body = [], b"", []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        asyncio.get_running_loop().create_task(self.handle(b"".join(self.body)))

    async def handle(self, body: bytes) -> None:
        from starlette.requests import Request

        assert self.transport is not None
        path = self.url.decode()
        if path not in self.routes:  # the benchmark's health check
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            return
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},  # send raises if the client left
            "method": "POST",
            "path": path,
            "headers": self.headers,
            "query_string": b"",
            "client": self.transport.get_extra_info("peername"),
        }
        unread = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            if unread:
                return unread.pop()
            await asyncio.Future()  # the client's disconnect is not reported: a bound only
            raise AssertionError

        response = await self.pipeline.serve(Request(scope, receive), *self.routes[path])
        head: list[bytes] = []
        chunked = False

        async def send(message: dict[str, Any]) -> None:
            nonlocal chunked
            assert self.transport is not None
            if message["type"] == "http.response.start":
                names = {name for name, _ in message["headers"]}
                chunked = b"content-length" not in names
                head.append(b"HTTP/1.1 %d OK\r\n" % message["status"])
                head.extend(b"%s: %s\r\n" % pair for pair in message["headers"])
                head.append(b"transfer-encoding: chunked\r\n\r\n" if chunked else b"\r\n")
                return
            data, more = message.get("body", b""), message.get("more_body", False)
            if chunked:
                data = (b"%x\r\n%s\r\n" % (len(data), data) if data else b"") + (
                    b"" if more else b"0\r\n\r\n"
                )
            self.transport.write(b"".join(head) + data)
            head.clear()

        await response(scope, receive, send)


async def _serve_raw(app: Any, port: int) -> None:
    pipeline = app.state.pipeline
    routes = {"/v1/chat/completions": ("openai", "chat")}
    async with app.router.lifespan_context(app):
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _RawServer(pipeline, routes), HOST, port)
        async with server:
            await server.serve_forever()


def serve_gateway(port: int, kind: str) -> None:
    """Serve the gateway app on `port` with the server `kind` (uvicorn-h11 or raw-httptools)."""
    import uvicorn
    import uvloop

    app = gateway_app()
    if kind == "raw-httptools":
        with contextlib.suppress(KeyboardInterrupt):
            uvloop.run(_serve_raw(app, port))
        return
    uvicorn.run(
        app, host=HOST, port=port, http="h11", loop="uvloop", log_level="warning", access_log=False
    )


def server_command(kind: str, document: Path, port: int) -> list[str]:
    if kind == "granian":
        return [
            str(Path(sys.executable).with_name("granian")),
            "--interface",
            "asgi",
            "--factory",
            "--host",
            HOST,
            "--port",
            str(port),
            "--workers",
            "1",
            "--runtime-mode",
            "st",
            "--loop",
            "uvloop",
            "--no-ws",
            "--log-level",
            "warning",
            "--no-access-log",
            "--working-dir",
            str(Path(__file__).parent),
            "gateway_overhead:gateway_app",
        ]
    return [
        sys.executable,
        __file__,
        "--serve-gateway",
        str(port),
        "--server",
        kind,
        "--gateway-document",
        str(document),
    ]


# --- the report ---------------------------------------------------------------------------


Pair = tuple[float, float] | None


def cell(pair: Pair) -> str:
    return "overloaded" if pair is None else f"{pair[0]:.2f} / {pair[1]:.2f}"


def minus(a: Pair, b: Pair) -> Pair:
    return None if a is None or b is None else (a[0] - b[0], a[1] - b[1])


NOISE_MS = 0.05
"""Added latency below this is indistinguishable from none on a shared machine."""


def ratio(theirs: float, ours: float) -> str:
    return f"{theirs / ours:.1f}x" if ours > NOISE_MS else "n/a (ours ~0)"


def report(results: dict[str, dict[str, Figures]], args: argparse.Namespace) -> None:
    rates = (args.rate, args.low_rate)
    direct = results["direct"]
    print(
        f"\nfixed rate {args.rate:g} and {args.low_rate:g} req/s, {args.seconds:g}s each, "
        f"median of {args.rounds} rounds; "
        f"max throughput with {args.concurrency} in flight; {os.cpu_count()} cores\n"
    )
    head = " | ".join(f"p50 / p99 ms @{r:g}" for r in rates)
    print(f"| target | mode | {head} | max req/s | errors |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for target, modes in results.items():
        for mode, f in modes.items():
            cells = " | ".join(cell(f.latency_ms[r]) for r in rates)
            print(f"| {target} | {mode} | {cells} | {f.max_rps:,.0f} | {f.errors} |")
    print("\nadded latency (percentile through the proxy minus the same percentile direct):\n")
    head = " | ".join(f"added p50 / p99 ms @{r:g}" for r in rates)
    print(f"| target | mode | {head} |")
    print("| --- | --- | ---: | ---: |")
    added: dict[tuple[str, str, float], Pair] = {}
    for target, modes in results.items():
        if target == "direct":
            continue
        for mode, f in modes.items():
            for r in rates:
                added[target, mode, r] = minus(f.latency_ms[r], direct[mode].latency_ms[r])
            print(
                f"| {target} | {mode} | {' | '.join(cell(added[target, mode, r]) for r in rates)} |"
            )
    if "litellm" not in results or "canaryctl" not in results:
        return
    print("\nLiteLLM / canaryctl: how many times what canaryctl adds LiteLLM adds; throughput:")
    print("how many times LiteLLM's canaryctl serves\n")
    head = " | ".join(f"added p50 / p99 @{r:g}" for r in rates)
    print(f"| mode | {head} | max req/s |")
    print("| --- | ---: | ---: | ---: |")
    for mode in args.modes:
        cells = []
        for r in rates:
            ours, theirs = added["canaryctl", mode, r], added["litellm", mode, r]
            if ours is None or theirs is None:
                cells.append("overloaded")
                continue
            cells.append(" / ".join(ratio(t, o) for t, o in zip(theirs, ours, strict=True)))
        throughput = results["canaryctl"][mode].max_rps / results["litellm"][mode].max_rps
        print(f"| {mode} | {' | '.join(cells)} | {throughput:.1f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=200.0, help="fixed-rate req/s")
    parser.add_argument("--low-rate", type=float, default=20.0, help="second, gentler rate")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each run")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each, median kept")
    parser.add_argument("--concurrency", type=int, default=32, help="in flight, max throughput")
    parser.add_argument(
        "--modes", type=lambda v: v.split(","), default=["plain", "stream"], help="plain,stream"
    )
    parser.add_argument("--no-litellm", action="store_true", help="skip LiteLLM's proxy")
    parser.add_argument(
        "--no-clients", dest="clients", action="store_false", help="skip the clients' comparison"
    )
    parser.add_argument("--litellm-venv", type=Path, default=LITELLM_VENV)
    parser.add_argument("--profile", type=Path, help="cProfile the gateway into this file")
    parser.add_argument(
        "--no-sample",
        dest="sample",
        action="store_false",
        help="skip sampling the gateway with py-spy (it needs py-spy and ptrace rights)",
    )
    parser.add_argument(
        "--servers",
        type=lambda v: [k for k in v.split(",") if k],
        default=list(SERVERS),
        help=f"the alternative servers to measure the gateway app on ({','.join(SERVERS)}; "
        "'' for none)",
    )
    parser.add_argument("--serve-upstream", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-gateway", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--server", choices=SERVERS, help=argparse.SUPPRESS)
    parser.add_argument("--gateway-document", help=argparse.SUPPRESS)
    record.add_arguments(parser)
    args = parser.parse_args()
    if args.serve_upstream:
        serve_upstream(args.serve_upstream)
        return
    if args.serve_gateway:
        os.environ[GATEWAY_DOCUMENT] = args.gateway_document
        serve_gateway(args.serve_gateway, args.server)
        return
    if args.sample and shutil.which("py-spy") is None:
        parser.error("py-spy is not installed (pip install -e '.[bench]'), or pass --no-sample")
    unknown = set(args.servers) - set(SERVERS)
    if unknown:
        parser.error(f"--servers: no server {', '.join(sorted(unknown))}; known: {SERVERS}")
    before = record.machine()
    litellm = None if args.no_litellm else install_litellm(args.litellm_venv)
    results: dict[str, dict[str, Figures]] = {}
    upstream_port = free_port()
    upstream = f"http://{HOST}:{upstream_port}"
    serve = [sys.executable, __file__, "--serve-upstream", str(upstream_port)]
    with tempfile.TemporaryDirectory() as tmp, running(serve, f"{upstream}/health") as up:
        work = Path(tmp)
        print("direct to the upstream...", file=sys.stderr)
        results["direct"] = measure_both(upstream_port, "/v1/chat/completions", args, up)
        clients = None
        if args.clients:
            print("upstream clients, alone...", file=sys.stderr)
            clients = compare_clients(upstream_port, args)

        port = free_port()
        python = [sys.executable]
        if args.profile:
            python += ["-m", "cProfile", "-o", str(args.profile.resolve())]
        document = gateway_document(work, upstream)
        gateway = [
            *python,
            "-m",
            "canaryctl",
            "gateway",
            "serve",
            str(document),
            "--listen",
            f"{HOST}:{port}",
        ]
        print("through the canaryctl gateway...", file=sys.stderr)
        with running(gateway, f"http://{HOST}:{port}/health", stderr=subprocess.DEVNULL) as pid:
            results["canaryctl"] = measure_both(port, "/v1/chat/completions", args, pid)
            profile = None
            if args.sample and not args.profile:
                print("sampling it with py-spy...", file=sys.stderr)
                profile = {
                    mode: sample_parts(pid, port, mode == "stream", args) for mode in args.modes
                }
        servers: dict[str, dict[str, Figures]] = {}
        for kind in args.servers:
            port = free_port()
            print(f"the gateway app on {kind}...", file=sys.stderr)
            env = {**os.environ, GATEWAY_DOCUMENT: str(document)}
            command = server_command(kind, document, port)
            health = f"http://{HOST}:{port}/health"
            with running(command, health, env=env, stderr=subprocess.DEVNULL) as pid:
                servers[kind] = measure_both(port, "/v1/chat/completions", args, pid)

        if litellm is not None:
            port = free_port()
            env = {
                **os.environ,
                "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                "LITELLM_LOG": "ERROR",
                "LITELLM_TELEMETRY": "False",
                "DISABLE_SCHEMA_UPDATE": "True",
                "LITELLM_MASTER_KEY": BENCH_KEY,
            }
            env.pop("DATABASE_URL", None)
            command = [
                str(litellm),
                "--config",
                str(litellm_config(work, upstream)),
                "--host",
                HOST,
                "--port",
                str(port),
                "--num_workers",
                "1",
            ]
            print("through LiteLLM's proxy...", file=sys.stderr)
            with running(
                command,
                f"http://{HOST}:{port}/health/liveliness",
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            ) as pid:
                results["litellm"] = measure_both(port, "/v1/chat/completions", args, pid)
    report(results, args)
    config = {
        key: getattr(args, key)
        for key in ("rate", "low_rate", "seconds", "rounds", "concurrency", "modes")
    }
    figures = {
        target: {mode: f.as_json() for mode, f in modes.items()}
        for target, modes in results.items()
    }
    litellm_used = None if litellm is None else {"litellm": litellm_version(args.litellm_venv)}
    record.write(
        "gateway_overhead",
        {
            "config": config,
            "targets": figures,
            "clients": clients,
            "profile": profile,
            "servers": {
                kind: {mode: f.as_json() for mode, f in modes.items()}
                for kind, modes in servers.items()
            },
        },
        args,
        before=before,
        packages=(
            "uvicorn",
            "starlette",
            "aiohttp",
            "httptools",
            "uvloop",
            "granian",
            "h11",
            "launchdarkly-server-sdk",
        ),
        extra_versions=litellm_used,
    )
    if args.profile:
        print(f"\nprofile: python -m pstats {args.profile}", file=sys.stderr)


if __name__ == "__main__":
    main()
