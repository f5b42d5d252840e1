"""Drills: `canaryctl drills serve` as a real process against the chaos test world, on a schedule
of every few seconds: skipped while a rollout is running, run when it is over, and restarted
without running a fire time twice (a missed one runs once, from the persisted job). Plus the
pure guards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from canaryctl.cli import main
from canaryctl.controller.store import StateStore
from canaryctl.drills.guard import blocked_by, latest_fire_time, unfinished_rollouts
from canaryctl.drills.history import DrillHistory, DrillRun
from canaryctl.drills.scheduler import _RUNTIME, run_drill
from canaryctl.flags.base import FlagSnapshot
from canaryctl.runbook.loader import load_document
from canaryctl.runbook.scenario import ChaosScenario, cron_trigger
from tests.chaos_world import EXAMPLE, TOKEN, World, chaos_world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with chaos_world(tmp_path_factory.mktemp("drills")) as world:
        yield world


def drill_document(world: World, **spec: Any) -> dict[str, Any]:
    document = yaml.safe_load(world.scenario("drill").read_text())
    document["metadata"]["name"] = "primary-503-drill"
    document["spec"].update(
        {
            "duration": "1s",
            "settle": "0s",
            "recovery": "0s",
            "schedule": "*/5 * * * * *",
            "window": None,
            **spec,
        }
    )
    hypothesis = document["spec"]["hypothesis"]
    # A drill runs in `drills serve`'s own process, whose clock cannot be counted: one request
    # a window is enough to judge (this file tests scheduling, not verdicts), so a loaded lab's
    # short 1 s windows cannot leave every drill in the wait below not_steady.
    hypothesis.update(window="1s", interval="1s", min_requests=1)
    # One-second windows straddle the switch to the fallback: users' success is what is judged.
    hypothesis["checks"] = [c for c in hypothesis["checks"] if c["metric"] != "fallback_rate"]
    return document


class Serve:
    """`canaryctl drills serve` in a child process; its JSON lines collected as they come."""

    def __init__(self, directory: Path, home: Path, state: Path) -> None:
        env = {**os.environ, "CANARYCTL_CHAOS_TOKEN": TOKEN}
        command = [sys.executable, "-m", "canaryctl", "drills", "serve", str(directory)]
        self.process = subprocess.Popen(
            [*command, "--home", str(home), "--state", str(state), "-o", "json"],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.events: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("{"):
                self.events.append(json.loads(line))

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(30)
        finally:
            self.process.kill()
            self._reader.join(5)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def history(home: Path) -> list[DrillRun]:
    if not (home / "history.db").exists():
        return []
    with DrillHistory(home / "history.db") as store:
        return store.runs()


def finished(home: Path, outcome: str) -> list[DrillRun]:
    return [r for r in history(home) if r.outcome == outcome]


@pytest.mark.e2e
def test_drills_skip_during_rollouts_run_after_and_survive_a_restart(
    world: World, tmp_path: Path
) -> None:
    world.serve("primary")
    directory, home, state = tmp_path / "drills", tmp_path / "home", tmp_path / "state.db"
    directory.mkdir()
    (directory / "drill.yaml").write_text(yaml.safe_dump(drill_document(world)))
    (directory / "lab.yaml").write_text((EXAMPLE.parent / "lab.yaml").read_text())  # ignored
    with StateStore(state) as store:
        rollout = store.create_run(
            name="canary",
            runbook={},
            host="h",
            pid=1,
            version="0",
            started_at=time.time(),
            prior_flag=FlagSnapshot("k", 1, {}),
            phase="progressing",
            state={},
        )

    serve = Serve(directory, home, state)
    try:
        wait_for(lambda: finished(home, "skipped"), 60, "a drill skipped for the rollout")
        [skipped] = finished(home, "skipped")
        assert f"rollout {rollout} (canary, progressing) is running" in skipped.reason
        assert not list((home / "journals").glob("*.json"))  # nothing was injected
        with StateStore(state) as store:
            store.finish_run(
                rollout,
                phase="promoted",
                outcome="promoted",
                reason="",
                exit_code=0,
                at=time.time(),
                final_split=None,
            )
        # A drill every 5 s: one that does not hold (a window with no request at all) is
        # tried again by the next; the bound only allows for many tries.
        wait_for(lambda: finished(home, "held"), 120, "a drill that holds")
    finally:
        assert serve.stop() == 0
    assert world.admin.faults() == []
    ran_before = {r.scheduled_for for r in history(home)}

    time.sleep(6)  # at least one fire time passes while nobody serves
    restarted = time.time()
    serve = Serve(directory, home, state)
    try:
        wait_for(
            lambda: any(r.started_at >= restarted and r.ended_at for r in history(home)),
            30,
            "a drill after the restart",
        )
    finally:
        assert serve.stop() == 0
    runs = history(home)
    slots = [r.scheduled_for for r in runs]
    assert len(slots) == len(set(slots))
    assert not any(e.get("outcome") == "duplicate" for e in serve.events)
    after = [r for r in runs if r.started_at >= restarted]
    assert all(r.scheduled_for not in ran_before for r in after)
    # The job store kept the job: its next fire time, later than every one that ran, was
    # missed while nobody served (it may fall while a loaded server was still stopping)...
    [scheduled] = [e for e in serve.events if e["event"] == "scheduled"]
    kept = datetime.fromisoformat(scheduled["next_run"]).timestamp()
    assert max(ran_before) < kept < restarted
    # ...and the missed fire times ran once, coalesced, as soon as the server was back.
    assert after[0].scheduled_for >= kept
    assert [r for r in runs if kept <= r.scheduled_for <= after[0].scheduled_for] == [after[0]]
    assert world.admin.faults() == []

    listed = CliRunner().invoke(
        main, ["drills", "list", str(directory), "--home", str(home), "-o", "json"]
    )
    assert listed.exit_code == 0
    [status] = [json.loads(line) for line in listed.output.splitlines()]
    assert status["drill"] == "primary-503-drill" and status["next_run"] is not None
    # The last run may be one that stopping the server interrupted (its faults removed): list
    # must say what the history says, whichever it was.
    latest = max(runs, key=lambda r: r.id)
    assert status["last_outcome"] == latest.outcome
    assert latest.outcome in ("held", "interrupted")


def test_a_drill_outside_its_window_is_skipped_without_acting(tmp_path: Path) -> None:
    document = yaml.safe_load(EXAMPLE.read_text())
    today = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[datetime.now(UTC).weekday()]
    other = [d for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun") if d != today]
    document["spec"]["target"]["url"] = "http://127.0.0.1:9"  # nothing listens: never reached
    document["spec"].update(schedule="* * * * *", window={"days": other})
    path = tmp_path / "drill.yaml"
    path.write_text(yaml.safe_dump(document))
    run_drill(str(path), str(tmp_path / "home"), str(tmp_path / "state.db"), 300.0)
    [run] = history(tmp_path / "home")
    assert run.outcome == "skipped" and "outside the allowed window" in run.reason
    # The same fire time is never claimed twice:
    run_drill(str(path), str(tmp_path / "home"), str(tmp_path / "state.db"), 300.0)
    assert len(history(tmp_path / "home")) == 1


def test_guards() -> None:
    spec = load_document(EXAMPLE, expect=ChaosScenario).spec
    tuesday_noon = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    assert blocked_by(spec, tuesday_noon, []) is None
    assert "outside the allowed window" in (
        blocked_by(spec, tuesday_noon.replace(hour=18), []) or ""
    )
    saturday = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    assert blocked_by(spec, saturday, []) is not None
    assert blocked_by(spec, tuesday_noon, ["3 (x, paused)"]) == "rollout 3 (x, paused) is running"


def test_latest_fire_time_coalesces_missed_slots() -> None:
    trigger = cron_trigger("*/5 * * * * *")
    now = datetime(2026, 11, 24, 12, 0, 17, 300000, tzinfo=UTC)
    assert latest_fire_time(trigger, now, 60) == datetime(2026, 11, 24, 12, 0, 15, tzinfo=UTC)
    hourly = cron_trigger("0 * * * *")
    assert latest_fire_time(hourly, now, 60) == datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    assert latest_fire_time(hourly, now.replace(minute=30), 60) is None  # beyond the grace


def test_one_drill_at_a_time_per_target(tmp_path: Path) -> None:
    document = yaml.safe_load(EXAMPLE.read_text())
    target = "http://127.0.0.1:9"  # nothing listens: a skipped drill never reaches it
    document["spec"]["target"]["url"] = target
    document["spec"].update(schedule="* * * * *", window=None)
    path = tmp_path / "drill.yaml"
    path.write_text(yaml.safe_dump(document))
    busy = _RUNTIME.lock_for(target)  # as a drill running against the same proxy holds it
    with busy:
        run_drill(str(path), str(tmp_path / "home"), str(tmp_path / "state.db"), 300.0)
    [run] = history(tmp_path / "home")
    assert run.outcome == "skipped"
    assert run.reason == f"another drill is running against {target}"


def test_drills_see_the_rollouts_of_the_shared_store(state_location: str) -> None:
    """A drill on one host stands aside for a rollout another host drives or has submitted to
    the same database (SQLite and PostgreSQL alike); an ended one no longer holds it back."""
    with StateStore(state_location) as store:
        driven = store.create_run(
            name="canary", runbook={}, host="elsewhere", pid=1, version="0",
            started_at=time.time(), prior_flag=FlagSnapshot("k", 1, {}), phase="progressing",
            state={},
        )  # fmt: skip
        submitted = store.submit_run(
            name="queued", runbook={}, host="ci", pid=2, version="0", at=time.time()
        )
        assert sorted(unfinished_rollouts(state_location)) == [
            f"{driven} (canary, progressing)",
            f"{submitted} (queued, submitted)",
        ]
        store.finish_run(driven, phase="promoted", outcome="promoted", reason="", exit_code=0,
                         at=time.time(), final_split=None)  # fmt: skip
    assert unfinished_rollouts(state_location) == [f"{submitted} (queued, submitted)"]


def test_list_and_serve_starting_at_once_on_a_new_home_both_work(tmp_path: Path) -> None:
    """Each start creates APScheduler's jobs table if missing; processes starting together on
    a new home must not fail on the table another just made (a docs run crashed `drills list`
    beside `drills serve` with "table apscheduler_jobs already exists")."""
    directory = tmp_path / "scenarios"
    directory.mkdir()
    scenario = yaml.safe_load(EXAMPLE.read_text())
    scenario["spec"]["schedule"] = "0 3 * * *"
    (directory / "nightly.yaml").write_text(yaml.safe_dump(scenario))
    go = tmp_path / "go"
    probe = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from canaryctl.drills import DrillHome, drill_status\n"
        "Path(sys.argv[1] + '.ready-' + sys.argv[2]).touch()\n"
        f"while not Path({str(go)!r}).exists(): time.sleep(0.001)\n"
        f"drill_status(Path({str(directory)!r}), DrillHome(Path(sys.argv[1]), 'state.db'))\n"
    )
    for attempt in range(3):
        home = tmp_path / f"home-{attempt}"
        go.unlink(missing_ok=True)
        command = [sys.executable, "-c", probe, str(home)]
        processes = [
            subprocess.Popen([*command, str(i)], cwd=tmp_path, stderr=subprocess.PIPE, text=True)
            for i in range(6)
        ]
        deadline = time.monotonic() + 120  # a bound, not a measure: all wait on one signal
        while len(list(tmp_path.glob(f"home-{attempt}.ready-*"))) < 6:
            assert time.monotonic() < deadline, "the probes did not start"
            time.sleep(0.05)
        go.touch()
        for process in processes:
            _, errors = process.communicate(timeout=120)
            assert process.returncode == 0, errors[-2000:]
