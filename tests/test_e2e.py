"""End to end over real loopback HTTP: lab providers, the gateway with the real LaunchDarkly SDK,
traffic, and `canaryctl rollout run` rolling back a bad canary and promoting a good one."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from gateway_probe import serves_soon

from canaryctl.cli import main
from canaryctl.lab import LabStack
from canaryctl.runbook import Lab, parse_document

pytestmark = pytest.mark.e2e

HELLO = {"role": "user", "content": "Hello"}
DEFAULTS = resources.files("canaryctl") / "defaults"


def unversioned(text: str) -> str:
    return re.sub(r'"version": \d+', '"version": _', text)


def runbook(tmp_path: Path, name: str, canary: str, flags: Path, metrics_url: str) -> Path:
    """A quick runbook: 20% then 100%, judged on 60 requests per variant every second."""
    document = {
        "apiVersion": "canaryctl/v1",
        "kind": "Rollout",
        "metadata": {"name": name},
        "spec": {
            "flag": {
                "provider": "file",
                "path": str(flags),
                "key": "support-bot-model",
                "baseline": "gpt-4-turbo",
                "canary": canary,
            },
            "metrics": {"provider": "scrape", "targets": [metrics_url], "route": "support-bot"},
            "slos": [
                {"metric": "error_rate", "max": 0.03},
                {"metric": "latency_p95_seconds", "max": 2.0},
                {"metric": "error_rate", "compare": "baseline", "max_increase": 0.02},
            ],
            "analysis": {
                "interval": "1s",
                "min_requests": 60,
                "inconclusive_limit": 120,  # a bound, not a pace: a loaded lab serves slowly
                "method": "threshold",
            },
            "steps": [{"set_weight": 20}, {"pause": "6s"}, {"set_weight": 100}, {"pause": "2s"}],
        },
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_rollout_run_rolls_back_a_bad_canary_and_promotes_a_good_one(tmp_path: Path) -> None:
    flags = tmp_path / "flags.json"
    original = (DEFAULTS / "flags.json").read_text()
    flags.write_text(original)
    lab = parse_document((DEFAULTS / "lab.yaml").read_text(), "lab.yaml", expect=Lab)
    state = tmp_path / "state.db"
    cli = CliRunner()

    with LabStack(lab, flags_path=flags) as stack:
        bad = runbook(tmp_path, "to-mixtral", "mixtral-8x7b", flags, stack.metrics_url)
        result = cli.invoke(main, ["rollout", "run", str(bad), "--state", str(state), "-o", "json"])
        assert result.exit_code == 1, result.output
        events = [json.loads(line) for line in result.output.splitlines()]
        assert events[-1]["event"] == "finish"
        assert events[-1]["outcome"] == "rolled_back"
        assert any(
            c["outcome"] == "fail" for e in events if e["event"] == "analysis" for c in e["checks"]
        )
        # Restored byte for byte but for the version, which only moves forward.
        assert unversioned(flags.read_text()) == unversioned(original)
        serves_soon(stack, {"gpt-4-turbo"}, users=60)

        good = runbook(tmp_path, "to-gpt4o-mini", "gpt-4o-mini", flags, stack.metrics_url)
        result = cli.invoke(
            main, ["rollout", "run", str(good), "--state", str(state), "-o", "json"]
        )
        assert result.exit_code == 0, result.output
        assert json.loads(result.output.splitlines()[-1])["outcome"] == "promoted"
        flag = json.loads(flags.read_text())["flags"]["support-bot-model"]
        assert flag["variations"][flag["fallthrough"]["variation"]] == "gpt-4o-mini"
        assert flag["version"] > 1
        serves_soon(stack, {"gpt-4o-mini"}, users=60)

    listed = cli.invoke(main, ["rollout", "list", "--state", str(state), "-o", "json"])
    assert listed.exit_code == 0, listed.output
    outcomes = {run["name"]: run["outcome"] for run in map(json.loads, listed.output.splitlines())}
    assert outcomes == {"to-mixtral": "rolled_back", "to-gpt4o-mini": "promoted"}


def test_demo_tells_the_whole_story_and_exits_zero() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "canaryctl", "demo", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    summary = json.loads(done.stdout.splitlines()[-1])
    assert summary["event"] == "summary"
    assert summary["ok"] is True
    assert [(r["name"], r["outcome"]) for r in summary["rollouts"]] == [
        ("support-bot-mixtral", "rolled_back"),
        ("support-bot-gpt4o-mini", "promoted"),
    ]


def test_sequential_analysis_rolls_back_a_bad_canary_on_the_evidence(tmp_path: Path) -> None:
    """The gateway's real counters, scraped, feed the e-processes: Mixtral's 8% errors (and p95
    near 3 s) against a baseline whose fallbacks hide its own errors."""
    flags = tmp_path / "flags.json"
    original = (DEFAULTS / "flags.json").read_text()
    flags.write_text(original)
    lab = parse_document((DEFAULTS / "lab.yaml").read_text(), "lab.yaml", expect=Lab)
    with LabStack(lab, flags_path=flags) as stack:
        path = runbook(tmp_path, "to-mixtral", "mixtral-8x7b", flags, stack.metrics_url)
        document = yaml.safe_load(path.read_text())
        document["spec"]["slos"] = [
            {"metric": "error_rate", "compare": "baseline", "max_ratio": 1.5},
            {"metric": "latency_p95_seconds", "compare": "baseline", "max_ratio": 1.2},
        ]
        # As many of Mixtral's requests as a quiet machine's 20 s hold holds before a verdict
        # (12 a second): a loaded lab extends the hold instead of judging on less evidence.
        document["spec"]["analysis"].update(method="sequential", alpha=0.05, min_requests=200)
        document["spec"]["steps"] = [{"set_weight": 20}, {"pause": "20s"}]
        path.write_text(yaml.safe_dump(document))
        result = CliRunner().invoke(
            main, ["rollout", "run", str(path), "--state", str(tmp_path / "s.db"), "-o", "json"]
        )
        assert result.exit_code == 1, result.output
        events = [json.loads(line) for line in result.output.splitlines()]
        assert events[-1]["outcome"] == "rolled_back"
        assert "the canary is worse than allowed" in events[-1]["reason"]
        failed = [
            c
            for e in events
            if e["event"] == "analysis"
            for c in e["checks"]
            if c["outcome"] == "fail"
        ]
        assert failed and all(c["evidence"]["e_value"] >= 2 / 0.05 for c in failed)
        # Restored byte for byte but for the version, which only moves forward.
        assert unversioned(flags.read_text()) == unversioned(original)
