"""How fast the gate's eval runs: the built-in arithmetic benchmark (400 items) sent to two lab
providers at once (50 ms median, 150 ms p95), at several concurrency limits.

The providers run in a separate `canaryctl lab serve` process, as real models live elsewhere,
and then in this process, as a runbook's `eval.lab` runs them, where the lab's event loop and
the eval's compete for one GIL. Prints per limit: wall time, items per second (both variants
together), this process's CPU time, and each variant's score; writes them to
benchmarks/results/eval_throughput.json.

    python benchmarks/eval_throughput.py [--concurrency 4 16 64] [--placements separate,in-process]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import record
import yaml

from canaryctl.evals import Endpoint, builtin_benchmark, load_benchmark, run_benchmark
from canaryctl.evals.runner import chat_url
from canaryctl.lab import LabStack
from canaryctl.runbook import Lab
from canaryctl.runbook.gateway import PriceSpec

LATENCY = {"median": 0.05, "p95": 0.15}


def lab_document(workdir: Path) -> Path:
    (workdir / "flags.json").write_text(json.dumps({"flags": {}, "segments": {}}))
    providers = [
        {"name": "baseline", "latency": LATENCY, "quality": 0.9},
        {"name": "canary", "latency": LATENCY, "quality": 0.88},
    ]
    document = {
        "apiVersion": "canaryctl/v1",
        "kind": "Lab",
        "metadata": {"name": "eval-bench"},
        "spec": {
            "providers": providers,
            "gateway": {
                "listen": "127.0.0.1:0",
                "flags": {"provider": "file", "path": "flags.json"},
                "routes": [{"name": "bot", "flag": "f", "default_model": "baseline"}],
                "models": [
                    {"name": p["name"], "base_url": f"lab://{p['name']}"} for p in providers
                ],
            },
        },
    }
    path = workdir / "lab.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@contextmanager
def providers(path: Path, in_process: bool) -> Iterator[dict[str, str]]:
    if in_process:
        from canaryctl.runbook import load_document

        with LabStack(load_document(path, expect=Lab), traffic=False) as stack:
            yield stack.provider_urls
        return
    command = [sys.executable, "-m", "canaryctl", "lab", "serve", str(path), "--no-traffic"]
    process = subprocess.Popen([*command, "-o", "json"], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        started = json.loads(process.stdout.readline())
        yield started["providers"]
    finally:
        process.terminate()
        process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[4, 16, 64])
    parser.add_argument(
        "--placements", type=lambda v: v.split(","), default=["separate", "in-process"]
    )
    record.add_arguments(parser)
    args = parser.parse_args()
    before = record.machine()
    items = load_benchmark(builtin_benchmark("arithmetic"))
    results: dict[str, Any] = {"items": len(items), "latency": LATENCY, "placements": {}}
    print("| providers | concurrency | wall s | items/s | CPU s | baseline score | canary score |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory(prefix="canaryctl-bench-") as workdir:
        path = lab_document(Path(workdir))
        for placement in args.placements:
            rows = results["placements"][placement] = {}
            for limit in args.concurrency:
                with providers(path, placement == "in-process") as urls:
                    endpoints = [
                        Endpoint(name, chat_url(url), name, PriceSpec())
                        for name, url in urls.items()
                    ]
                    wall, cpu = time.perf_counter(), time.process_time()
                    runs = run_benchmark(endpoints, items, concurrency=limit, timeout=10)
                    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                scores = {name: sum(r.correct for r in rs) / len(rs) for name, rs in runs.items()}
                rows[str(limit)] = {
                    "wall_seconds": wall,
                    "items_per_second": 2 * len(items) / wall,
                    "cpu_seconds": cpu,
                    "scores": scores,
                }
                print(
                    f"| {placement} | {limit} | {wall:.1f} | {2 * len(items) / wall:.0f} "
                    f"| {cpu:.1f} | {scores['baseline']:.3f} | {scores['canary']:.3f} |"
                )
    record.write("eval_throughput", results, args, before=before, packages=("httpx",))


if __name__ == "__main__":
    main()
