"""How much latency the fault proxy adds when no fault is active.

A simulated provider answering instantly runs in one process, `canaryctl chaos proxy` in front of
it in another, and this process sends chat completions, plain and streamed, alternately straight
to the provider and through the proxy, in rounds, so that drift in the machine's load hits both
paths alike. First each path's maximum throughput (closed loop, --concurrency in flight), then
an open-loop stream (Poisson arrivals) at each of --rate and --low-rate that both paths can
sustain. A rate above 80% of a path's maximum is not run: its queue would grow for the whole
phase, and the percentiles would measure the queue, not the proxy. Prints p50/p90/p99 of each
path and the difference, and writes them to benchmarks/results/chaos_proxy_overhead.json.

The load generator is aiohttp (its C parser) on uvloop, bodies serialized once: with httpx it
was the slowest of the three processes and capped both paths' maxima (367 req/s direct), so a
200 req/s row could not be run. The proxy's CPU per request is counted over each timed phase
alone, its warm-up requests left out of both the CPU and the count.

    python benchmarks/chaos_proxy_overhead.py [--rate 200] [--low-rate 20] [--seconds 5]
        [--rounds 3] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import record
import uvloop

BODY = {"model": "bench", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 16}
PAYLOADS = {stream: json.dumps({**BODY, "stream": stream}).encode() for stream in (False, True)}
HEADERS = {"content-type": "application/json"}
SUSTAINABLE = 0.8
"""The share of a path's closed-loop maximum that an open-loop rate may use, as in
gateway_overhead.py: past it, the figures measure a queue (docs/chaos.md)."""
CONNECTIONS = 64
TIMEOUT = aiohttp.ClientTimeout(total=30)
WARM_UP = 20
"""Requests sent one after another before a phase, to open the pooled connections on both
sides; neither timed nor counted in the proxy's CPU per request."""


def session() -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=CONNECTIONS)
    return aiohttp.ClientSession(connector=connector, timeout=TIMEOUT, trust_env=False)


def serve_upstream() -> None:
    """Child mode: a lab provider with zero latency, URL printed on stdout."""
    from canaryctl.chaos import BackgroundServer
    from canaryctl.lab.provider import SimulatedProvider
    from canaryctl.runbook.lab import ProviderProfile

    profile = ProviderProfile.model_validate(
        {"name": "bench", "latency": {"median": 0, "p95": 0}, "tokens": {"completion_mean": 16}}
    )
    with BackgroundServer(SimulatedProvider(profile).app) as server:
        print(server.url, flush=True)
        sys.stdin.read()  # until the parent closes our stdin


async def one(client: aiohttp.ClientSession, url: str, stream: bool) -> float | None:
    """Seconds to the last byte; None for a failed request (counted, not timed)."""
    started = time.perf_counter()
    try:
        async with client.post(url, data=PAYLOADS[stream], headers=HEADERS) as response:
            if stream:
                async for _ in response.content.iter_any():
                    pass
            else:
                await response.read()
            if response.status != 200:
                return None
    except (aiohttp.ClientError, TimeoutError):
        return None
    return time.perf_counter() - started


async def phase(
    url: str, rate: float, seconds: float, stream: bool, rng: random.Random, pid: int
) -> tuple[list[float | None], float]:
    """Open loop: requests start on a Poisson schedule whatever the earlier ones are doing.
    Also the CPU seconds process `pid` spent from the first request to the last answer."""
    async with session() as client:
        for _ in range(WARM_UP):
            await one(client, url, stream)
        tasks = []
        cpu = cpu_seconds(pid)
        start = time.perf_counter()
        at = 0.0
        while at < seconds:
            delay = start + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(client, url, stream)))
            at += rng.expovariate(rate)
        latencies = list(await asyncio.gather(*tasks))
        return latencies, cpu_seconds(pid) - cpu


async def closed_loop(url: str, stream: bool, concurrency: int, seconds: float) -> float:
    """Answered requests per second with `concurrency` in flight, each sent when one ends:
    nothing is left queued when it stops, so this is what the machine sustains on this path."""
    async with session() as client:
        for _ in range(WARM_UP):
            await one(client, url, stream)
        answered = 0
        started = time.perf_counter()
        stop = started + seconds

        async def worker() -> None:
            nonlocal answered
            while time.perf_counter() < stop:
                if await one(client, url, stream) is not None:
                    answered += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return answered / (time.perf_counter() - started)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc), for CPU cost per request."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000, method="inclusive")[round(q * 1000) - 1]


