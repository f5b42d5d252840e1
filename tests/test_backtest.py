"""`canaryctl backtest RUNBOOK --run ID`: a past run's journaled counts judged again.

The runs are real runs of the runner on fakes (memory flag, scripted metrics, fake clock),
journaled in a real state database; the backtest reads that database through the CLI.
"""

from __future__ import annotations

import json
import re
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from rollout_world import RUNBOOK, World

from canaryctl.backtest.journal import JournalHistory
from canaryctl.backtest.series import A, B, Grid, SeriesHistory
from canaryctl.backtest.sweep import clopper_pearson, nominal_seconds, starts
from canaryctl.cli.main import main
from canaryctl.controller import StateStore, run_rollout
from canaryctl.controller.store import EventRecord
from canaryctl.metrics import Observation, VariantStats
from canaryctl.runbook import Rollout, parse_document


def _run(world: World) -> int:
    result = run_rollout(
        world.rollout,
        state_path=world.state,
        clock=world.clock,
        flags=world.flags,
        metrics=world.metrics,
    )
    return result.run_id


def _runbook(tmp_path: Path, name: str = "other.yaml", **spec: Any) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({**RUNBOOK, "spec": {**RUNBOOK["spec"], **spec}}))
    return path


def _backtest(runbook: Path, run_id: int, state: Path) -> tuple[int, dict[str, Any], str]:
    args = ["backtest", str(runbook), "--run", str(run_id), "--state", str(state), "-o", "json"]
    result = CliRunner().invoke(main, args)
    data = json.loads(result.output) if result.exit_code == 0 else {}
    return result.exit_code, data, result.output


def test_the_runs_own_runbook_replays_its_decisions_exactly(tmp_path: Path) -> None:
    world = World(tmp_path, analysis={"interval": "10s", "min_requests": 50})  # sequential
    world.canary_error_rate = 0.2
    run_id = _run(world)
    with StateStore(world.state) as store:
        record = store.run(run_id)
        analyses = store.events(run_id, "analysis")
    assert record is not None and record.outcome == "rolled_back"

    code, data, output = _backtest(_runbook(tmp_path, analysis={"interval": "10s",
                                                              "min_requests": 50}),
                                   run_id, world.state)  # fmt: skip

    assert code == 0, output
    replayed = data["replay"]
    assert replayed["outcome"] == "rolled_back"
    assert replayed["decided_at"] == data["run"]["decided_at"]
    assert [a["at"] for a in replayed["analyses"]] == [e.at for e in analyses]
    assert [a["outcome"] for a in replayed["analyses"]] == [e.data["outcome"] for e in analyses]
    assert replayed["reason"] == record.reason


def test_a_stricter_bound_would_have_rolled_back_a_promoted_run_at_its_first_analysis(
    tmp_path: Path,
) -> None:
    world = World(tmp_path)
    world.canary_error_rate = 0.01
    run_id = _run(world)
    strict = _runbook(tmp_path, slos=[{"metric": "error_rate", "max": 0.005},
                                      {"metric": "latency_p95_seconds", "max": 2.0}])  # fmt: skip

    code, data, output = _backtest(strict, run_id, world.state)

    assert code == 0, output
    assert data["run"]["outcome"] == "promoted"
    assert data["replay"]["outcome"] == "rolled_back"
    first = data["first_failures"]["error_rate <= 0.005"]
    assert first["analysis"] == 1 and first["after_seconds"] == 10 and first["weight"] == 10
    assert data["first_failures"]["latency_p95_seconds <= 2"] is None


def test_a_longer_interval_judges_every_other_analysis_of_the_run(tmp_path: Path) -> None:
    steps = [{"set_weight": 10}, {"pause": "40s"}, {"set_weight": 50}, {"pause": "40s"},
             {"set_weight": 100}, {"pause": "20s"}]  # fmt: skip
    world = World(tmp_path, steps=steps)
    run_id = _run(world)
    slower = _runbook(tmp_path, analysis={"interval": "20s", "min_requests": 50,
                                          "method": "threshold"})  # fmt: skip

    code, data, output = _backtest(slower, run_id, world.state)

    assert code == 0, output
    assert data["replay"]["outcome"] == "promoted"
    with StateStore(world.state) as store:
        run_times = {e.at for e in store.events(run_id, "analysis")}
    replay_times = [a["at"] for a in data["replay"]["analyses"]]
    assert set(replay_times) <= run_times
    starts_at = data["replay"]["start"]
    assert [round(t - starts_at) for t in replay_times] == [20, 40, 60, 80, 100]


