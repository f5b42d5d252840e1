"""Experiments end to end over real loopback HTTP: the lab's simulated providers behind the real
gateway, which evaluates the file flag with the LaunchDarkly SDK; `canaryctl experiment run`
writes the split, the lab's traffic grades answers back, the scrape source reads them per
variation and per tier. A better variation is decided and promoted; an experiment interrupted
mid-way (SIGINT to a real process) and one that ends undecided put the flag back as it was."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from canaryctl.cli import main
from canaryctl.controller.store import StateStore
from canaryctl.lab import LabStack
from canaryctl.metrics import Observation
from canaryctl.runbook.lab import LabSpec
from tests.conftest import FLAG_KEY
from tests.test_e2e import unversioned
from tests.test_report import rendered, screenshot

pytestmark = pytest.mark.e2e

MakeLab = Callable[..., LabSpec]
WriteFlags = Callable[..., Path]
FAST = {"median": 0.005, "p95": 0.02}
TRAFFIC = {"route": "bot", "rate": 150, "users": 600, "feedback": 1.0,
           "tiers": {"free": 0.6, "paid": 0.4}}  # fmt: skip


MIN_SAMPLES = 5
"""Scored answers a variation needs in an interval for it to count in the differences."""
RISK = 1e-9
"""The chance a look's estimate strays past `bernstein_margin`; a run looks at most 480 times
(240 s at 500 ms), so an estimate strays in under 1e-6 of runs whenever the run stops."""


def bernstein_margin(state: str, arms: dict[str, float]) -> tuple[int, float]:
    """(intervals, margin) for the paired quality difference of `arms` (variation: its lab
    quality, the better first): the intervals with enough scores on both sides, counted from the
    journaled observations, and the distance from the true difference the estimate (the mean
    of the intervals' differences) stays within but with probability RISK, by Bernstein's
    inequality on the independent 0/1 grades: each weighs 1 / (intervals x its interval's
    scores), with the variance the lab's qualities give."""
    with StateStore(state) as store:
        record = store.experiment()
        assert record is not None
        rows = store.observations(record.id)
    counts = []
    for _, data in rows:
        observation = Observation.from_dict(data["all"])
        scores = [observation.of(v).quality_count for v in arms]
        if min(scores) >= MIN_SAMPLES:
            counts.append(scores)
    k = len(counts)
    variance = sum(q * (1 - q) / n for c in counts for q, n in zip(arms.values(), c, strict=True))
    variance /= k * k
    weight = 1 / (k * min(min(c) for c in counts))
    log = math.log(2 / RISK)
    return k, weight * log / 3 + math.sqrt((weight * log / 3) ** 2 + 2 * log * variance)


def document(tmp_path: Path, flags: Path, metrics_url: str, **stop: Any) -> Path:
    doc = {
        "apiVersion": "canaryctl/v1",
        "kind": "Experiment",
        "metadata": {"name": "lab-experiment"},
        "spec": {
            "flag": {"provider": "file", "path": str(flags), "key": FLAG_KEY},
            "variations": [
                {"value": "base", "weight": 50, "control": True},
                {"value": "other", "weight": 50},
            ],
            "metrics": {"provider": "scrape", "targets": [metrics_url], "route": "bot"},
            "primary": {"metric": "quality_score"},
            "guards": [
                {"metric": "error_rate", "max_increase": 0.05},
                {"metric": "latency_p95_seconds", "max_increase": 0.5},
            ],
            "tiers": ["free", "paid"],
            "min_samples": MIN_SAMPLES,
            **{"interval": "1s", **stop},
        },
    }
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def providers(other_quality: float) -> list[dict[str, Any]]:
    return [
        {"name": "base", "latency": FAST, "quality": 0.6},
        {"name": "other", "latency": FAST, "quality": other_quality},
    ]


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_a_better_variation_is_decided_promoted_and_reported(
    tmp_path: Path, make_lab: MakeLab, write_flags: WriteFlags
) -> None:
    flags = write_flags(["base", "other"])
    state = str(tmp_path / "state.db")
    with LabStack(make_lab(providers(0.95), traffic=TRAFFIC)) as stack:
        # max: a bound, not a pace (decided on the evidence, which a loaded lab sends slowly)
        path = document(
            tmp_path, flags, stack.metrics_url, until="decided", max="240s", interval="500ms"
        )
        code, output = invoke("experiment", "run", str(path), "--state", state,
                              "--promote-winner", "-o", "json")  # fmt: skip
        assert stack.traffic is not None
        served = stack.traffic.snapshot().by_variant

    assert code == 0, output
    events = [json.loads(line) for line in output.splitlines()]
    assert events[0]["event"] == "start" and events[0]["weights"] == {"base": 50, "other": 50}
    finish = events[-1]
    assert finish["event"] == "finish" and finish["outcome"] == "winner"
    assert finish["winner"] == "other" and finish["promoted"] is True
    assert finish["weights"] == {"other": 100.0}
    # The split really served both arms, and the winner now serves everyone by default.
    assert sum(served["base"].values()) > 100 and sum(served["other"].values()) > 100
    flag = json.loads(flags.read_text())["flags"][FLAG_KEY]
    assert flag["fallthrough"] == {"variation": 1}
    intervals = [e for e in events if e["event"] == "interval"]
    assert all(e["winner"] is None for e in intervals[:-1]) and intervals[-1]["winner"] == "other"

    code, output = invoke("experiment", "status", "--state", state, "-o", "json")
    assert code == 0, output
    status = json.loads(output)
    summary = status["summary"]
    assert status["outcome"] == "winner" and summary["winner"] == "other"
    assert summary["intervals"] == len(intervals)
    quality = {(e["tier"], e["variation"]): e for e in summary["effects"]
               if e["metric"] == "quality_score"}  # fmt: skip
    assert set(quality) == {(None, "other"), ("free", "other"), ("paid", "other")}
    overall = quality[(None, "other")]
    assert 0 < overall["low"] <= overall["estimate"] <= overall["high"]  # shown better
    # The estimate is the lab's true difference, 0.95 - 0.6, within what the law of the
    # intervals' score counts allows (a fixed +-0.12 failed on a loaded lab's few scores).
    intervals, margin = bernstein_margin(state, {"other": 0.95, "base": 0.6})
    assert overall["intervals"] == intervals
    assert abs(overall["estimate"] - 0.35) <= margin, (overall, margin)
    for tier in ("free", "paid"):
        assert quality[(tier, "other")]["intervals"] > 0
    errors = next(e for e in summary["effects"] if e["metric"] == "error_rate" and not e["tier"])
    assert errors["high"] <= 0.05  # shown within its margin, as the winner rule requires

    page = tmp_path / "experiment.html"
    code, output = invoke("experiment", "report", "--state", state, "--html", str(page),
                          "-o", "text")  # fmt: skip
    assert code == 0, output
    html = page.read_text()
    assert html.count("<svg") == 3  # one chart per metric
    # 3 metrics x (all traffic, free, paid): a bar each, "open" while a tier's is unbounded.
    assert html.count('<g class="effect') == 9
    assert html.count('<g class="effect">') >= 3  # all traffic's are bounded: it was decided
    assert 'class="bound margin"' in html and 'class="winner">other<' in html
    assert html.count('class="effect-row"') == 9
    screenshot(tmp_path, page)
    dom = rendered(tmp_path, page)  # what Chromium draws: a chart and an effect per row
    assert dom.count("<svg") == 3 and dom.count('<g class="effect') == 9


def test_an_interrupted_experiment_restores_the_flag(
    tmp_path: Path, make_lab: MakeLab, write_flags: WriteFlags
) -> None:
    flags = write_flags(["base", "other"])
    original = flags.read_text()
    state = str(tmp_path / "state.db")
    with LabStack(make_lab(providers(0.6), traffic=TRAFFIC)) as stack:
        path = document(tmp_path, flags, stack.metrics_url, duration="5m")
        process = subprocess.Popen(
            [sys.executable, "-m", "canaryctl", "experiment", "run", str(path),
             "--state", state, "-o", "json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        try:
            assert process.stdout is not None
            lines = []
            for line in process.stdout:  # interrupt once two intervals were journaled
                lines.append(json.loads(line))
                if lines[-1]["event"] == "interval" and lines[-1]["intervals"] >= 2:
                    break
            split = json.loads(flags.read_text())["flags"][FLAG_KEY]["fallthrough"]
            assert len(split["rollout"]["variations"]) == 2  # the experiment's split is live
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()

    assert process.returncode == 130, err
    finish = json.loads(out.splitlines()[-1])
    assert finish["outcome"] == "interrupted" and finish["winner"] is None
    assert unversioned(flags.read_text()) == unversioned(original)  # byte for byte
    assert json.loads(flags.read_text())["flags"][FLAG_KEY]["version"] > 2  # only forward
    assert not list(tmp_path.glob("*.canaryctl-claim"))  # the claim went with the run
    with StateStore(state) as store:
        record = store.experiment()
        assert record is not None and record.outcome == "interrupted"
        assert record.exit_code == 130 and len(store.observations(record.id)) >= 2


def test_an_undecided_experiment_ends_with_exit_1_and_the_flag_restored(
    tmp_path: Path, make_lab: MakeLab, write_flags: WriteFlags
) -> None:
    flags = write_flags(["base", "other"])
    original = flags.read_text()
    state = str(tmp_path / "state.db")
    with LabStack(make_lab(providers(0.6), traffic=TRAFFIC)) as stack:
        path = document(tmp_path, flags, stack.metrics_url, duration="4s")
        code, output = invoke("experiment", "run", str(path), "--state", state, "-o", "json")
    assert code == 1, output
    events = [json.loads(line) for line in output.splitlines()]
    finish = events[-1]
    assert finish["outcome"] == "no_winner" and finish["weights"] == {"base": 100.0}
    # It ended at its first look past its 4 s (never later, whatever the machine's pace; too
    # few intervals for any difference to be finite, so no winner by chance either).
    intervals = [e for e in events if e["event"] == "interval"]
    assert 1 <= len(intervals) <= 4 and intervals[-1]["elapsed"] >= 4
    assert all(e["elapsed"] < 4 for e in intervals[:-1])
    assert unversioned(flags.read_text()) == unversioned(original)


def test_a_killed_experiment_s_flag_is_put_back_by_restore(
    tmp_path: Path, make_lab: MakeLab, write_flags: WriteFlags
) -> None:
    """SIGKILL leaves the split and the claim; `experiment restore` refuses while the process
    lives, then puts the prior targeting back once it is dead, and only once."""
    flags = write_flags(["base", "other"])
    original = flags.read_text()
    state = str(tmp_path / "state.db")
    with LabStack(make_lab(providers(0.6), traffic=TRAFFIC)) as stack:
        path = document(tmp_path, flags, stack.metrics_url, duration="5m")
        process = subprocess.Popen(
            [sys.executable, "-m", "canaryctl", "experiment", "run", str(path),
             "--state", state, "-o", "json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        try:
            assert process.stdout is not None
            for line in process.stdout:
                if json.loads(line)["event"] == "interval":
                    break
            code, output = invoke("experiment", "restore", "1", "--state", state)
            assert code == 2 and f"still running (process {process.pid}" in output, output
            process.kill()
            process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert unversioned(flags.read_text()) != unversioned(original)  # the split stayed
    assert list(tmp_path.glob("*.canaryctl-claim"))

    code, output = invoke("experiment", "restore", "1", "--state", state)

    assert code == 0, output
    assert f"the prior targeting of flag '{FLAG_KEY}' is back" in output
    assert unversioned(flags.read_text()) == unversioned(original)
    assert not list(tmp_path.glob("*.canaryctl-claim"))
    with StateStore(state) as store:
        record = store.experiment(1)
        assert record is not None and record.phase == "finished" and record.exit_code == 3
    code, output = invoke("experiment", "restore", "1", "--state", state)
    assert code == 2 and "has ended" in output
