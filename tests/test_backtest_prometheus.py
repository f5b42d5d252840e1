"""`canaryctl backtest RUNBOOK --prometheus URL`: a runbook replayed on recorded history, read
from a real Prometheus serving a day of a gateway's counters backfilled by promtool.

What the backtest finds is compared with a simulation of the same noise: the same generator
(tests/recorded_series.py), its counts summed in memory without Prometheus and replayed by the
same pure core, on the recorded day (for the incident) and on many independent draws (for the
false-rollback rate the noise gives).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from binaries import require_binary
from click.testing import CliRunner
from prometheus_server import running_prometheus
from recorded_series import Recording, backfill, in_memory, record
from test_report import rendered, screenshot

from canaryctl.backtest.replay import replay
from canaryctl.backtest.series import A, B
from canaryctl.backtest.sweep import clopper_pearson
from canaryctl.cli.main import main
from canaryctl.runbook import Rollout, load_document

HOURS = 20
INCIDENT_HOUR = 6
INCIDENT_MINUTES = 20


def _runbook(path: Path, slos: list[dict[str, Any]], **analysis: Any) -> Path:
    steps = [{"set_weight": 5}, {"pause": "10m"}, {"set_weight": 25}, {"pause": "10m"},
             {"set_weight": 50}, {"pause": "10m"}]  # fmt: skip
    document = {
        "apiVersion": "canaryctl/v1",
        "kind": "Rollout",
        "metadata": {"name": path.stem},
        "spec": {
            "flag": {
                "provider": "file",
                "path": "flags.json",
                "key": "bot-model",
                "baseline": "old",
                "canary": "new",
            },
            "metrics": {"provider": "prometheus", "url": "http://127.0.0.1:9", "route": "bot"},
            "slos": slos,
            "analysis": {"interval": "1m", "min_requests": 100, **analysis},
            "steps": steps,
        },
    }
    path.write_text(yaml.safe_dump(document))
    return path


@dataclass(frozen=True)
class Recorded:
    url: str
    recording: Recording
    start: float
    end: float
    incident: tuple[float, float]
    workdir: Path


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorded]:
    promtool = require_binary("promtool", package="prometheus")
    workdir = tmp_path_factory.mktemp("backtest")
    # Whole hours ending at least ten minutes ago: inside the retention, and closed blocks.
    end = math.floor((time.time() - 600) / 3600) * 3600
    start = end - HOURS * 3600
    incident_at = start + INCIDENT_HOUR * 3600
    incident = (incident_at, incident_at + INCIDENT_MINUTES * 60)
    recording = record(7, start, HOURS * 60, canary_share=0.2, incident=incident)
    data = backfill(promtool, recording, workdir)
    with running_prometheus(workdir, data=data) as server:
        yield Recorded(server.url, recording, start, end, incident, workdir)


def _backtest(recorded: Recorded, runbook: Path, *args: str) -> dict[str, Any]:
    result = CliRunner().invoke(
        main,
        ["backtest", str(runbook), "--prometheus", recorded.url, "--from",
         str(recorded.start), "--to", str(recorded.end), "-o", "json", *args],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_a_planted_incident_is_caught_with_the_delay_the_counts_give(recorded: Recorded) -> None:
    runbook = _runbook(
        recorded.workdir / "ratio.yaml",
        [{"metric": "error_rate", "compare": "baseline", "max_ratio": 1.5}],
    )
    begin, end = recorded.incident
    page = recorded.workdir / "incident.html"

    data = _backtest(recorded, runbook, "--every", "1h", "--incident", f"{begin}..{end}",
                     "--html", str(page))  # fmt: skip

    assert data["mode"] == "ab" and data["rollouts"] == HOURS
    found = data["incident"]
    assert (found["rollouts"], found["caught"]) == (1, 1)
    # The canary fails 30% of its requests against the baseline's 1%: a few one-minute bets.
    delay = found["first_delay_seconds"]
    assert 60 <= delay <= 300
    # The simulation: the same counts summed in memory, replayed by the same core.
    spec = load_document(str(runbook), expect=Rollout).spec
    history = in_memory(recorded.recording, recorded.start, 60, aa=False)
    simulated = replay(spec, history, begin, baseline="old", canary="new", until=recorded.end)
    assert simulated.rolled_back and simulated.decided_at is not None
    assert abs(delay - (simulated.decided_at - begin)) <= 60
    rolled_back = [s["start"] for s in data["starts"] if s["outcome"] == "rolled_back"]
    assert begin in rolled_back
    assert len(rolled_back) <= 2  # a quiet day besides: at most one false rollback in 20
    # The page: every rollout on the timeline, the rollbacks marked, the incident shaded.
    html = page.read_text()
    assert html.count('class="rollout ') == HOURS
    assert html.count('class="rollout rolled_back"') == len(rolled_back)
    assert html.count('class="rollback"') == len(rolled_back)
    assert html.count('class="incident"') == 1
    assert "caught by 1 of 1 rollouts running" in html
    assert not re.search(r"<script|<link|<img|\bsrc=|\bhref=|url\(|@import", html)
    screenshot(recorded.workdir, page)
    # What Chromium draws: every rollout's bar, the rollbacks, the incident, the legend.
    dom = rendered(recorded.workdir, page)
    assert dom.count('class="rollout ') == HOURS
    assert dom.count('class="rollback"') == len(rolled_back) and 'class="incident"' in dom
    assert '<g class="legend">' in dom
    # `report` draws the same page from the saved JSON.
    saved, again = recorded.workdir / "backtest.json", recorded.workdir / "again.html"
    saved.write_text(json.dumps(data))
    shown = CliRunner().invoke(main, ["report", str(saved), "--html", str(again), "-o", "text"])
    assert shown.exit_code == 0, shown.output
    assert "backtest ratio: 20 rollouts, " in shown.output
    assert again.read_text() == html


def _simulated_rate(runbook: Path, draws: int) -> float:
    """The A/A false-rollback rate of `runbook` on `draws` independent draws of the noise, at
    times of day spread over the daily swing as the recorded day's rollouts are."""
    spec = load_document(str(runbook), expect=Rollout).spec
    rolled_back = 0
    for seed in range(draws):
        begin = 1_800_000_000 + seed * 3600
        phase = 2 * math.pi * seed / draws
        # Half an hour before the rollout warms the drift up.
        recording = record(1000 + seed, begin - 1800, 62, phase=phase)
        history = in_memory(recording, begin, 60, aa=True)
        result = replay(spec, history, begin, baseline=A, canary=B, until=history.grid.end)
        rolled_back += result.rolled_back
    return rolled_back / draws