def test_an_interval_that_is_not_a_multiple_of_the_runs_is_refused(tmp_path: Path) -> None:
    world = World(tmp_path)
    run_id = _run(world)
    odd = _runbook(tmp_path, analysis={"interval": "15s", "method": "threshold"})

    code, _, output = _backtest(odd, run_id, world.state)

    assert code == 2
    assert "not a whole multiple of run 1's interval (10s)" in output


def test_a_replay_that_would_hold_longer_than_the_run_ends_undecided(tmp_path: Path) -> None:
    world = World(tmp_path)
    run_id = _run(world)
    # 10 requests/s: a canary at 10% never reaches 5000 requests in its 30 s step.
    patient = _runbook(tmp_path, analysis={"interval": "10s", "min_requests": 5000,
                                           "method": "threshold"})  # fmt: skip

    code, data, output = _backtest(patient, run_id, world.state)

    assert code == 0, output
    assert data["run"]["outcome"] == "promoted"
    assert data["replay"]["outcome"] == "undecided"
    assert "the run stopped judging 10%" in data["replay"]["reason"]
    # A moment reads as a UTC time, never as a raw epoch.
    assert re.search(r"at \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ,", data["replay"]["reason"])
    assert not re.search(r"\d{9,}", data["replay"]["reason"])


def test_text_output_shows_the_run_beside_the_replay(tmp_path: Path) -> None:
    world = World(tmp_path)
    run_id = _run(world)
    strict = _runbook(tmp_path, slos=[{"metric": "error_rate", "max": 0.005}])
    world.canary_error_rate = 0.01

    args = ["backtest", str(strict), "--run", str(run_id), "--state", str(world.state)]
    result = CliRunner().invoke(main, [*args, "-o", "text"])

    assert result.exit_code == 0, result.output
    assert "the run:    promoted at +" in result.output
    assert "the replay: promoted" in result.output
    assert "error_rate <= 0.005: never failed" in result.output


def test_a_run_without_journaled_counts_is_refused(tmp_path: Path) -> None:
    world = World(tmp_path)
    run_id = _run(world)
    with closing(sqlite3.connect(world.state)) as journal, journal:  # as journaled before counts
        journal.execute("UPDATE events SET data = json_remove(data, '$.observation')")

    code, _, output = _backtest(_runbook(tmp_path), run_id, world.state)

    assert code == 2
    assert "without its analyses' counts" in output


def test_bad_input_exits_2_naming_it(tmp_path: Path) -> None:
    world = World(tmp_path)
    _run(world)
    runbook = _runbook(tmp_path)
    cases = [
        (["--run", "7", "--state", str(world.state)], "no run 7"),
        (["--state", str(world.state)], "exactly one of --run RUN_ID or --prometheus URL"),
        (["--run", "1", "--state", str(tmp_path / "none.db")], "no state database"),
        (["--prometheus", "http://127.0.0.1:9", "--from", "0"], "needs --from and --to"),
        (["--prometheus", "http://127.0.0.1:9", "--from", "yesterday", "--to", "0"],
         "--from: 'yesterday' is neither"),
        (["--prometheus", "http://127.0.0.1:9", "--from", "nan", "--to", "9"],
         "--from: 'nan' is not a time"),
        (["--prometheus", "http://127.0.0.1:9", "--from", "0", "--to", "-inf"],
         "--to: '-inf' is not a time"),
        (["--prometheus", "http://127.0.0.1:9", "--from", "0", "--to", "9", "--every", "x"],
         "--every: 'x' is not a duration"),
        (["--prometheus", "http://127.0.0.1:9", "--from", "0", "--to", "99999",
          "--incident", "5"], "--incident: '5' is not FROM..TO"),
    ]  # fmt: skip
    for args, message in cases:
        result = CliRunner().invoke(main, ["backtest", str(runbook), *args])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)
        assert "Traceback" not in result.output


def test_observations_survive_the_journal_with_their_infinite_bucket() -> None:
    stats = VariantStats(requests=10, errors=1, latency_buckets=((0.5, 4.0), (float("inf"), 10)))
    observation = Observation(1.0, 2.0, {"new": stats}, {"custom": {"new": 0.3}})

    text = json.dumps(observation.to_dict(), allow_nan=False)

    assert Observation.from_dict(json.loads(text)) == observation


# -- the pure pieces of the Prometheus backtest --------------------------------------------------


def _spec(**analysis: Any) -> Rollout:
    steps = [{"set_weight": 10}, {"pause": "10m"}, {"set_weight": 50}, {"pause": "10m"}]
    data = {**RUNBOOK, "spec": {**RUNBOOK["spec"], "steps": steps,
                                "analysis": {"interval": "1m", **analysis}}}  # fmt: skip
    return parse_document(yaml.safe_dump(data), "r.yaml", expect=Rollout)


