"""`canaryctl rollout ...` in-process: exit codes first, then what was printed and stored."""

from __future__ import annotations

import copy
import io
import json
import os
import re
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from postgres_server import PASSWORD, PostgresServer
from rich.console import Console

import canaryctl.controller.runner as runner_module
from canaryctl.cli import main
from canaryctl.cli.views import JsonLinesView, LiveView
from canaryctl.clock import FakeClock
from canaryctl.controller import StateStore, run_rollout
from canaryctl.flags import MemoryFlagStore
from canaryctl.metrics import Observation, ScriptedMetricsSource, VariantStats
from canaryctl.runbook import Rollout, load_document

RUNBOOK = """\
apiVersion: canaryctl/v1
kind: Rollout
metadata: {name: support-bot}
spec:
  flag: {provider: file, path: flags.json, key: support-bot-model, baseline: old, canary: new}
  metrics: {provider: scrape, targets: ["http://127.0.0.1:8080/metrics"]}
  slos:
    - {metric: error_rate, max: 0.02}
  analysis: {interval: 10s, min_requests: 50, method: threshold}
  steps:
    - set_weight: 10
    - pause: 30s
    - set_weight: 100
"""


class World:
    """The fakes the CLI's rollout gets instead of the runbook's real backends."""

    def __init__(self, tmp_path: Path) -> None:
        self.clock = FakeClock()
        self.flags = MemoryFlagStore("support-bot-model", "old", "new")
        self.prior = self.flags.snapshot().raw
        self.canary_error_rate = 0.0
        self.on_observe: Callable[[], None] = lambda: None
        self.metrics = ScriptedMetricsSource(self._script, self.clock.now)
        self.runbook = tmp_path / "rollout.yaml"
        self.runbook.write_text(RUNBOOK)
        self.state = tmp_path / "state.db"

    def _script(self, since: float, now: float) -> Observation:
        self.on_observe()
        n = 10 * (now - since)
        return Observation(
            since,
            now,
            {
                "old": VariantStats(requests=n),
                "new": VariantStats(requests=n, errors=n * self.canary_error_rate),
            },
        )

    def canary(self) -> float:
        return self.flags.split(self.flags.snapshot()).canary


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    w = World(tmp_path)
    import canaryctl.flags.factory
    import canaryctl.metrics.factory

    monkeypatch.setattr(canaryctl.flags.factory, "flag_store_for", lambda spec: w.flags)
    monkeypatch.setattr(
        canaryctl.metrics.factory, "metrics_source_for", lambda spec, **_: w.metrics
    )
    monkeypatch.setattr(runner_module, "SystemClock", lambda: w.clock)
    return w


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def json_lines(output: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_run_promotes_and_prints_json_lines(world: World) -> None:
    code, output = cli(
        "rollout", "run", str(world.runbook), "--state", str(world.state), "-o", "json"
    )
    assert code == 0, output
    events = json_lines(output)
    assert events[0]["event"] == "start" and events[0]["run_id"] == 1
    assert events[-1] == {
        "event": "finish",
        "run_id": 1,
        "name": "support-bot",
        "outcome": "promoted",
        "reason": "",
        "exit_code": 0,
        "final_split": {"baseline": 0.0, "canary": 100.0, "other": 0.0},
    }
    kinds = {e["event"] for e in events}
    assert {"step", "weight", "analysis", "phase"} <= kinds
    assert world.canary() == 100


def test_run_rolls_back_with_exit_1_and_a_live_view(world: World) -> None:
    world.canary_error_rate = 0.1
    code, output = cli(
        "rollout", "run", str(world.runbook), "--state", str(world.state), "-o", "text"
    )
    assert code == 1, output
    assert "rolled back (exit 1, canary at 0%)" in output
    assert "error_rate = 0.1 is above the maximum 0.02" in output
    assert world.flags.snapshot().raw == world.prior


def test_sigterm_takes_the_ctrl_c_path(world: World) -> None:
    calls = 0

    def terminate() -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    world.on_observe = terminate
    code, output = cli(
        "rollout", "run", str(world.runbook), "--state", str(world.state), "-o", "json"
    )
    assert code == 130, output
    assert json_lines(output)[-1]["outcome"] == "interrupted"
    assert world.flags.snapshot().raw == world.prior
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_dry_run_changes_nothing(world: World) -> None:
    code, output = cli(
        "rollout", "run", str(world.runbook), "--dry-run", "--state", str(world.state), "-o", "text"
    )
    assert code == 0, output
    assert "1. set_weight 10%" in output
    assert "4. hold for one analysis" in output
    assert "5. promote new" in output
    assert "dry run: nothing changed" in output
    assert world.flags.history == []
    assert not world.state.exists()


def test_dry_run_with_metrics_down_exits_3(world: World) -> None:
    world.metrics.down = True
    code, output = cli("rollout", "run", str(world.runbook), "--dry-run", "-o", "json")
    assert code == 3
    assert "scripted metrics source is down" in output


def test_invalid_runbook_exits_2(world: World) -> None:
    world.runbook.write_text(RUNBOOK.replace("set_weight: 10", "set_weight: 110"))
    code, output = cli("rollout", "run", str(world.runbook), "--state", str(world.state))
    assert code == 2
    assert "must be between 0 and 100" in output
    assert world.flags.history == []


def test_status_and_list_read_the_journal(world: World) -> None:
    assert (
        cli("rollout", "run", str(world.runbook), "--state", str(world.state), "-o", "json")[0] == 0
    )
    code, output = cli("rollout", "status", "--state", str(world.state), "-o", "json")
    assert code == 0, output
    status = json.loads(output)
    assert (status["run_id"], status["phase"], status["outcome"]) == (1, "promoted", "promoted")
    assert [e["type"] for e in status["events"]][:3] == ["flag_claimed", "phase", "step_started"]

    code, output = cli("rollout", "status", "1", "--state", str(world.state), "-o", "text")
    assert code == 0, output
    assert "run 1 support-bot: promoted" in output
    assert "last analysis" in output

    code, output = cli("rollout", "list", "--state", str(world.state), "-o", "json")
    assert code == 0, output
    assert [json.loads(line)["run_id"] for line in output.splitlines()] == [1]


def test_status_without_a_journal_or_run_exits_2(world: World) -> None:
    code, output = cli("rollout", "status", "--state", str(world.state))
    assert code == 2
    assert "no state database" in output
    StateStore(world.state).close()
    assert cli("rollout", "status", "--state", str(world.state))[0] == 2
    assert cli("rollout", "status", "7", "--state", str(world.state))[0] == 2


def open_run(state: Path, phase: str) -> int:
    from canaryctl.flags import FlagSnapshot

    with StateStore(state) as store:
        return store.create_run(
            name="support-bot",
            runbook={},
            host="box",
            pid=1,
            version="0.1.0",
            started_at=0.0,
            prior_flag=FlagSnapshot("k", 1, "{}"),
            phase=phase,
            state={},
        )


def test_approve_only_a_run_awaiting_approval(world: World) -> None:
    paused = open_run(world.state, "paused")
    code, output = cli("rollout", "approve", str(paused), "--state", str(world.state))
    assert code == 2
    assert "not awaiting approval" in output

    waiting = open_run(world.state, "awaiting_approval")
    code, output = cli(
        "rollout", "approve", str(waiting), "--state", str(world.state), "-o", "json"
    )
    assert code == 0, output
    assert json.loads(output)["kind"] == "approve"
    with StateStore(world.state) as store:
        assert [r.kind for r in store.pending_requests(waiting)] == ["approve"]
        assert store.pending_requests(paused) == []


def test_abort_posts_a_request_but_not_for_a_finished_run(world: World) -> None:
    running = open_run(world.state, "paused")
    code, output = cli("rollout", "abort", str(running), "--state", str(world.state), "-o", "text")
    assert code == 0, output
    assert f"rollout resume {running}" in output
    with StateStore(world.state) as store:
        assert [r.kind for r in store.pending_requests(running)] == ["abort"]
        store.finish_run(
            running,
            phase="aborted",
            outcome="aborted",
            reason="",
            exit_code=1,
            at=1.0,
            final_split=None,
        )
    code, output = cli("rollout", "abort", str(running), "--state", str(world.state))
    assert code == 2
    assert "already ended" in output


def test_abort_then_resume_of_a_dead_run_restores(world: World, tmp_path: Path) -> None:
    # A first process runs at 10% and dies 15 s into the pause: keep the journal and the flag as
    # it left them, then act as the next person to arrive: abort, and resume to carry it out.
    crashed_flags: list[MemoryFlagStore] = []

    def die() -> None:
        with sqlite3.connect(tmp_path / "first.db") as source, sqlite3.connect(world.state) as dest:
            source.backup(dest)
            dest.execute("UPDATE runs SET lease_until = 0")  # by now the dead one's lease ran out
        crashed_flags.append(copy.deepcopy(world.flags))

    world.clock.call_at(world.clock.now() + 15, die)
    document = load_document(world.runbook, expect=Rollout)
    run_rollout(document, state_path=tmp_path / "first.db", flags=world.flags, clock=world.clock)
    world.flags = crashed_flags[0]
    assert world.canary() == 10

    code, output = cli("rollout", "status", "1", "--state", str(world.state), "-o", "json")
    assert code == 0, output
    assert json.loads(output)["phase"] == "paused"
    assert cli("rollout", "abort", "1", "--state", str(world.state))[0] == 0
    code, output = cli("rollout", "resume", "1", "--state", str(world.state), "-o", "json")
    assert code == 1, output
    assert json_lines(output)[-1]["outcome"] == "aborted"
    assert world.flags.snapshot().raw == world.prior
    assert world.canary() == 0


def test_resume_from_the_journal_names_the_webhooks_that_will_not_fire(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The journal keeps a literal webhook URL by its origin only, so a resume without
    --runbook cannot post to it: one warning line says which hooks and how to keep them."""
    monkeypatch.setenv("ROLLBACK_HOOK", "http://127.0.0.1:9/kept")
    world.runbook.write_text(
        RUNBOOK
        + "  on_rollback:\n"
        + '    - {webhook: {url: "http://127.0.0.1:9/T000/B000/secret"}}\n'
        + "    - {webhook: {url_env: ROLLBACK_HOOK}}\n"
        + "  notify:\n"
        + '    - {webhook: {url: "http://127.0.0.1:9/notify-secret"}}\n'
    )
    crashed = tmp_path / "first.db"
    crashed_flags: list[MemoryFlagStore] = []

    def die() -> None:
        with sqlite3.connect(crashed) as source, sqlite3.connect(world.state) as dest:
            source.backup(dest)
            dest.execute("UPDATE runs SET lease_until = 0")  # by now the dead one's lease ran out
        crashed_flags.append(copy.deepcopy(world.flags))

    world.clock.call_at(world.clock.now() + 15, die)
    document = load_document(world.runbook, expect=Rollout)
    run_rollout(document, state_path=crashed, flags=world.flags, clock=world.clock)
    world.flags = crashed_flags[0]
    assert cli("rollout", "abort", "1", "--state", str(world.state))[0] == 0

    code, output = cli("rollout", "resume", "1", "--state", str(world.state), "-o", "json")
    assert code == 1, output
    warnings = [line for line in output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, output
    assert "spec.on_rollback[0] (http://127.0.0.1:9)" in warnings[0]
    assert "spec.notify[0] (http://127.0.0.1:9)" in warnings[0]
    assert "on_rollback[1]" not in warnings[0]  # its URL comes from the environment
    assert "--runbook" in warnings[0] and "url_env" in warnings[0]
    assert "secret" not in output
    assert world.flags.snapshot().raw == world.prior


@pytest.mark.parametrize("terminal", [True, False])
def test_views_render_every_event_without_failing(
    world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture, terminal: bool
) -> None:
    screen, lines = io.StringIO(), io.StringIO()
    console = Console(file=screen, force_terminal=terminal, width=120)
    document = load_document(world.runbook, expect=Rollout)
    result = run_rollout(
        document,
        state_path=tmp_path / "views.db",
        observers=[LiveView(console), JsonLinesView(lines)],
        flags=world.flags,
        metrics=world.metrics,
        clock=world.clock,
    )
    assert result.exit_code == 0
    assert not [r for r in caplog.records if "observer" in r.getMessage()]
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue())  # drop ANSI styling
    assert "error_rate <= 0.02" in shown
    assert "verdict: pass" in shown
    assert "promoted (exit 0, canary at 100%)" in shown
    events = [json.loads(line) for line in lines.getvalue().splitlines()]
    assert all(list(e)[:2] == ["event", "run_id"] for e in events)
    assert [e["event"] for e in events][-1] == "finish"


def test_run_from_current_is_refused_without_the_option_and_starts_above_the_split_with_it(
    world: World,
) -> None:
    world.flags.edit_by_someone_else(20)
    code, output = cli("rollout", "run", str(world.runbook), "--state", str(world.state))
    assert code == 2, output
    assert "serves new 20%, old 80%" in output and "--from-current" in output
    assert "Traceback" not in output
    code, output = cli(
        "rollout", "run", str(world.runbook), "--state", str(world.state), "--from-current"
    )
    assert code == 0, output
    # 10% is below 20%, so the run started at the 100% step, then promoted.
    assert [world.flags.split(s).canary for _, s in world.flags.history] == [100.0, 100.0]


def test_dry_run_makes_the_baseline_check_and_shows_what_from_current_skips(
    world: World,
) -> None:
    world.flags.edit_by_someone_else(20)
    run = ["rollout", "run", str(world.runbook), "--dry-run", "--state", str(world.state)]
    code, output = cli(*run, "-o", "text")
    assert code == 2 and "--from-current" in output, output
    code, output = cli(*run, "--from-current", "-o", "text")
    assert code == 0, output
    assert "1. set_weight 10% (skipped: --from-current)" in output
    assert "3. set_weight 100%\n" in output
    assert world.flags.history == []


def test_every_rollout_command_works_on_a_postgresql_state(
    world: World, postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = postgres.database()
    monkeypatch.setenv("CANARYCTL_STATE", url)  # the password stays in the environment
    outputs = []
    code, output = cli("rollout", "run", str(world.runbook), "-o", "json")
    outputs.append(output)
    assert code == 0, output
    assert json_lines(output)[-1]["outcome"] == "promoted" and world.canary() == 100
    code, output = cli("rollout", "list", "-o", "json")
    outputs.append(output)
    assert [(r["run_id"], r["outcome"]) for r in json_lines(output)] == [(1, "promoted")]
    code, output = cli("rollout", "status", "1", "-o", "text")
    outputs.append(output)
    assert code == 0 and "run 1 support-bot: promoted" in output

    waiting = open_run(url, "awaiting_approval")  # type: ignore[arg-type]
    for command in ("approve", "abort"):
        code, output = cli("rollout", command, str(waiting), "-o", "json")
        outputs.append(output)
        assert code == 0, output
    with StateStore(url) as store:
        assert [r.kind for r in store.pending_requests(waiting)] == ["approve", "abort"]
    code, output = cli("rollout", "status", "99", "-o", "text")
    outputs.append(output)
    assert code == 2 and f"no run 99 in {url.replace(f'postgres:{PASSWORD}@', '')}" in output
    assert not [o for o in outputs if PASSWORD in o]


def test_a_state_database_from_a_newer_canaryctl_exits_2(world: World) -> None:
    StateStore(world.state).close()
    with sqlite3.connect(world.state) as db:
        db.execute("UPDATE schema_version SET version = version + 1")
    code, output = cli("rollout", "list", "--state", str(world.state))
    assert code == 2
    assert "newer than this canaryctl knows" in output and "Traceback" not in output


def test_detach_submits_the_run_for_a_controller_and_moves_nothing(world: World) -> None:
    state = str(world.state)
    code, output = cli(
        "rollout", "run", str(world.runbook), "--detach", "--state", state, "-o", "text"
    )
    assert code == 0, output
    run_id = int(output.splitlines()[0])
    assert "a controller (`canaryctl controller serve`) drives it" in output
    code, output = cli("rollout", "status", str(run_id), "--state", state, "-o", "json")
    assert code == 0 and json.loads(output)["phase"] == "submitted"
    assert world.canary() == 0 and world.flags.history == []
    code, output = cli(
        "rollout", "run", str(world.runbook), "--detach", "--dry-run", "--state", state
    )
    assert code == 2 and "--detach submits the runbook as it is" in output
