"""The quality SLO on judge scores alone, end to end: lab traffic posts no feedback at all, the
route's judge (the lab's, 5% wrong on purpose) grades the answers, and `canaryctl rollout run`
rolls back a canary that answers worse."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from canaryctl.cli import main
from canaryctl.lab import LabStack
from canaryctl.runbook.lab import LabSpec
from tests.test_e2e import unversioned
from tests.test_e2e_quality import FAST, measured_apart, rollout
from tests.test_gateway import metric

pytestmark = pytest.mark.e2e

MakeLab = Callable[..., LabSpec]
WriteFlags = Callable[..., Path]


def test_a_canary_answering_worse_is_rolled_back_on_judge_scores_alone(
    tmp_path: Path, make_lab: MakeLab, write_flags: WriteFlags
) -> None:
    flags = write_flags(["base", "worse"])
    original = flags.read_text()
    providers = [
        {"name": "base", "latency": FAST, "quality": 0.95},
        {"name": "worse", "latency": FAST, "quality": 0.5},
        {"name": "judge", "latency": FAST, "judge": {"error_rate": 0.05}},
    ]
    traffic = {"route": "bot", "rate": 120, "users": 400, "feedback": 0.0}
    document = make_lab(providers, traffic=traffic).model_dump(mode="json", exclude_defaults=True)
    document["gateway"]["routes"][0]["judge"] = {"model": "judge", "sample": 1.0}
    with LabStack(LabSpec.model_validate(document)) as stack:
        path = rollout(tmp_path, flags, stack.metrics_url, "threshold", "worse")
        state = str(tmp_path / "state.db")
        result = CliRunner().invoke(
            main, ["rollout", "run", str(path), "--state", state, "-o", "json"]
        )
        assert stack.traffic is not None
        assert not stack.traffic.snapshot().scored  # no feedback was posted
        assert metric(stack, "llm_judge_requests_total", outcome="ok") > 0
        assert metric(stack, "llm_quality_score_count", variant="worse") > 0

    assert result.exit_code == 1, result.output
    events = [json.loads(line) for line in result.output.splitlines()]
    assert events[-1]["event"] == "finish" and events[-1]["outcome"] == "rolled_back"
    assert unversioned(flags.read_text()) == unversioned(original)
    failing = next(
        e
        for e in events
        if e["event"] == "analysis" and any(c["outcome"] == "fail" for c in e["checks"])
    )
    quality = next(c for c in failing["checks"] if c["metric"] == "quality_score")
    assert quality["outcome"] == "fail"
    # The judge grades a right answer 1 and a wrong one 0, and 5% of its grades the other way:
    # it scores the base 0.95 x 0.95 + 0.05 x 0.05 = 0.905 a grade, the worse one 0.5.
    measured_apart(Path(state), quality, ("worse", 0.5), ("base", 0.905))