def test_starts_leave_room_for_the_whole_rollout() -> None:
    spec = _spec().spec
    assert nominal_seconds(spec) == 1200
    assert starts(spec, 0, 3600, 1200) == [0, 1200, 2400]
    assert starts(spec, 0, 3599, 1200) == [0, 1200]
    assert starts(spec, 0, 1000, 60) == []


def test_the_aa_split_gives_the_canary_its_weights_share_of_the_buckets() -> None:
    grid = Grid(0, 600, 60)
    buckets = [f"b{i}" for i in range(10)]
    increments = {b: {("requests", None): [1.0] * grid.points} for b in buckets}
    history = SeriesHistory(grid, increments, aa_values=buckets)

    at_ten = history.observe(0, 600, 10.0)
    at_half = history.observe(0, 600, 50.0)

    assert not isinstance(at_ten, str) and not isinstance(at_half, str)
    assert (at_ten.of(B).requests, at_ten.of(A).requests) == (10, 90)
    assert (at_half.of(B).requests, at_half.of(A).requests) == (50, 50)
    assert history.observe(0, 660, 10.0) == "the history ends before this analysis"


@pytest.mark.parametrize(
    ("k", "n", "lower", "upper"),
    # R: binom.test(k, n)$conf.int
    [(0, 40, 0.0, 0.08809), (3, 40, 0.01574, 0.20387), (40, 40, 0.91191, 1.0)],
)
def test_clopper_pearson_matches_the_exact_binomial_interval(
    k: int, n: int, lower: float, upper: float
) -> None:
    got = clopper_pearson(k, n)
    assert got == pytest.approx((lower, upper), abs=5e-5)


def test_report_refuses_a_damaged_backtest_result(tmp_path: Path) -> None:
    damaged = tmp_path / "backtest.json"
    result = {"kind": "backtest", "mode": "aa", "rollouts": 1, "outcomes": {}, "starts": [{}]}
    damaged.write_text(json.dumps({**result, "from": 0, "to": 1}))

    result = CliRunner().invoke(main, ["report", str(damaged), "--html", str(tmp_path / "p")])

    assert result.exit_code == 2, result.output
    assert "a damaged backtest result (KeyError" in result.output


def _analysis(at: float, weight: float, start: float) -> EventRecord:
    observed = Observation(start, at, {"old": VariantStats(requests=at - start)})
    data = {"weight": weight, "observation": observed.to_dict()}
    return EventRecord(0, 1, at, "analysis", data, {}, at)


def test_a_replay_a_moment_late_for_the_runs_next_weight_still_gets_its_window() -> None:
    """Analyses drift by the time each takes: the run's next window may begin a moment before
    the replay closes its hold. The replay's window is then the run's, from when it began."""
    events = [_analysis(110, 10, 100), _analysis(120.3, 10, 100), _analysis(130.4, 50, 120.4)]
    history = JournalHistory.from_events(events, interval=10)

    assert history.weight_set(50, 123) == 120.4
    observed = history.observe(120.4, 130, 50)
    assert not isinstance(observed, str) and observed.end == 130.4
    assert history.weight_set(50, 126) is None  # more than half an interval late: not that one


def test_a_run_s_late_analysis_is_replayed_once_at_its_own_time(tmp_path: Path) -> None:
    """A loaded machine takes an analysis late (here 7 s, over half the 10 s interval) and the
    run schedules the next from then. The replay judged the window before it a second time at
    the on-time tick, so a runbook allowing one failure counted the run's single failing window
    twice and rolled back a run that was promoted on the same counts."""
    analysis = {"interval": "10s", "min_requests": 50, "method": "threshold", "failure_limit": 1}
    world = World(tmp_path, analysis=analysis)
    start, observe, reads = world.clock.now(), world.metrics.observe, []

    def late_at_20s(since: float) -> Observation:
        reads.append(world.clock.now() - start)  # preflight's read, then each analysis'
        if reads[-1] == 20:
            world.clock.sleep(7)
        world.canary_error_rate = 0.5 if len(reads) == 2 else 0.0  # the first window fails
        return observe(since)

    world.metrics.observe = late_at_20s  # type: ignore[method-assign]
    run_id = _run(world)
    with StateStore(world.state) as store:
        run = [(e.at - start, e.data["outcome"]) for e in store.events(run_id, "analysis")]
    assert run[:3] == [(10, "fail"), (27, "pass"), (30, "pass")]  # 30: the hold's end

    code, data, output = _backtest(_runbook(tmp_path, analysis=analysis), run_id, world.state)

    assert code == 0, output
    assert data["run"]["outcome"] == "promoted"
    assert data["replay"]["outcome"] == "promoted", data["replay"]["reason"]
    replayed = [(a["at"] - start, a["outcome"]) for a in data["replay"]["analyses"]]
    assert replayed == run  # each of the run's analyses once, when the run made it
