"""How long a flag change takes from the controller's REST PATCH to the gateway serving it.

Everything is real except LaunchDarkly's service: the `launchdarkly` flag store PATCHes the local
LaunchDarkly server of the tests (`tests/ld_server.py`), which pushes a `patch` event down the SDK
stream to the real gateway (LabStack, real LaunchDarkly SDK). After each PATCH returns, one fixed
user asks the gateway again and again until the `x-canaryctl-variant` header shows the new
variation. The canary weight alternates between 100% and 0%, so every change flips that user.

    python benchmarks/ld_propagation.py [--changes 50]

Prints the PATCH round trip and the propagation time (PATCH returned -> gateway serving), median,
p99 and max, and writes them to benchmarks/results/ld_propagation.json. The resolution is one
probe request through the gateway (a few milliseconds).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import httpx
import record

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.ld_server

from canaryctl.flags import LaunchDarklyFlagStore
from canaryctl.lab import LabStack
from canaryctl.runbook.lab import LabSpec
from tests.ld_server import LDServer, make_flag, serve

TOKEN, SDK_KEY = "api-benchmark-token", "sdk-benchmark-key"
PROJECT, ENV, KEY = "default", "production", "support-bot-model"
BASELINE, CANARY = "gpt-4-turbo", "gpt-4o-mini"
TIMEOUT = 10.0


def lab(ld: LDServer) -> LabSpec:
    quick = {"median": 0.001, "p95": 0.002}
    providers = [{"name": BASELINE, "latency": quick}, {"name": CANARY, "latency": quick}]
    return LabSpec.model_validate(
        {
            "providers": providers,
            "gateway": {
                "listen": "127.0.0.1:0",
                "flags": {
                    "provider": "launchdarkly",
                    "sdk_key_env": "BENCH_LD_SDK_KEY",
                    "base_uri": ld.base_url,
                    "stream_uri": ld.base_url,
                    "events_uri": ld.base_url,
                },
                "routes": [{"name": "bot", "flag": KEY, "default_model": BASELINE}],
                "models": [
                    {"name": p["name"], "base_url": f"lab://{p['name']}"} for p in providers
                ],
            },
        }
    )


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=50)
    record.add_arguments(parser)
    args = parser.parse_args()
    before = record.machine()

    server = LDServer(TOKEN)
    server.add(
        PROJECT,
        make_flag(
            KEY,
            [("id-base", BASELINE, "Baseline"), ("id-canary", CANARY, "Canary")],
            {ENV: {"fallthrough": {"variation": 0}}},
        ),
    )
    server.sdk_key(SDK_KEY, PROJECT, ENV)
    os.environ["BENCH_LD_SDK_KEY"] = SDK_KEY
    patch_times: list[float] = []
    propagation: list[float] = []
    probes = 0
    with serve(server) as ld, LabStack(lab(ld), traffic=False) as stack:
        store = LaunchDarklyFlagStore(
            project=PROJECT,
            environment=ENV,
            key=KEY,
            baseline=BASELINE,
            canary=CANARY,
            token=TOKEN,
            base_url=ld.base_url,
        )
        body = {"model": "bot", "messages": [{"role": "user", "content": "2+2"}]}
        with httpx.Client(base_url=stack.gateway_url, timeout=TIMEOUT) as gateway:

            def serves() -> str:
                response = gateway.post("/v1/chat/completions", json=body, headers={"X-User": "u1"})
                return response.headers["x-canaryctl-variant"]

            version = store.snapshot().version
            for change in range(args.changes):
                weight, expected = (100, CANARY) if change % 2 == 0 else (0, BASELINE)
                started = time.perf_counter()
                version = store.set_canary_weight(
                    weight, expect_version=version, comment=f"benchmark change {change}"
                ).version
                patched = time.perf_counter()
                while serves() != expected:
                    probes += 1
                    if time.perf_counter() - patched > TIMEOUT:
                        raise SystemExit(f"change {change}: not served after {TIMEOUT}s")
                served = time.perf_counter()
                patch_times.append(patched - started)
                propagation.append(served - patched)
    assert (server.stream_connections, server.polls) == (1, 0), "expected the stream, no polls"

    def row(name: str, values: list[float]) -> str:
        ms = [v * 1000 for v in values]
        return (
            f"{name:<34} median {statistics.median(ms):7.1f} ms   p99 {percentile(ms, 99):7.1f} ms"
            f"   max {max(ms):7.1f} ms"
        )

    print(f"{args.changes} changes, alternating canary 100% / 0%, one stream connection, 0 polls")
    print(row("REST PATCH round trip", patch_times))
    print(row("PATCH returned -> gateway serving", propagation))
    print(f"probe requests that still saw the old variation: {probes}")

    def summary(values: list[float]) -> dict[str, float]:
        ms = [v * 1000 for v in values]
        return {"median_ms": statistics.median(ms), "p99_ms": percentile(ms, 99), "max_ms": max(ms)}

    results = {
        "changes": args.changes,
        "stream_connections": server.stream_connections,
        "polls": server.polls,
        "stale_probes": probes,
        "patch_round_trip": summary(patch_times),
        "propagation": summary(propagation),
    }
    record.write(
        "ld_propagation", results, args, before=before, packages=("launchdarkly-server-sdk",)
    )


if __name__ == "__main__":
    main()
