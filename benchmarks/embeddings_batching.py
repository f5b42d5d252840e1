"""What batching /v1/embeddings saves (upstream calls) and what it costs (latency), at a gentle
and a busy rate, with batching on and off.

Three processes on loopback: a lab provider answering embeddings after a fixed `--upstream-ms`
(its own process, with a `/calls` route counting the calls it got), the canaryctl gateway
(`canaryctl gateway serve`) with two routes to that provider, `plain` (no batching) and
`batched` (`batch: {window: --window-ms, max_inputs: --max-inputs}`), and this script's open-loop
load generator (benchmarks/gateway_overhead.py's raw HTTP/1.1 client): one text per request,
each different, from one caller, at each of `--rates` for `--seconds`, batching off then on
over the same arrival schedule. Arrivals are `poisson` (independent, as many users send them:
some come close together) or `even` (one every 1/rate: at 50 req/s no two fall within a 5 ms
window, the worst case for batching).

Per arm: requests, the upstream calls the provider counted, the share of calls saved, the mean
batch, p50 and p99 of the full response time from each request's scheduled start, and the
gateway's own account (llm_batch_wait_seconds: how long requests waited for their batch).
Latency added is the batched arm's percentile minus the plain arm's at the same rate. Results go
to benchmarks/results/embeddings_batching.json.

    python benchmarks/embeddings_batching.py [--rates 50,500] [--seconds 10]
        [--arrivals poisson,even] [--seed 0] [--window-ms 5] [--max-inputs 64]
        [--upstream-ms 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import gateway_overhead as bench
import httpx
import record
from prometheus_client.parser import text_string_to_metric_families

HOST = bench.HOST
TEXT = "A customer asks how long a refund takes when the parcel was sent back {i} days ago."


def serve_upstream(port: int, upstream_ms: float) -> None:
    """The lab provider, with `/calls` added to count what it was sent."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Mount, Route

    from canaryctl.lab.provider import SimulatedProvider
    from canaryctl.runbook.lab import ProviderProfile

    seconds = upstream_ms / 1000
    profile = ProviderProfile.model_validate(
        {"name": "embedder", "latency": {"median": seconds, "p95": seconds}}
    )
    provider = SimulatedProvider(profile)

    async def calls(request: Request) -> JSONResponse:
        return JSONResponse({"calls": provider.requests, "inputs": provider.embedded_inputs})

    app = Starlette(routes=[Route("/calls", calls), Mount("/", app=provider.app)])
    uvicorn.run(app, host=HOST, port=port, log_level="warning", access_log=False)


def gateway_document(work: Path, upstream: str, args: argparse.Namespace) -> Path:
    flags = {
        f"{route}-model": {
            "key": f"{route}-model",
            "on": True,
            "variations": [f"emb-{route}"],
            "fallthrough": {"variation": 0},
            "offVariation": 0,
            "version": 1,
            "salt": route,
            "targets": [],
            "contextTargets": [],
            "rules": [],
            "prerequisites": [],
        }
        for route in ("plain", "batched")
    }
    (work / "flags.json").write_text(json.dumps({"flags": flags, "segments": {}}))
    batch = f"{{window: {args.window_ms}ms, max_inputs: {args.max_inputs}}}"
    document = work / "gateway.yaml"
    document.write_text(
        "apiVersion: canaryctl/v1\nkind: Gateway\nmetadata: {name: bench}\nspec:\n"
        "  flags: {provider: file, path: flags.json}\n"
        "  routes:\n"
        "    - {name: plain, flag: plain-model, default_model: emb-plain}\n"
        "    - {name: batched, flag: batched-model, default_model: emb-batched}\n"
        "  models:\n"
        f"    - {{name: emb-plain, base_url: '{upstream}'}}\n"
        f"    - {{name: emb-batched, base_url: '{upstream}', batch: {batch}}}\n"
    )
    return document


def request_bytes(port: int, route: str, i: int) -> bytes:
    payload = json.dumps({"model": route, "input": TEXT.format(i=i)}).encode()
    head = (
        f"POST /v1/embeddings HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


def schedule(rate: float, seconds: float, arrivals: str, seed: int) -> list[float]:
    """Start offsets in seconds: `even` every 1/rate, or `poisson` (independent arrivals, as
    from many users; seeded, so each arm of a run gets the same schedule)."""
    count = int(rate * seconds)
    if arrivals == "even":
        return [i / rate for i in range(count)]
    rng, at, offsets = random.Random(seed), 0.0, []
    for _ in range(count):
        offsets.append(at)
        at += rng.expovariate(rate)
    return offsets


async def fixed_rate(
    port: int, route: str, offsets: list[float]
) -> tuple[bench.Run, dict[str, int]]:
    """Open loop, as gateway_overhead.fixed_rate: latency counts from the scheduled start.
    Also what each failed request got: its status, or the client's exception."""
    pool = bench.Pool(port)
    latencies: list[float] = []
    failures: Counter[str] = Counter()

    async def one(i: int, due: float) -> None:
        try:
            status = await asyncio.wait_for(pool.send(request_bytes(port, route, i)), bench.TIMEOUT)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
            failures[type(exc).__name__] += 1
            return
        if status != 200:
            failures[str(status)] += 1
            return
        latencies.append(time.perf_counter() - due)

    started = time.perf_counter()
    tasks = []
    for i, offset in enumerate(offsets):
        due = started + offset
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, due)))
    await asyncio.gather(*tasks)
    pool.close()
    run = bench.Run(latencies, sum(failures.values()), time.perf_counter() - started)
    return run, dict(failures)


