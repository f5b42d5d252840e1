"""What the worst documents of at most 1 MiB cost to validate or refuse: wall time and memory.

Each case is built here and parsed by `parse_document` (what `validate` and the API's submit
call) in a fresh Python process, so its memory is its own: the figure is the growth of the
process' peak resident size (ru_maxrss) over what importing canaryctl and validating a small
Rollout already took. The time is wall clock and the process' own CPU time (which other load
on a shared machine disturbs less). A case runs `--runs` times and the slowest run and largest
growth are kept. The aim: every case under 1 s of CPU and 100 MiB.

    python benchmarks/document_limits.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import record

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
AIM_SECONDS, AIM_MIB = 1.0, 100
HEAD = "apiVersion: canaryctl/v1\nkind: Rollout\nmetadata: {name: worst}\n"
SMALL = (ROOT / "runbooks" / "support-bot-gpt4o-mini.yaml").read_text()


def _bomb(use: str) -> str:
    """The issue's bomb: ten anchors, each a list of ten aliases of the one before."""
    anchors = "".join(
        f"x{i}: &x{i} [" + ",".join([f"*x{i - 1}" if i else "a"] * 10) + "]\n" for i in range(10)
    )
    return HEAD + anchors + use


def _fill(line: Callable[[int], str], prefix: str = HEAD, limit: int = MIB) -> str:
    """`prefix` then `line(i)` for i = 0, 1, ... as long as the whole stays within `limit`."""
    parts, size, i = [prefix], len(prefix), 0
    while size + len(piece := line(i)) <= limit:
        parts.append(piece)
        size += len(piece)
        i += 1
    return "".join(parts)


CASES: dict[str, Callable[[], str]] = {
    "alias bomb quoted in a pause": lambda: _bomb("spec: {steps: [{pause: *x9}]}\n"),
    "alias bomb as the spec": lambda: _bomb("spec: *x9\n"),
    "20,000 unknown keys (the issue's case)": lambda: HEAD
    + "spec:\n"
    + "".join(f"  k{i}: 1\n" for i in range(20_000)),
    "4,990 unknown keys, each reported": lambda: HEAD
    + "spec:\n"
    + "".join(f"  k{i}: 1\n" for i in range(4_990)),
    "1 MiB flow list of numbers": lambda: _fill(lambda i: "1,", HEAD + "spec: [", MIB - 1) + "]",
    "1 MiB of unknown keys": lambda: _fill(lambda i: f"  key{i}: value\n", HEAD + "spec:\n"),
    "1 MiB string as the name": lambda: HEAD.replace("worst", "x" * (MIB - 200)),
    "1 MiB of comments": lambda: _fill(lambda i: "# a comment line\n", SMALL),
    "nesting 5,000 deep": lambda: HEAD + "spec: " + "[" * 5_000 + "]" * 5_000 + "\n",
    "nesting 60 deep, 1 MiB wide": lambda: _fill(
        lambda i: "  " * 60 + f"k{i}: 1\n",
        HEAD + "spec:\n" + "".join("  " * d + f"l{d}:\n" for d in range(1, 60)),
    ),
    "4,000 explicit tags (!!bool x)": lambda: HEAD
    + "spec:\n"
    + "".join(f"  k{i}: !!bool x\n" for i in range(4_000)),
    "6,000 steps out of range": lambda: SMALL.replace(
        "  steps:\n", "  steps:\n" + "    - set_weight: 500\n" * 6_000
    ),
    "1 MiB of 5,000-digit integers": lambda: _fill(
        lambda i: f"  k{i}: {'9' * 5000}\n", HEAD + "spec:\n"
    ),
}
"""Each case and how it is written; none is more than 1 MiB."""

CHILD = """
import json, resource, sys, time
from canaryctl.errors import InvalidDocument
from canaryctl.runbook import parse_document
text = sys.stdin.read()
try:
    parse_document(sys.argv[1], "small.yaml")
except InvalidDocument:
    pass
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started, cpu = time.perf_counter(), time.process_time()
try:
    parse_document(text, "case.yaml")
    outcome, problems, first = "valid", 0, ""
except InvalidDocument as exc:
    outcome, problems, first = "refused", len(exc.problems), str(exc.problems[0])[:160]
seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "kib": after - before, "outcome": outcome,
                  "problems": problems, "first": first}))
"""


def run_case(text: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, SMALL],
        input=text,
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    record.add_arguments(parser)
    args = parser.parse_args()
    before = record.machine()
    cases = {}
    for name, build in CASES.items():
        text = build()
        size = len(text.encode())
        assert size <= MIB, (name, size)
        runs = [run_case(text) for _ in range(args.runs)]
        cases[name] = {
            "bytes": size,
            "seconds": max(float(r["seconds"]) for r in runs),  # type: ignore[arg-type]
            "cpu_seconds": max(float(r["cpu_seconds"]) for r in runs),  # type: ignore[arg-type]
            "mib": max(int(r["kib"]) for r in runs) / 1024,  # type: ignore[call-overload]
            "outcome": runs[0]["outcome"],
            "problems": runs[0]["problems"],
            "first_problem": runs[0]["first"],
        }
        print(f"{name}: {cases[name]}", file=sys.stderr)
    results = {
        "runs": args.runs,
        "aim_seconds": AIM_SECONDS,
        "aim_mib": AIM_MIB,
        "cases": cases,
        "all_within_aim": all(
            c["cpu_seconds"] < AIM_SECONDS and c["mib"] < AIM_MIB for c in cases.values()
        ),
    }
    record.write("document_limits", results, args, before=before, packages=("pyyaml", "pydantic"))


if __name__ == "__main__":
    main()
