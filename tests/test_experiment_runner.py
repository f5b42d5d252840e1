"""The experiment runner's exit paths on a fake clock, with the in-memory flag store and a
scripted metrics source: a winner (restored without --promote-winner), a human's edit (left
alone, exit 3), a metrics outage (restored, exit 3); `status` rebuilds the runner's decision
from the journal, in SQLite and PostgreSQL; bad input is exit 2 with nothing changed."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from canaryctl.analysis.experiment import Design
from canaryctl.cli import main
from canaryctl.clock import FakeClock
from canaryctl.controller.store import StateStore
from canaryctl.experiment.runner import ExperimentRunner
from canaryctl.experiment.summary import summarize
from canaryctl.flags.memory import MemoryFlagStore
from canaryctl.metrics.base import Observation, VariantStats
from canaryctl.metrics.scripted import ScriptedMetricsSource
from canaryctl.runbook.experiment import Experiment
from tests.conftest import FLAG_KEY

WriteFlags = Callable[..., Path]


def experiment(**spec: Any) -> Experiment:
    return Experiment.model_validate({
        "kind": "Experiment",
        "metadata": {"name": "exp"},
        "spec": {
            "flag": {"provider": "file", "path": "flags.json", "key": FLAG_KEY},
            "variations": [{"value": "a", "weight": 50, "control": True},
                           {"value": "b", "weight": 50}],
            "metrics": {"provider": "scrape", "targets": ["http://127.0.0.1:1/metrics"]},
            "primary": {"metric": "quality_score"},
            "guards": [{"metric": "error_rate", "max_increase": 0.02}],
            "until": "decided", "max": "1h", "interval": "30s",
            **spec,
        },
    })  # fmt: skip


def script(quality: dict[str, float], seed: int = 0) -> Callable[[float, float], Observation]:
    rng = random.Random(seed)

    def observe(since: float, now: float) -> Observation:
        variants = {}
        for name, p in quality.items():
            scores = sum(rng.random() < p for _ in range(60))
            errors = sum(rng.random() < 0.01 for _ in range(300))
            variants[name] = VariantStats(requests=300, errors=errors, quality_sum=scores,
                                          quality_count=60)  # fmt: skip
        return Observation(since, now, variants)

    return observe


def runner(doc: Experiment, store: StateStore, quality: dict[str, float],
           **options: Any) -> tuple[ExperimentRunner, MemoryFlagStore, ScriptedMetricsSource,
                                    FakeClock]:  # fmt: skip
    clock = FakeClock()
    flags = MemoryFlagStore(FLAG_KEY, "a", "b")
    metrics = ScriptedMetricsSource(script(quality), clock.now)
    events: list[dict[str, Any]] = []
    run = ExperimentRunner(doc, flags=flags, metrics=metrics, tier_metrics={}, store=store,
                           clock=clock, emit=events.append, **options)  # fmt: skip
    return run, flags, metrics, clock


def test_a_winner_without_promote_is_reported_and_the_flag_restored(state_location: str) -> None:
    with StateStore(state_location) as store:
        run, flags, _, _ = runner(experiment(), store, {"a": 0.7, "b": 0.9})
        before = flags.snapshot()
        result = run.run()
        assert (result.outcome, result.winner, result.exit_code) == ("winner", "b", 0)
        assert not result.promoted and result.weights == {"a": 100.0}
        assert flags.snapshot().raw == before.raw and flags.snapshot().version > before.version
        comments = [comment for comment, _ in flags.history]
        assert len(comments) == 2 and comments[1] == "canaryctl experiment exp: restore (winner)"
        assert flags.claimed_by is None  # released

        record = store.experiment(result.experiment_id)
        assert record is not None and record.winner == "b" and record.exit_code == 0
        intervals = [data for _, data in store.observations(record.id)]
        summary = summarize(Design.from_dict(record.design), intervals)
    assert summary["winner"] == "b" and summary["intervals"] == len(intervals) >= 10
    quality = next(e for e in summary["effects"] if e["metric"] == "quality_score")
    assert 0 < quality["low"] < 0.2 < quality["high"]


def test_promote_winner_serves_the_winner_to_everyone(tmp_path: Path) -> None:
    with StateStore(tmp_path / "state.db") as store:
        run, flags, _, _ = runner(experiment(), store, {"a": 0.7, "b": 0.9}, promote_winner=True)
        result = run.run()
    assert result.promoted and flags.weights(flags.snapshot()) == {"b": 100.0}


def test_a_human_edit_mid_experiment_is_left_alone_with_exit_3(tmp_path: Path) -> None:
    with StateStore(tmp_path / "state.db") as store:
        run, flags, _, clock = runner(experiment(), store, {"a": 0.8, "b": 0.8})
        clock.call_at(clock.now() + 95, lambda: flags.edit_by_someone_else(25))
        result = run.run()
    assert (result.outcome, result.exit_code) == ("error", 3)
    assert "someone else changed it; left the flag alone" in result.reason
    assert flags.split(flags.snapshot()).canary == 25  # their edit, not ours


def test_a_metrics_outage_restores_the_flag_with_exit_3(tmp_path: Path) -> None:
    with StateStore(tmp_path / "state.db") as store:
        run, flags, metrics, clock = runner(experiment(), store, {"a": 0.8, "b": 0.8})
        before = flags.snapshot()

        def down() -> None:
            metrics.down = True

        clock.call_at(clock.now() + 95, down)
        result = run.run()
    assert (result.outcome, result.exit_code) == ("error", 3)
    assert "scripted metrics source is down" in result.reason
    assert flags.snapshot().raw == before.raw


def test_an_undecided_duration_ends_with_exit_1(tmp_path: Path) -> None:
    doc = experiment(until=None, max=None, duration="10m")
    with StateStore(tmp_path / "state.db") as store:
        run, flags, _, clock = runner(doc, store, {"a": 0.8, "b": 0.8})
        start = clock.now()
        result = run.run()
    assert (result.outcome, result.exit_code) == ("no_winner", 1)
    assert clock.now() - start == pytest.approx(600, abs=1)
    assert flags.weights(flags.snapshot()) == {"a": 100.0}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"variations": [{"value": "a", "weight": 50, "control": True},
                         {"value": "b", "weight": 40}]}, "weights sum to 90, not 100"),
        ({"variations": [{"value": "a", "weight": 50}, {"value": "b", "weight": 50}]},
         "exactly one needs control: true"),
        ({"max": None}, "until: decided needs a max"),
        ({"guards": [{"metric": "quality_score", "max_increase": 0.1}]},
         "quality_score is worse when lower; use max_decrease"),
        ({"guards": [{"metric": "error_rate"}]}, "a guard needs one margin"),
        ({"tiers": ["free", "free"]}, "tiers[1]: is listed twice"),
        ({"primary": {"name": "x", "query": "sum(up{v=\"{{variant}}\"})",
                     "higher_is_better": True}},
         "custom PromQL needs metrics.provider prometheus"),
    ],
)  # fmt: skip
def test_bad_documents_are_exit_2_naming_the_field(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    doc = experiment().model_dump(mode="json", by_alias=True)
    doc["spec"].update(change)
    doc["spec"] = {k: v for k, v in doc["spec"].items() if v is not None}
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(doc))
    result = CliRunner().invoke(main, ["experiment", "run", str(path), "--state",
                                       str(tmp_path / "state.db")])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert message in result.output and str(path) in result.output
    assert "Traceback" not in result.output


def test_a_variation_the_flag_lacks_is_exit_2_before_anything_moves(
    tmp_path: Path, write_flags: WriteFlags
) -> None:
    flags = write_flags(["a", "c"])
    original = flags.read_text()
    doc = experiment().model_dump(mode="json", by_alias=True)
    doc["spec"]["flag"]["path"] = str(flags)
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(doc))
    state = tmp_path / "state.db"
    result = CliRunner().invoke(main, ["experiment", "run", str(path), "--state", str(state)])
    assert result.exit_code == 2, result.output
    assert "has no variation 'b'" in result.output
    assert flags.read_text() == original and not list(tmp_path.glob("*.canaryctl-claim"))
    result = CliRunner().invoke(main, ["experiment", "status", "--state", str(state)])
    assert result.exit_code == 2 and "no state database" in result.output  # none was made
    empty = json.loads(CliRunner().invoke(main, ["validate", str(path)]).output)
    assert empty["valid"] is True and empty["kind"] == "Experiment"
