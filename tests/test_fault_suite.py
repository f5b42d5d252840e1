"""The fault suite's short version (benchmarks/fault_suite.py with a few faults): controllers and
PostgreSQL killed, frozen and restarted under live rollouts, and every invariant holds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from postgres_server import postgres_bindir

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent


def test_a_few_random_faults_break_no_invariant(tmp_path: Path) -> None:
    postgres_bindir()  # skips (or fails in CI) without PostgreSQL
    out = tmp_path / "fault_suite.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/fault_suite.py", "--faults", "3", "--controllers", "2",
         "--seed", "7", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())["results"]
    assert results["faults_injected"] == 3
    assert results["violations_total"] == 0, results["details"]
    assert results["runs"] >= 1 and not results["details"]
