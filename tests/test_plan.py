"""`canaryctl plan`: its chances agree with facts computed without it, it warns of holds too short
for the traffic (and names one long enough), and its command line fails cleanly on bad input."""

from __future__ import annotations

import json
import math
import re
import shlex
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from scipy.stats import binom, poisson

from canaryctl.cli.main import main
from canaryctl.plan import operating_characteristic
from canaryctl.runbook import Rollout
from canaryctl.simulation import Traffic, simulate

ROOT = Path(__file__).resolve().parent.parent


def rollout(
    steps: list[dict[str, Any]],
    slos: list[dict[str, Any]],
    **analysis: Any,
) -> Rollout:
    return Rollout.model_validate(
        {
            "kind": "Rollout",
            "metadata": {"name": "planned"},
            "spec": {
                "flag": {
                    "provider": "file",
                    "path": "/tmp/flags.json",
                    "key": "k",
                    "baseline": "old",
                    "canary": "new",
                },
                "metrics": {"provider": "scrape", "targets": ["http://127.0.0.1:9/metrics"]},
                "slos": slos,
                "analysis": {"interval": "30s", **analysis},
                "steps": steps,
            },
        }
    )


def within_binomial(share: float, expected: float, runs: int) -> bool:
    """`share` of `runs` is within 4.5 standard errors of `expected` (a false alarm about once
    in 150,000 comparisons), or within one rollout of it when the error is near zero."""
    error = math.sqrt(max(expected * (1 - expected), 1e-12) / runs)
    return abs(share - expected) <= max(4.5 * error, 1 / runs)


def test_the_plan_agrees_with_the_binomial_chance_that_one_threshold_analysis_passes() -> None:
    # One weight (100%), held one interval, one threshold check: promoted exactly when the
    # window has min_requests and its error rate is at most the bound, which is a sum over
    # Poisson request counts of binomial tails. Nothing of the simulation is reused here.
    runbook = rollout(
        [{"set_weight": 100}],
        [{"metric": "error_rate", "max": 0.03}],
        method="threshold",
        min_requests=250,
        inconclusive_limit=0,
    )
    rps, runs = 10.0, 300
    plan = operating_characteristic(runbook, rps=rps, error_rate=0.01, p95=1.0, runs=runs, seed=7)
    mean = rps * 30  # requests in the one interval at 100%
    counts = np.arange(250, 600)
    seen = 0
    for case in plan.cases:
        p = case.case.canary.error_rate
        passing = binom.cdf(np.floor(0.03 * counts + 1e-9), counts, p)
        expected = float(np.sum(poisson.pmf(counts, mean) * passing))
        share = case.share("promoted")
        assert within_binomial(share, expected, runs), (case.case.name, share, expected)
        assert case.share("promoted") + case.share("rolled_back") == pytest.approx(1.0)
        seen += 1
    assert seen == 5  # equal, 1.5x, 2x, 4x errors, at the bound


def test_a_canary_failing_every_request_is_never_promoted() -> None:
    # Whatever the runbook says, a model that never answered is never promoted (the built-in
    # check); the runbook here would pass anything else.
    runbook = rollout(
        [{"set_weight": 50}, {"pause": "1m"}, {"set_weight": 100}],
        [{"metric": "latency_p95_seconds", "max": 30.0}],
        min_requests=10,
    )
    rng = np.random.default_rng(3)
    broken, healthy = Traffic(1.0, 1.0), Traffic(0.0, 1.0)
    ends = [simulate(runbook.spec, rng, 20.0, broken, healthy) for _ in range(50)]
    assert {end.outcome for end in ends} == {"rolled_back"}
    # And through the plan: 4x a 25% baseline error rate is a canary failing every request.
    plan = operating_characteristic(runbook, rps=20.0, error_rate=0.25, runs=30, seed=3)
    worst = next(c for c in plan.cases if c.case.name == "errors_x4")
    assert worst.case.canary.error_rate == 1.0 and worst.counts["promoted"] == 0


def test_a_hold_too_short_for_the_traffic_is_warned_with_one_long_enough() -> None:
    # 5% of 4 req/s is 0.2 canary req/s: 200 requests take 1,000 s at least, so a 2-minute hold
    # can never decide, and no hold under 1,000 s can be the one that is long enough.
    runbook = rollout(
        [{"set_weight": 5}, {"pause": "2m"}, {"set_weight": 100}, {"pause": "2m"}],
        [{"metric": "error_rate", "max": 0.05}],
        method="threshold",
        min_requests=200,
    )
    plan = operating_characteristic(runbook, rps=4.0, error_rate=0.005, runs=20, seed=5)
    short = [w for w in plan.warnings if w.weight == 5]
    assert len(short) == 1
    warning = short[0]
    assert warning.hold == 120 and warning.decided_in_hold == 0
    assert warning.needed is not None and warning.needed >= 200 / (4.0 * 0.05)
    assert warning.needed % 30 == 0  # whole intervals
    assert "too short to decide at 4 req/s" in warning.message(4.0)
    # At 100% the same 2 minutes hold 480 requests: long enough, not warned.
    assert [w.weight for w in plan.warnings] == [5]