def upstream_calls(upstream: str) -> int:
    return int(httpx.get(f"{upstream}/calls", timeout=10).json()["calls"])


def batch_samples(gateway: str) -> dict[str, float]:
    """The gateway's batching families, summed over labels."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{gateway}/metrics").text):
        for sample in family.samples:
            if sample.name.startswith("llm_batch_") and not sample.name.endswith("_bucket"):
                found[sample.name] = found.get(sample.name, 0.0) + sample.value
    return found


def arm(port: int, upstream: str, route: str, offsets: list[float]) -> dict[str, Any]:
    gateway = f"http://{HOST}:{port}"
    calls_before, metrics_before = upstream_calls(upstream), batch_samples(gateway)
    run, failures = asyncio.run(fixed_rate(port, route, offsets))
    calls = upstream_calls(upstream) - calls_before
    metrics = batch_samples(gateway)
    delta = {k: v - metrics_before.get(k, 0.0) for k, v in metrics.items()}
    requests = len(run.latencies) + run.errors
    waited = delta.get("llm_batch_wait_seconds_count", 0.0)
    return {
        "requests": requests,
        "errors": run.errors,
        "failures": failures,
        "seconds": run.seconds,
        "upstream_calls": calls,
        "calls_saved": 1 - calls / requests if requests else None,
        "mean_batch": requests / calls if calls else None,
        "p50_ms": run.pct(0.50) * 1000,
        "p99_ms": run.pct(0.99) * 1000,
        "mean_wait_ms": 1000 * delta["llm_batch_wait_seconds_sum"] / waited if waited else None,
        "gateway_batch_calls": delta.get("llm_batch_size_count", 0.0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rates", type=lambda v: [float(r) for r in v.split(",")], default=[50.0, 500.0]
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each arm")
    parser.add_argument(
        "--arrivals", type=lambda v: v.split(","), default=["poisson", "even"], help="poisson,even"
    )
    parser.add_argument("--seed", type=int, default=0, help="for the Poisson arrivals")
    parser.add_argument("--window-ms", type=float, default=5.0)
    parser.add_argument("--max-inputs", type=int, default=64)
    parser.add_argument("--upstream-ms", type=float, default=10.0, help="the provider's latency")
    parser.add_argument("--serve-upstream", type=int, help=argparse.SUPPRESS)
    record.add_arguments(parser)
    args = parser.parse_args()
    if args.serve_upstream:
        serve_upstream(args.serve_upstream, args.upstream_ms)
        return
    before = record.machine()
    upstream_port = bench.free_port()
    upstream = f"http://{HOST}:{upstream_port}"
    serve = [sys.executable, __file__, "--serve-upstream", str(upstream_port)]
    serve += ["--upstream-ms", str(args.upstream_ms)]
    arms: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp, bench.running(serve, f"{upstream}/health"):
        port = bench.free_port()
        document = gateway_document(Path(tmp), upstream, args)
        gateway = [sys.executable, "-m", "canaryctl", "gateway", "serve", str(document)]
        gateway += ["--listen", f"{HOST}:{port}"]
        with bench.running(gateway, f"http://{HOST}:{port}/health", stderr=subprocess.DEVNULL):
            for route in ("plain", "batched"):  # warm up both routes' connection pools
                asyncio.run(fixed_rate(port, route, schedule(50, 1, "even", 0)))
            for arrivals in args.arrivals:
                for rate in args.rates:
                    offsets = schedule(rate, args.seconds, arrivals, args.seed)
                    for route in ("plain", "batched"):
                        name = f"{route}@{rate:g}/{arrivals}"
                        print(f"{name}...", file=sys.stderr)
                        measured = arm(port, upstream, route, offsets)
                        arms[name] = {
                            "route": route,
                            "rate": rate,
                            "arrivals": arrivals,
                            **measured,
                        }
    for name, figures in arms.items():
        print(name, json.dumps({k: v for k, v in figures.items() if k != "seconds"}))
    config = {
        "rates": args.rates,
        "arrivals": args.arrivals,
        "seed": args.seed,
        "seconds": args.seconds,
        "window_ms": args.window_ms,
        "max_inputs": args.max_inputs,
        "upstream_ms": args.upstream_ms,
    }
    record.write("embeddings_batching", {"config": config, "arms": arms}, args, before=before)


if __name__ == "__main__":
    main()
