"""Where a benchmark's figures go: one JSON file per benchmark under benchmarks/results/, with
what a reader needs to judge them (the command line, the date, the versions measured, the
machine and how loaded it was). `benchmarks/tables.py` turns these files into the tables of
README.md and docs/; nothing else writes a figure there.

Each benchmark calls `add_arguments(parser)` (for `--out` and `--note`) and, at the end,
`write(name, results, args)`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["RESULTS", "add_arguments", "machine", "write"]

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
LOADED = 0.5
"""A machine whose 1-minute load average, before the run, is above this share of its cores
was busy with other work: its timings are marked `loaded` and the tables say so."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", type=Path, help="where the JSON goes (default benchmarks/results/NAME.json)"
    )
    parser.add_argument("--note", default="", help="a remark stored with the figures")


def machine() -> dict[str, Any]:
    """The facts about the machine taken before a run (the load average is others' load)."""
    cpus = os.cpu_count() or 1
    load = [round(v, 2) for v in os.getloadavg()]
    return {
        "cpus": cpus,
        "platform": platform.platform(),
        "processor": platform.machine(),
        "load_average_before": load,
        "loaded": load[0] > LOADED * cpus,
    }


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    return done.stdout.strip()


def versions(packages: tuple[str, ...] = ()) -> dict[str, Any]:
    """Python, canaryctl (version, commit, and whether the code measured differs from it)."""
    found = {}
    for name in ("canaryctl", *packages):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    # Results are outputs, not the code measured: one run's fresh JSON must not mark the next.
    dirty = _git(
        "status", "--porcelain", "-uno", "--", "canaryctl", "benchmarks", "pyproject.toml",
        ":(exclude)benchmarks/results",
    )  # fmt: skip
    return {
        "python": platform.python_version(),
        "canaryctl_commit": _git("rev-parse", "--short=12", "HEAD") or None,
        "uncommitted_changes": bool(dirty),
        "packages": found,
    }


def write(
    name: str,
    results: dict[str, Any],
    args: argparse.Namespace,
    *,
    before: dict[str, Any],
    packages: tuple[str, ...] = (),
    extra_versions: dict[str, Any] | None = None,
) -> Path:
    """Store one run's figures; `before` is `machine()` taken before the run started."""
    after = [round(v, 2) for v in os.getloadavg()]
    record = {
        "benchmark": name,
        "command": shlex.join(["python", *_command(sys.argv)]),
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "versions": {**versions(packages), **(extra_versions or {})},
        "machine": {**before, "load_average_after": after},
        "note": args.note,
        "results": results,
    }
    path = args.out or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, allow_nan=False) + "\n")
    print(f"wrote {path}", file=sys.stderr)
    return path


def _command(argv: list[str]) -> list[str]:
    """The command that measured, as typed from the repository root: the script as a relative
    path, without `--out` and `--note` (they change where the figures go, not the figures)."""
    script = Path(argv[0]).resolve()
    words = [str(script.relative_to(ROOT)) if script.is_relative_to(ROOT) else argv[0]]
    rest = iter(argv[1:])
    for word in rest:
        if word in ("--out", "--note"):
            next(rest, None)
        elif not word.startswith(("--out=", "--note=")):
            words.append(word)
    return words