def test_a_hold_long_enough_is_not_warned() -> None:
    runbook = rollout(
        [{"set_weight": 50}, {"pause": "5m"}],
        [{"metric": "error_rate", "max": 0.05}],
        method="threshold",
        min_requests=50,
    )
    plan = operating_characteristic(runbook, rps=20.0, runs=20, seed=5)
    assert plan.warnings == ()
    equal = plan.cases[0]
    assert equal.case.name == "equal" and equal.share("promoted") == 1.0


# -- the command line ---------------------------------------------------------------------------


@pytest.fixture
def runbook_file(tmp_path: Path) -> Path:
    path = tmp_path / "rollout.yaml"
    doc = rollout(
        [{"set_weight": 50}, {"pause": "1m"}, {"set_weight": 100}],
        [{"metric": "error_rate", "max": 0.05}, {"metric": "latency_p95_seconds", "max": 2.0}],
        method="threshold",
        min_requests=50,
    ).model_dump(mode="json", exclude_none=True, by_alias=True)
    path.write_text(yaml.safe_dump(doc))
    return path


def test_plan_json_says_every_case_and_step(runbook_file: Path) -> None:
    result = CliRunner().invoke(
        main, ["plan", str(runbook_file), "--rps", "20", "--runs", "10", "-o", "json"]
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["rps"] == 20 and body["runs"] == 10 and body["seed"] == 1
    names = [case["name"] for case in body["cases"]]
    assert names == [
        "equal",
        "errors_x1.5",
        "errors_x2",
        "errors_x4",
        "p95_x1.5",
        "p95_x2",
        "errors_at_bound",
        "p95_at_bound",
    ]
    for case in body["cases"]:
        assert case["promoted"] + case["rolled_back"] + case["paused"] == pytest.approx(1.0)
        assert sum(case["counts"].values()) == 10
        assert [s["weight"] for s in case["steps"]] == [50, 100]
        assert set(case["seconds_to_decide"]) == {"median", "p90"}
    assert body["warnings"] == [] and body["not_simulated"] == []


def test_plan_text_is_a_table_and_is_seeded(runbook_file: Path) -> None:
    args = ["plan", str(runbook_file), "--rps", "20", "--runs", "8", "-o", "text"]
    first, again = CliRunner().invoke(main, args), CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    assert "equal to the baseline" in first.output and "at 50%" in first.output
    assert first.output == again.output


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--rps", "0"], "--rps"),
        (["--rps", "-3"], "--rps"),
        (["--rps", "nan"], "--rps"),
        (["--rps", "inf"], "--rps"),
        (["--rps", "ten"], "'--rps'"),
        ([], "'--rps'"),
        (["--rps", "5", "--error-rate", "1.5"], "--error-rate"),
        (["--rps", "5", "--p95", "0"], "--p95"),
        (["--rps", "5", "--runs", "0"], "--runs"),
    ],
)
def test_bad_input_exits_2_naming_the_option(
    runbook_file: Path, args: list[str], named: str
) -> None:
    result = CliRunner().invoke(main, ["plan", str(runbook_file), *args])
    assert result.exit_code == 2, result.output
    assert named in result.output and "Traceback" not in result.output


def test_a_runbook_that_is_not_one_exits_2(tmp_path: Path) -> None:
    missing = CliRunner().invoke(main, ["plan", str(tmp_path / "none.yaml"), "--rps", "5"])
    assert missing.exit_code == 2 and "none.yaml" in missing.output
    guard = CliRunner().invoke(main, ["plan", str(ROOT / "runbooks/lab.yaml"), "--rps", "5"])
    assert guard.exit_code == 2 and "Traceback" not in guard.output


def test_the_command_in_docs_plan_md_runs_as_written() -> None:
    text = (ROOT / "docs" / "plan.md").read_text()
    block = re.search(r"```console\n\$ (canaryctl plan [^\n]+)\n", text)
    assert block is not None
    args = shlex.split(block[1])[1:]
    result = CliRunner().invoke(main, [*args, "--runs", "4"])  # the last --runs wins: lean
    assert result.exit_code == 0, result.output
    assert "equal to the baseline" in result.output and "p95 at the bound (2s)" in result.output


def test_the_traffic_model_puts_the_p95_where_it_is_told() -> None:
    model = Traffic(0.01, 1.4)
    assert model.slower_than(1.4) == pytest.approx(0.05)
    assert model.slower_than(1.4 / 2.2) == pytest.approx(0.5)  # the median
    shares = model.bucket_shares()
    assert sum(shares) == pytest.approx(1.0) and min(shares) >= 0


def test_a_runbook_with_nothing_the_plan_simulates_exits_2_naming_its_slos(tmp_path: Path) -> None:
    path = tmp_path / "quality.yaml"
    doc = rollout([{"set_weight": 50}], [{"metric": "quality_score", "min": 0.5}]).model_dump(
        mode="json", exclude_none=True, by_alias=True
    )
    path.write_text(yaml.safe_dump(doc))
    result = CliRunner().invoke(main, ["plan", str(path), "--rps", "5"])
    assert result.exit_code == 2
    assert "none of its SLOs (quality_score >= 0.5) is on a metric the plan simulates" in (
        result.output
    )
