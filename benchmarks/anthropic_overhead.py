"""What translating to and from Anthropic's Messages API adds to a request through the gateway,
beside the OpenAI path measured the same way.

Lab providers that answer at once (zero latency), one speaking OpenAI and one Anthropic, each in
its own process; the canaryctl gateway (`canaryctl gateway serve`) in front of either; the load
generator of benchmarks/gateway_overhead.py (raw HTTP/1.1 over keep-alive connections, fixed
rates and max throughput, the median of `--rounds` rounds). Six paths, plain and streamed:

| path | client speaks | model speaks | compared with |
| --- | --- | --- | --- |
| `openai-direct` | OpenAI | OpenAI | — |
| `anthropic-direct` | Anthropic | Anthropic | — |
| `openai-gateway-openai` | OpenAI | OpenAI (no translation) | `openai-direct` |
| `openai-gateway-anthropic` | OpenAI | Anthropic (outbound translation) | `anthropic-direct` |
| `anthropic-gateway-openai` | Anthropic (inbound translation) | OpenAI | `openai-direct` |
| `anthropic-gateway-anthropic` | Anthropic | Anthropic (both ways) | `anthropic-direct` |

A gateway path's added latency is its percentile minus its direct path's; what the translation
costs is that minus the OpenAI path's. Results go to benchmarks/results/anthropic_overhead.json.

    python benchmarks/anthropic_overhead.py [--rate 200] [--low-rate 20] [--seconds 4]
        [--rounds 3] [--concurrency 32] [--modes plain,stream]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Literal

import gateway_overhead as bench
import record

HOST = bench.HOST
PATHS = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages"}


def serve_upstream(port: int, api: Literal["openai", "anthropic"]) -> None:
    import uvicorn

    from canaryctl.lab.provider import SimulatedProvider
    from canaryctl.runbook.lab import ProviderProfile

    profile = ProviderProfile.model_validate(
        {
            "name": "upstream",
            "api": api,
            "latency": {"median": 0, "p95": 0},
            "tokens": {"completion_mean": 40},
        }
    )
    app = SimulatedProvider(profile).app
    uvicorn.run(app, host=HOST, port=port, log_level="warning", access_log=False)


def gateway_document(work: Path, upstream: str, provider: str) -> Path:
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
    document = work / f"gateway-{provider}.yaml"
    document.write_text(
        "apiVersion: canaryctl/v1\nkind: Gateway\nmetadata: {name: bench}\nspec:\n"
        "  flags: {provider: file, path: flags.json}\n"
        f"  routes: [{{name: {bench.ROUTE}, flag: bot-model, default_model: fast}}]\n"
        f"  models: [{{name: fast, provider: {provider}, base_url: '{upstream}', "
        "price: {prompt_per_1k: 0.001}}]\n"
    )
    return document


def report(results: dict[str, dict[str, bench.Figures]], args: argparse.Namespace) -> None:
    rates = (args.rate, args.low_rate)
    head = " | ".join(f"p50 / p99 ms @{r:g}" for r in rates)
    print(f"\n| path | mode | {head} | max req/s | errors |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for target, modes in results.items():
        for mode, f in modes.items():
            cells = " | ".join(bench.cell(f.latency_ms[r]) for r in rates)
            print(f"| {target} | {mode} | {cells} | {f.max_rps:,.0f} | {f.errors} |")
    head = " | ".join(f"added p50 / p99 ms @{r:g}" for r in rates)
    print(f"\n| path | mode | {head} |\n| --- | --- | ---: | ---: |")
    for target, modes in results.items():
        if target.endswith("-direct"):
            continue
        direct = f"{target.rsplit('-', 1)[1]}-direct"
        for mode, figures in modes.items():
            cells = [
                bench.cell(bench.minus(figures.latency_ms[r], results[direct][mode].latency_ms[r]))
                for r in rates
            ]
            print(f"| {target} | {mode} | {' | '.join(cells)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=200.0, help="fixed-rate req/s")
    parser.add_argument("--low-rate", type=float, default=20.0, help="second, gentler rate")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each run")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each, median kept")
    parser.add_argument("--concurrency", type=int, default=32, help="in flight, max throughput")
    parser.add_argument(
        "--modes", type=lambda v: v.split(","), default=["plain", "stream"], help="plain,stream"
    )
    parser.add_argument("--serve-upstream", nargs=2, help=argparse.SUPPRESS)
    record.add_arguments(parser)
    args = parser.parse_args()
    if args.serve_upstream:
        serve_upstream(int(args.serve_upstream[0]), args.serve_upstream[1])
        return
    before = record.machine()
    results: dict[str, dict[str, bench.Figures]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for api in ("openai", "anthropic"):
            upstream_port = bench.free_port()
            upstream = f"http://{HOST}:{upstream_port}"
            serve = [sys.executable, __file__, "--serve-upstream", str(upstream_port), api]
            with bench.running(serve, f"{upstream}/health") as up:
                print(f"direct to the {api} upstream...", file=sys.stderr)
                results[f"{api}-direct"] = bench.measure_both(upstream_port, PATHS[api], args, up)
                port = bench.free_port()
                gateway = [
                    sys.executable,
                    "-m",
                    "canaryctl",
                    "gateway",
                    "serve",
                    str(gateway_document(work, upstream, api)),
                    "--listen",
                    f"{HOST}:{port}",
                ]
                health = f"http://{HOST}:{port}/health"
                with bench.running(gateway, health, stderr=subprocess.DEVNULL) as pid:
                    for face in ("openai", "anthropic"):
                        print(f"{face} client, gateway, {api} model...", file=sys.stderr)
                        target = f"{face}-gateway-{api}"
                        results[target] = bench.measure_both(port, PATHS[face], args, pid)
    report(results, args)
    config = {
        key: getattr(args, key)
        for key in ("rate", "low_rate", "seconds", "rounds", "concurrency", "modes")
    }
    figures = {
        target: {mode: f.as_json() for mode, f in modes.items()}
        for target, modes in results.items()
    }
    record.write(
        "anthropic_overhead",
        {"config": config, "targets": figures},
        args,
        before=before,
        packages=("uvicorn", "starlette", "aiohttp", "httptools", "uvloop"),
    )


if __name__ == "__main__":
    main()