def measure(
    paths: dict[str, str],
    stream: bool,
    args: argparse.Namespace,
    proxy_pid: int,
    rng: random.Random,
) -> dict[str, Any]:
    """One request kind: each path's maximum (median of the rounds), then each rate both
    paths sustain, the paths alternating within every round."""
    kind = "stream" if stream else "plain"
    urls = {name: f"{base}/v1/chat/completions" for name, base in paths.items()}
    maxima: dict[str, list[float]] = {name: [] for name in urls}
    for _ in range(args.rounds):
        for name, url in urls.items():
            maxima[name].append(
                uvloop.run(closed_loop(url, stream, args.concurrency, args.seconds))
            )
    max_rps = {name: statistics.median(values) for name, values in maxima.items()}
    print(
        f"{kind}: maximum {max_rps['direct']:,.0f} req/s direct, {max_rps['proxy']:,.0f} "
        f"through the proxy ({args.concurrency} in flight)"
    )
    rates: dict[str, Any] = {}
    for rate in (args.rate, args.low_rate):
        if rate > SUSTAINABLE * min(max_rps.values()):
            print(f"{kind} at {rate:g} req/s: not run, above 80% of a path's maximum")
            rates[f"{rate:g}"] = None
            continue
        rates[f"{rate:g}"] = at_rate(urls, stream, rate, args, proxy_pid, rng)
    return {"max_rps": max_rps, "max_rps_rounds": maxima, "rates": rates}


def at_rate(
    urls: dict[str, str],
    stream: bool,
    rate: float,
    args: argparse.Namespace,
    proxy_pid: int,
    rng: random.Random,
) -> dict[str, Any]:
    kind = "stream" if stream else "plain"
    results: dict[str, list[float | None]] = {name: [] for name in urls}
    proxy_cpu = 0.0
    for _ in range(args.rounds):
        for name, url in urls.items():
            latencies, cpu = uvloop.run(phase(url, rate, args.seconds, stream, rng, proxy_pid))
            results[name] += latencies
            if name == "proxy":
                proxy_cpu += cpu
    latencies = {n: [t for t in v if t is not None] for n, v in results.items()}
    cut = {n: [percentile(v, q) * 1000 for q in (0.5, 0.9, 0.99)] for n, v in latencies.items()}
    print(f"open loop at {rate:g} req/s, {args.rounds} x {args.seconds:g}s per path")
    print(f"{'request':<9}{'path':<8}{'n':>6}{'failed':>8}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}")
    for name, values in latencies.items():
        p50, p90, p99 = cut[name]
        failed = len(results[name]) - len(values)
        print(f"{kind:<9}{name:<8}{len(values):>6}{failed:>8}{p50:>9.2f}{p90:>9.2f}{p99:>9.2f}")
    added = [p - d for p, d in zip(cut["proxy"], cut["direct"], strict=True)]
    per_request = proxy_cpu / len(results["proxy"]) * 1000
    print(
        f"{kind:<9}{'added':<8}{'':>14}{added[0]:>9.2f}{added[1]:>9.2f}{added[2]:>9.2f}"
        f"   proxy CPU {per_request:.2f} ms/request"
    )
    figures: dict[str, Any] = {
        name: {
            "requests": len(results[name]),
            "failed": len(results[name]) - len(latencies[name]),
            "p50_ms": cut[name][0],
            "p90_ms": cut[name][1],
            "p99_ms": cut[name][2],
        }
        for name in results
    }
    figures["proxy_cpu_ms_per_request"] = per_request
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument("--low-rate", type=float, default=20.0, help="a second, lighter rate")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one phase")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--concurrency", type=int, default=16, help="in flight, for the maximum throughput"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--serve-upstream", action="store_true", help=argparse.SUPPRESS)
    record.add_arguments(parser)
    args = parser.parse_args()
    if args.serve_upstream:
        serve_upstream()
        return
    before = record.machine()
    figures: dict[str, Any] = {}
    env = {**os.environ, "CANARYCTL_CHAOS_TOKEN": "bench"}
    upstream = subprocess.Popen(
        [sys.executable, __file__, "--serve-upstream"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert upstream.stdout is not None
    upstream_url = upstream.stdout.readline().strip()
    proxy = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "canaryctl",
            "chaos",
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            upstream_url,
            "-o",
            "json",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proxy.stdout is not None
    proxy_url = json.loads(proxy.stdout.readline())["url"]
    time.sleep(0.5)
    rng = random.Random(args.seed)
    try:
        paths = {"direct": upstream_url, "proxy": proxy_url}
        for stream in (False, True):
            kind = "stream" if stream else "plain"
            figures[kind] = measure(paths, stream, args, proxy.pid, rng)
    finally:
        proxy.terminate()
        proxy.wait(10)
        upstream.stdin.close()  # type: ignore[union-attr]
        upstream.wait(10)
    config = {
        "rate": args.rate,
        "low_rate": args.low_rate,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "concurrency": args.concurrency,
        "seed": args.seed,
    }
    record.write(
        "chaos_proxy_overhead",
        {"config": config, "modes": figures},
        args,
        before=before,
        packages=("aiohttp", "uvicorn", "starlette", "httptools", "uvloop"),
    )


if __name__ == "__main__":
    main()
