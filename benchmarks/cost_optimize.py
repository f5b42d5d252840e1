"""The worked example of docs/cost-optimize.md: the lab's 10M queries a month over the free,
paid and enterprise tiers, planned by `canaryctl cost optimize`, then served by the lab.

1. Every model of the lab (canaryctl/defaults/lab.yaml) answers the built-in arithmetic
   benchmark (400 items) straight from its provider, as `canaryctl gate` asks; the scores are
   written to canaryctl/defaults/cost-optimize-evals.json, the eval file the shipped example
   document (canaryctl/defaults/cost-optimize.yaml) reads.
2. The real command, `canaryctl cost optimize cost-optimize.yaml -o json --runbooks DIR`, runs
   in a fresh process on a copy of the shipped document and its files beside these scores; its
   JSON is kept, with the runbooks it wrote.
3. The plan is served by a real gateway in front of the lab (the flag's tier rules set to the
   plan's splits) under traffic with each tier a third of the requests, so that every tier has
   enough answers to judge; per tier the gateway's own metrics give the p95, the share of graded
   answers that were right, and the cost per query.

    python benchmarks/cost_optimize.py   # writes benchmarks/results/cost_optimize.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import record
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.cost_lab

from canaryctl.runbook import Lab, load_document  # noqa: E402
from tests.cost_lab import evaluate, run_plan  # noqa: E402

DEFAULTS = ROOT / "canaryctl" / "defaults"
DOCUMENT = DEFAULTS / "cost-optimize.yaml"
EVALS = DEFAULTS / "cost-optimize-evals.json"


def optimize(document: Path, runbooks: Path) -> tuple[dict[str, Any], int, float]:
    script = Path(sys.executable).parent / "canaryctl"
    head = [str(script)] if script.exists() else [sys.executable, "-m", "canaryctl"]
    started = time.perf_counter()
    done = subprocess.run(
        [*head, "cost", "optimize", str(document), "-o", "json", "--runbooks", str(runbooks)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise SystemExit(f"cost optimize failed (exit {done.returncode}): {done.stderr}")
    return json.loads(done.stdout), done.returncode, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=400, help="benchmark items per model")
    parser.add_argument("--seconds", type=float, default=30.0, help="traffic for the re-run")
    parser.add_argument("--rate", type=float, default=150.0, help="requests per second")
    record.add_arguments(parser)
    args = parser.parse_args()
    before = record.machine()
    lab = load_document(DEFAULTS / "lab.yaml", expect=Lab)
    scores = evaluate(lab, items=args.items)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)  # the shipped document beside copies of its files and these scores
        for name in (DOCUMENT.name, "lab.yaml", "flags.json"):
            shutil.copy(DEFAULTS / name, folder / name)
        (folder / EVALS.name).write_text(json.dumps(scores, indent=2) + "\n")
        report, exit_code, wall = optimize(folder / DOCUMENT.name, folder / "runbooks")
        runbooks = [
            {"tier": entry["tier"], "name": entry["name"], **_steps(entry["document"])}
            for entry in report["runbooks"]
        ]
        plans = {t["tier"]: t["plan"]["split"] for t in report["tiers"] if t["plan"]}
        thirds = dict.fromkeys(plans, 1.0)
        measured = run_plan(lab, folder, plans, seconds=args.seconds, rate=args.rate, tiers=thirds)
    results = {
        "document": str(DOCUMENT.relative_to(ROOT)),
        "items": args.items,
        "traffic": {"seconds": args.seconds, "rate": args.rate, "tiers": "a third each"},
        "exit_code": exit_code,
        "optimize_wall_seconds": wall,
        "report": {k: v for k, v in report.items() if k != "runbooks"},
        "runbooks": runbooks,
        "measured": measured,
    }
    print(json.dumps(results["measured"]))
    record.write("cost_optimize", results, args, before=before, packages=("scipy",))
    EVALS.write_text(json.dumps(scores, indent=2) + "\n")  # after: the versions are the code's


def _steps(document: dict[str, Any]) -> dict[str, Any]:
    spec = document["spec"]
    return {
        "baseline": spec["flag"]["baseline"],
        "canary": spec["flag"]["canary"],
        "weights": [s["set_weight"] for s in spec["steps"] if "set_weight" in s],
        "finish": spec.get("finish", "promote"),
        "yaml_lines": len(yaml.safe_dump(document).splitlines()),
    }


if __name__ == "__main__":
    main()
