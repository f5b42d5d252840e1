"""How long the real commands take to start and finish, run the way a user runs them.

Each command is started in a fresh process again and again (like hyperfine: a few warm-up runs,
then `--runs` timed ones, the OS file cache warm), and timed from spawn to exit; the CPU time is
the child's own (user + system, from wait4), which other load on the machine disturbs less than
the wall clock. canaryctl's modules are byte-compiled first, as `pip install` leaves them (an
editable install under PYTHONDONTWRITEBYTECODE would compile every module on every start). The
aim: `canaryctl validate` and every `--help` under 0.25 s. A command's `--help` imports its own
module and click, not what the command runs with (tests/test_cli_startup.py checks that for each
one); `rollout run --help` and `validate --help` stand for them here, a bare interpreter for scale.

    python benchmarks/startup.py [--runs 20] [--warmup 3]
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import record

ROOT = Path(__file__).resolve().parent.parent
RUNBOOK = "runbooks/support-bot-gpt4o-mini.yaml"
AIM_SECONDS = 0.25


def canaryctl() -> list[str]:
    """The console script installed next to this interpreter, as a user would call it."""
    script = Path(sys.executable).parent / "canaryctl"
    return [str(script)] if script.exists() else [sys.executable, "-m", "canaryctl"]


def commands() -> dict[str, list[str]]:
    cli = canaryctl()
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        "canaryctl --help": [*cli, "--help"],
        f"canaryctl validate {RUNBOOK}": [*cli, "validate", RUNBOOK],
        "canaryctl rollout --help": [*cli, "rollout", "--help"],
        "canaryctl rollout run --help": [*cli, "rollout", "run", "--help"],
        "canaryctl validate --help": [*cli, "validate", "--help"],
    }


def run_once(command: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run; a failing command stops the benchmark."""
    started = time.perf_counter()
    child = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited with {child.returncode}")
    return wall, usage.ru_utime + usage.ru_stime


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    record.add_arguments(parser)
    args = parser.parse_args()
    before = record.machine()
    compileall.compile_dir(ROOT / "canaryctl", quiet=1)
    results: dict[str, object] = {
        "runs": args.runs,
        "aim_seconds": AIM_SECONDS,
        "bytecode": "compiled before the runs",
        "commands": {},
    }
    print(f"| command | median s | p90 s | min s | CPU median s | ({args.runs} runs) |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for name, command in commands().items():
        for _ in range(args.warmup):
            run_once(command)
        walls, cpus = zip(*(run_once(command) for _ in range(args.runs)), strict=True)
        row = {
            "median_seconds": statistics.median(walls),
            "p90_seconds": quantile(list(walls), 0.9),
            "min_seconds": min(walls),
            "cpu_median_seconds": statistics.median(cpus),
        }
        results["commands"][name] = row  # type: ignore[index]
        print(
            f"| {name} | {row['median_seconds']:.3f} | {row['p90_seconds']:.3f} "
            f"| {row['min_seconds']:.3f} | {row['cpu_median_seconds']:.3f} | |"
        )
    record.write(
        "startup", results, args, before=before, packages=("click", "pydantic", "lazy-loader")
    )


if __name__ == "__main__":
    main()
