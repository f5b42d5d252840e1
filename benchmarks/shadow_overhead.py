"""What shadowing every request adds to the primary's latency: one gateway mirroring 100% of its
requests to a shadow model, beside the same gateway with no shadow.

Four processes on loopback: the primary's upstream and the shadow's upstream (lab providers
answering at once, each in its own process, so the primary's upstream is loaded alike in both
arms), and two `canaryctl gateway serve` processes in front of them that differ only in the
route's `shadow: {model: shadow, percent: 100}`. The load generator is benchmarks/
gateway_overhead.py's (raw HTTP/1.1 over keep-alive connections, open loop at a fixed rate,
latency from each request's scheduled start): plain requests at `--rate`, streamed ones at
`--stream-rate`, since a stream costs the gateway several times a plain answer and 200 streams a
second overload it on two shared cores, with or without shadow. The arms take turns, round by
round, so that a stall of the shared machine falls on both; each figure is the median of
`--rounds` rounds. Each round also reads the gateway process's CPU time (user + system, from
/proc), so the cost of shadowing shows as CPU per request even when the busy machine's latency
noise hides it. The shadow arm's /metrics are read after each mode: how many shadow calls were
sent and dropped.

Results go to benchmarks/results/shadow_overhead.json (docs/shadow.md shows them).

    python benchmarks/shadow_overhead.py [--rate 200] [--stream-rate 50] [--seconds 3]
        [--rounds 5] [--modes plain,stream]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gateway_overhead as bench
import httpx
import record
from prometheus_client.parser import text_string_to_metric_families

HOST = bench.HOST
PATH = "/v1/chat/completions"
ARMS = ("shadow-off", "shadow-100")


def gateway_document(work: Path, primary: str, shadow: str, mirrored: bool) -> Path:
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
    route = f"{{name: {bench.ROUTE}, flag: bot-model, default_model: fast"
    route += ", shadow: {model: shadow, percent: 100}}" if mirrored else "}"
    document = work / f"gateway-{'on' if mirrored else 'off'}.yaml"
    document.write_text(
        "apiVersion: canaryctl/v1\nkind: Gateway\nmetadata: {name: bench}\nspec:\n"
        "  flags: {provider: file, path: flags.json}\n"
        f"  routes: [{route}]\n"
        "  models:\n"
        f"    - {{name: fast, base_url: '{primary}', price: {{prompt_per_1k: 0.001}}}}\n"
        f"    - {{name: shadow, base_url: '{shadow}', price: {{prompt_per_1k: 0.001}}}}\n"
    )
    return document


def shadow_counts(port: int) -> dict[str, float]:
    """Shadow calls the gateway on `port` has sent (by outcome) and dropped, so far."""
    text = httpx.get(f"http://{HOST}:{port}/metrics").text
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "llm_shadow_requests_total":
                key = f"sent_{sample.labels['outcome']}"
                counts[key] = counts.get(key, 0.0) + sample.value
            elif sample.name == "llm_shadow_dropped_total":
                key = f"dropped_{sample.labels['reason']}"
                counts[key] = counts.get(key, 0.0) + sample.value
    return counts


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process `pid` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def gateway(document: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """`canaryctl gateway serve` on `port`, as gateway_overhead.py runs it, and its process."""
    command = [
        *(sys.executable, "-m", "canaryctl", "gateway", "serve", str(document)),
        *("--listen", f"{HOST}:{port}"),
    ]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        bench.wait_healthy(f"http://{HOST}:{port}/health", process)
        yield process
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def measure(
    gateways: dict[str, tuple[int, int]], stream: bool, rate: float, args: argparse.Namespace
) -> dict[str, Any]:
    """Each arm's p50, p99 and CPU per request at `rate`, the arms taking turns round by round;
    `gateways` maps each arm to its (port, pid)."""
    for port, _ in gateways.values():  # warm up the connection pools
        asyncio.run(bench.fixed_rate(port, PATH, stream, 20, 2))
    rounds: dict[str, dict[str, list[float]]] = {
        arm: {"p50_ms": [], "p99_ms": [], "cpu_ms_per_request": []} for arm in gateways
    }
    errors = dict.fromkeys(gateways, 0)
    for _ in range(args.rounds):
        for arm, (port, pid) in gateways.items():
            cpu = cpu_seconds(pid)
            run = asyncio.run(bench.fixed_rate(port, PATH, stream, rate, args.seconds))
            cpu = cpu_seconds(pid) - cpu
            rounds[arm]["p50_ms"].append(run.pct(0.50) * 1000)
            rounds[arm]["p99_ms"].append(run.pct(0.99) * 1000)
            rounds[arm]["cpu_ms_per_request"].append(cpu * 1000 / max(1, len(run.latencies)))
            errors[arm] += run.errors
    key = f"{rate:g}"
    return {
        arm: {
            "errors": errors[arm],
            "rates": {key: {q: statistics.median(v) for q, v in rounds[arm].items()}},
            "rounds": {key: rounds[arm]},
        }
        for arm in gateways
    }


@contextlib.contextmanager
def upstream(name: str) -> Iterator[str]:
    port = bench.free_port()
    url = f"http://{HOST}:{port}"
    serve = [sys.executable, str(Path(bench.__file__)), "--serve-upstream", str(port)]
    print(f"starting the {name} upstream...", file=sys.stderr)
    with bench.running(serve, f"{url}/health"):
        yield url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=200.0, help="fixed-rate req/s")
    parser.add_argument("--stream-rate", type=float, default=50.0, help="streams' req/s")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per arm, median kept")
    parser.add_argument(
        "--modes", type=lambda v: v.split(","), default=["plain", "stream"], help="plain,stream"
    )
    record.add_arguments(parser)
    args = parser.parse_args()
    before = record.machine()
    targets: dict[str, dict[str, Any]] = {arm: {} for arm in ARMS}
    shadow: dict[str, dict[str, float]] = {}
    with (
        tempfile.TemporaryDirectory() as tmp,
        upstream("primary") as primary,
        upstream("shadow") as shadow_url,
        contextlib.ExitStack() as running,
    ):
        work = Path(tmp)
        gateways = {}
        for arm in ARMS:
            port = bench.free_port()
            document = gateway_document(work, primary, shadow_url, arm == "shadow-100")
            gateways[arm] = (port, running.enter_context(gateway(document, port)).pid)
        shadowed = gateways["shadow-100"][0]
        for mode in args.modes:
            print(f"{mode}: {', '.join(ARMS)} in turns...", file=sys.stderr)
            seen = shadow_counts(shadowed)
            rate = args.stream_rate if mode == "stream" else args.rate
            for arm, figures in measure(gateways, mode == "stream", rate, args).items():
                targets[arm][mode] = figures
            after = shadow_counts(shadowed)
            shadow[mode] = {k: v - seen.get(k, 0.0) for k, v in after.items()}
    report(targets, shadow, args)
    config = {
        key: getattr(args, key) for key in ("rate", "stream_rate", "seconds", "rounds", "modes")
    }
    record.write(
        "shadow_overhead",
        {"config": config, "targets": targets, "shadow_calls": shadow},
        args,
        before=before,
        packages=("uvicorn", "starlette", "aiohttp", "launchdarkly-server-sdk"),
    )


def report(
    targets: dict[str, dict[str, Any]],
    shadow: dict[str, dict[str, float]],
    args: argparse.Namespace,
) -> None:
    print(f"\n{args.rounds} rounds of {args.seconds:g} s per arm\n")
    print("| mode | req/s | p50 / p99 ms, no shadow | p50 / p99 ms, 100% shadow | added | CPU ms |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for mode in args.modes:
        rate = f"{args.stream_rate if mode == 'stream' else args.rate:g}"
        off = targets["shadow-off"][mode]["rates"][rate]
        on = targets["shadow-100"][mode]["rates"][rate]
        added = f"{on['p50_ms'] - off['p50_ms']:.3f} / {on['p99_ms'] - off['p99_ms']:.3f}"
        cpu = f"{off['cpu_ms_per_request']:.2f} → {on['cpu_ms_per_request']:.2f}"
        print(
            f"| {mode} | {rate} | {off['p50_ms']:.2f} / {off['p99_ms']:.2f} | "
            f"{on['p50_ms']:.2f} / {on['p99_ms']:.2f} | {added} | {cpu} |"
        )
    print(f"\nshadow calls: {json.dumps(shadow)}")


if __name__ == "__main__":
    main()
