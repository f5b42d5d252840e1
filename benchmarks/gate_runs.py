"""What the shipped gate runbooks decide against the lab, and how long they take.

Runs the real command, `canaryctl gate RUNBOOK --json-file FILE`, in a fresh process for each
runbook (the lab starts inside it, offline), and keeps from the gate's own JSON the verdict, each
variant's score, the difference and its interval, the canary's p95, the monthly cost projection,
and the wall clock of the whole command.

    python benchmarks/gate_runs.py   # writes benchmarks/results/gate_runs.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import record

ROOT = Path(__file__).resolve().parent.parent
RUNBOOKS = ("canaryctl/defaults/rollout-gpt4o-mini.yaml", "canaryctl/defaults/rollout-mixtral.yaml")


def gate(runbook: str) -> dict[str, Any]:
    script = Path(sys.executable).parent / "canaryctl"
    head = [str(script)] if script.exists() else [sys.executable, "-m", "canaryctl"]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "gate.json"
        started = time.perf_counter()
        done = subprocess.run(
            [*head, "gate", runbook, "--json-file", str(out), "-o", "json"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            check=False,
        )
        wall = time.perf_counter() - started
        report = json.loads(out.read_text())
    ev, cost = report["eval"], report["cost_projection"]
    return {
        "name": report["name"],
        "outcome": report["outcome"],
        "exit_code": done.returncode,
        "confidence": ev["confidence"],
        "baseline": {k: ev["baseline"][k] for k in ("items", "right", "score")},
        "canary": {k: ev["canary"][k] for k in ("items", "right", "score", "latency_p95_seconds")},
        "difference": ev["difference"],
        "difference_interval": ev["difference_interval"],
        "monthly_queries": cost["monthly_queries"],
        "monthly_usd": {arm: cost[arm]["monthly_usd"] for arm in ("baseline", "canary")},
        "wall_seconds": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    record.add_arguments(parser)
    args = parser.parse_args()
    before = record.machine()
    runs = {}
    for runbook in RUNBOOKS:
        runs[runbook] = gate(runbook)
        print(json.dumps(runs[runbook]))
    record.write("gate_runs", {"runbooks": runs}, args, before=before)


if __name__ == "__main__":
    main()
