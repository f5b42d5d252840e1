"""What the shipped experiment example says when it is run as docs/experiments.md tells a user to.

Serves runbooks/lab.yaml (its providers, gateway and 40 req/s of traffic; the gateway on a free
port and a copy of runbooks/flags.json, so nothing in the checkout moves), runs
`canaryctl experiment run runbooks/support-bot-experiment.yaml` in a fresh process (the
document as shipped, only its scrape target pointed at that port and its flag file at the
copy) until it ends, or for `--minutes` and then Ctrl-C (SIGINT: the flag is put back, exit
130), and keeps the printed `experiment status -o text`, the exit code and the wall clock.
docs/experiments.md shows that output (benchmarks/tables.py: experiment-example). On the shipped
lab a 0.02 gap in quality takes over an hour to decide, so the docs' run is bounded.

    python benchmarks/experiment_example.py [--minutes 20]   # writes .../experiment_example.json
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import record
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from canaryctl.lab import LabStack  # noqa: E402
from canaryctl.runbook import Lab  # noqa: E402

LAB = ROOT / "runbooks" / "lab.yaml"
EXPERIMENT = ROOT / "runbooks" / "support-bot-experiment.yaml"


def _canaryctl(*args: str) -> list[str]:
    script = Path(sys.executable).parent / "canaryctl"
    head = [str(script)] if script.exists() else [sys.executable, "-m", "canaryctl"]
    return [*head, *args]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, help="stop the run (Ctrl-C) after this long")
    record.add_arguments(parser)
    args = parser.parse_args()
    before = record.machine()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        flags = work / "flags.json"
        shutil.copy(ROOT / "runbooks" / "flags.json", flags)
        lab = yaml.safe_load(LAB.read_text())
        lab["spec"]["gateway"]["listen"] = "127.0.0.1:0"
        document = yaml.safe_load(EXPERIMENT.read_text())
        document["spec"]["flag"]["path"] = str(flags)
        with LabStack(Lab.model_validate(lab), flags_path=flags) as stack:
            document["spec"]["metrics"]["targets"] = [stack.metrics_url]
            path = work / EXPERIMENT.name
            path.write_text(yaml.safe_dump(document, sort_keys=False))
            state = str(work / "state.db")
            started = time.perf_counter()
            run = subprocess.Popen(
                _canaryctl("experiment", "run", str(path), "--state", state, "-o", "json"),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                run.wait(None if args.minutes is None else args.minutes * 60)
            except subprocess.TimeoutExpired:
                run.send_signal(signal.SIGINT)  # what a person's Ctrl-C does: the flag goes back
                run.wait(120)
            wall = time.perf_counter() - started
        status = subprocess.run(
            _canaryctl("experiment", "status", "--state", state, "-o", "text"),
            capture_output=True,
            text=True,
            check=True,
        )
    results = {
        "lab": str(LAB.relative_to(ROOT)),
        "experiment": str(EXPERIMENT.relative_to(ROOT)),
        "exit_code": run.returncode,
        "stopped_after_minutes": args.minutes,
        "wall_seconds": wall,
        "status_text": status.stdout,
    }
    print(status.stdout)
    record.write("experiment_example", results, args, before=before)


if __name__ == "__main__":
    main()