def test_a_quiet_aa_split_rolls_back_as_often_as_the_simulation_predicts(
    recorded: Recorded,
) -> None:
    """Threshold checks of the step's window misfire on this noise; the sequential test does
    not. Each rate measured on the recorded day holds the simulation's in its 95% interval."""
    slo = [{"metric": "error_rate", "compare": "baseline", "max_ratio": 1.5}]
    workdir = recorded.workdir
    threshold = _runbook(workdir / "aa-threshold.yaml", slo, method="threshold")
    sequential = _runbook(workdir / "aa-sequential.yaml", slo)

    noisy = _backtest(recorded, threshold, "--every", "30m", "--aa-split", "bucket")
    calm = _backtest(recorded, sequential, "--every", "30m", "--aa-split", "bucket")

    for data, runbook in ((noisy, threshold), (calm, sequential)):
        assert data["mode"] == "aa"
        false = data["false_rollbacks"]
        assert false["decided"] >= 35, data["outcomes"]
        assert (false["lower"], false["upper"]) == pytest.approx(
            clopper_pearson(false["rolled_back"], false["decided"])
        )
        predicted = _simulated_rate(runbook, 200)
        assert false["lower"] <= predicted <= false["upper"], (runbook.name, false, predicted)
    assert noisy["false_rollbacks"]["rate"] >= 0.1  # the noise is there to be misread
    assert calm["false_rollbacks"]["upper"] < noisy["false_rollbacks"]["lower"]


def test_queries_over_the_points_limit_are_refused_before_any_is_sent(tmp_path: Path) -> None:
    runbook = _runbook(tmp_path / "r.yaml", [{"metric": "error_rate", "max": 0.05}])
    week = 7 * 86400
    closed = "http://127.0.0.1:9"  # nothing listens: a query sent would be exit 3
    cases = [
        (["--from", "0", "--to", str(week), "--step", "30s"],
         "is 20,161 points per query; Prometheus returns at most 11,000: use a --step of at "
         "least 55s"),
        (["--from", "0", "--to", "86400", "--step", "45s"],
         "analysis interval (60s) is not a whole number of 45s steps"),
        (["--from", "0", "--to", "600"], "shorter than one rollout of this runbook"),
    ]  # fmt: skip
    for args, message in cases:
        result = CliRunner().invoke(main, ["backtest", str(runbook), "--prometheus", closed, *args])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)


def test_a_variant_with_no_series_in_the_range_is_named(recorded: Recorded) -> None:
    runbook = _runbook(recorded.workdir / "typo.yaml", [{"metric": "error_rate", "max": 0.05}])
    document = yaml.safe_load(runbook.read_text())
    document["spec"]["flag"]["canary"] = "newer"
    runbook.write_text(yaml.safe_dump(document))

    args = ["backtest", str(runbook), "--prometheus", recorded.url, "--from",
            str(recorded.start), "--to", str(recorded.end)]  # fmt: skip
    result = CliRunner().invoke(main, args)

    assert result.exit_code == 2, result.output
    assert "no requests for 'newer' on {route=\"bot\"} in Prometheus at http" in result.output
