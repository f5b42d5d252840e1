"""How long `canaryctl demo` takes from start to exit, and how much CPU it uses.

Runs the real command (`canaryctl demo -o json`) `--runs` times in a fresh process each, and
keeps each run's wall clock, its CPU time (user + system of the process and its children, from
wait4), its exit code and the summary's verdict. The demo paces itself on the wall clock (its
analyses wait for traffic), so the wall time says little about speed and a lot about how the
rollouts are paced; the CPU time is what it costs.

    python benchmarks/demo_duration.py [--runs 3]   # writes benchmarks/results/demo_duration.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import record

ROOT = Path(__file__).resolve().parent.parent


def demo_command() -> list[str]:
    script = Path(sys.executable).parent / "canaryctl"
    head = [str(script)] if script.exists() else [sys.executable, "-m", "canaryctl"]
    return [*head, "demo", "-o", "json"]


def run_once() -> dict[str, object]:
    started = time.perf_counter()
    child = subprocess.Popen(demo_command(), cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    lines = child.stdout.read().splitlines()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    summary = json.loads(lines[-1]) if lines else {}
    return {
        "wall_seconds": wall,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "exit_code": os.waitstatus_to_exitcode(status),
        "ok": summary.get("ok"),
        "outcomes": {r["name"]: r["outcome"] for r in summary.get("rollouts", [])},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    record.add_arguments(parser)
    args = parser.parse_args()
    before = record.machine()
    runs = []
    for i in range(args.runs):
        runs.append(run_once())
        print(f"run {i + 1}: {json.dumps(runs[-1])}")
    record.write("demo_duration", {"runs": runs}, args, before=before)


if __name__ == "__main__":
    main()
