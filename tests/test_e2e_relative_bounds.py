"""Issue 23 end to end on the lab, over real loopback HTTP: a runbook whose only SLO is relative,
`{metric: error_rate, compare: baseline, max_increase: 0.01}`, against a baseline that never
fails. A canary failing half its requests was promoted ("no evidence the canary is worse") and a
healthy one was rolled back at 100% (`inconclusive: not enough data ()`); now the first is rolled
back on that SLO (at its first weight when the lab's traffic reaches the rate asked; the weight
is not asserted, since a loaded machine sends less) and the second is promoted through 100%,
judged there against the baseline's last window."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from canaryctl.cli import main
from canaryctl.lab import LabStack
from canaryctl.runbook.lab import LabSpec

pytestmark = pytest.mark.e2e

KEY = "bot-model"
FAST = {"median": 0.005, "p95": 0.02}
RELATIVE = {"metric": "error_rate", "compare": "baseline", "max_increase": 0.01}


def write_flags(path: Path, canary: str) -> Path:
    flag = {
        "key": KEY, "on": True, "variations": ["base", canary], "fallthrough": {"variation": 0},
        "offVariation": 0, "version": 1, "salt": KEY, "targets": [], "contextTargets": [],
        "rules": [], "prerequisites": [], "trackEvents": False,
    }  # fmt: skip
    path.write_text(json.dumps({"flags": {KEY: flag}, "segments": {}}))
    return path


def run(tmp_path: Path, canary_errors: float) -> tuple[int, list[dict[str, Any]]]:
    flags = write_flags(tmp_path / "flags.json", "new")
    providers = [
        {"name": "base", "latency": FAST},
        {"name": "new", "latency": FAST, "errors": {"rate": canary_errors}},
    ]
    lab = LabSpec.model_validate({
        "providers": providers,
        "gateway": {
            "listen": "127.0.0.1:0",
            "flags": {"provider": "file", "path": str(flags), "poll_interval": 0.1},
            "routes": [{"name": "bot", "flag": KEY, "default_model": "base"}],
            "models": [{"name": p["name"], "base_url": f"lab://{p['name']}"} for p in providers],
        },
        "traffic": {"route": "bot", "rate": 50, "users": 400},
    })  # fmt: skip
    with LabStack(lab) as stack:
        document = {
            "apiVersion": "canaryctl/v1",
            "kind": "Rollout",
            "metadata": {"name": "relative-only"},
            "spec": {
                "flag": {"provider": "file", "path": str(flags), "key": KEY,
                         "baseline": "base", "canary": "new"},
                "metrics": {"provider": "scrape", "targets": [stack.metrics_url], "route": "bot"},
                "slos": [RELATIVE],
                # inconclusive_limit: a bound, not a pace (a loaded lab serves slowly)
                "analysis": {"interval": "1s", "min_requests": 20, "inconclusive_limit": 60},
                "steps": [{"set_weight": 20}, {"pause": "6s"}, {"set_weight": 100},
                          {"pause": "3s"}],
            },
        }  # fmt: skip
        path = tmp_path / "relative-only.yaml"
        path.write_text(yaml.safe_dump(document))
        state = str(tmp_path / "state.db")
        result = CliRunner().invoke(
            main, ["rollout", "run", str(path), "--state", state, "-o", "json"]
        )
    events = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    return result.exit_code, events


def test_a_canary_failing_half_its_requests_against_a_clean_baseline_is_rolled_back(
    tmp_path: Path,
) -> None:
    code, events = run(tmp_path, 0.5)
    assert code == 1, events[-3:]
    finish = events[-1]
    assert finish["outcome"] == "rolled_back"
    assert finish["reason"].startswith("SLO failed: error_rate <= baseline + 0.01")


def test_a_healthy_canary_with_only_relative_slos_is_promoted_through_100(tmp_path: Path) -> None:
    code, events = run(tmp_path, 0.0)
    assert code == 0, events[-3:]
    analyses = [e for e in events if e["event"] == "analysis"]
    assert analyses[-1]["outcome"] == "pass"  # the last, at 100%
    [check] = analyses[-1]["checks"]
    assert "judged against the baseline's last window before this weight" in check["reason"]
