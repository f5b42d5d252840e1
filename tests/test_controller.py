"""The rollout controller end to end on fakes: a fake clock, an in-memory flag, scripted metrics.

Every test checks where the flag ends up, since that is what users feel.
"""

from __future__ import annotations

import copy
import io
import json
import re
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console

from canaryctl.cli.views import LiveView
from canaryctl.clock import FakeClock
from canaryctl.controller import (
    HookRunner,
    Phase,
    RolloutObserver,
    RolloutRunner,
    RunResult,
    StateStore,
    resume_rollout,
    run_rollout,
)
from canaryctl.controller.lease import Leases
from canaryctl.controller.runner import submit_rollout
from canaryctl.controller.step import RolloutState, plan, tick
from canaryctl.errors import FlagMismatch, InvalidInput, MetricsBackendError, StateBackendError
from canaryctl.flags import FlagSnapshot, MemoryFlagStore
from canaryctl.flags.file import FileFlagStore
from canaryctl.metrics import Observation, ScriptedMetricsSource, VariantStats
from canaryctl.notify import WebhookNotifier
from canaryctl.runbook import Rollout
from canaryctl.runbook.notify import NotifyWebhookSpec
from canaryctl.runbook.rollout import SloSpec
from tests.rollout_world import World

T0 = 1_700_000_000.0
BASELINE, CANARY = "gpt-4-turbo", "gpt-4o-mini"

STEPS = [
    {"set_weight": 10},
    {"pause": 60},
    {"set_weight": 50},
    {"pause": 60},
    {"set_weight": 100},
    {"pause": 60},
]


def make_rollout(
    steps: list[dict[str, Any]] | None = None,
    analysis: dict[str, Any] | None = None,
    slos: list[dict[str, Any]] | None = None,
    hooks: bool = True,
) -> Rollout:
    hook = [{"webhook": {"url": "http://hooks.test/notify?token=s3cret", "timeout": 2}}]
    return Rollout.model_validate(
        {
            "kind": "Rollout",
            "metadata": {"name": "support-bot"},
            "spec": {
                "flag": {
                    "provider": "file",
                    "path": "/tmp/flags.json",
                    "key": "support-bot-model",
                    "baseline": BASELINE,
                    "canary": CANARY,
                },
                "metrics": {"provider": "scrape", "targets": ["http://127.0.0.1:8080/metrics"]},
                "slos": slos
                or [
                    {"metric": "error_rate", "max": 0.02},
                    {"metric": "error_rate", "compare": "baseline", "max_increase": 0.01},
                ],
                "analysis": analysis or {"interval": 10, "min_requests": 50, "method": "threshold"},
                "steps": steps or STEPS,
                "on_rollback": hook if hooks else [],
                "on_promote": hook if hooks else [],
            },
        }
    )


def stats(requests: float, error_rate: float) -> VariantStats:
    return VariantStats(requests=requests, errors=requests * error_rate)


Script = Callable[[float, float], Observation]


def steady(canary_error_rate: float = 0.0, per_second: float = 10.0) -> Script:
    """Both variants get `per_second` requests a second; the baseline never errs."""

    def script(since: float, now: float) -> Observation:
        seconds = now - since
        return Observation(
            since,
            now,
            {
                BASELINE: stats(per_second * seconds, 0.0),
                CANARY: stats(per_second * seconds, canary_error_rate),
            },
        )

    return script


def no_data(since: float, now: float) -> Observation:
    return Observation(since, now, {})


class Harness:
    """One rollout's world: the fakes, the journal, the webhook inbox, a runner factory."""

    def __init__(self, tmp_path: Path, rollout: Rollout, script: Script) -> None:
        self.tmp_path = tmp_path
        self.rollout = rollout
        self.clock = FakeClock(T0)
        self.flags = MemoryFlagStore("support-bot-model", BASELINE, CANARY)
        self.prior = self.flags.snapshot()
        self.script = script
        # Preflight sees baseline traffic; the script is what the run observes.
        self.metrics = ScriptedMetricsSource(
            lambda s, n: self.script(s, n), self.clock.now, recent={BASELINE: 600.0}
        )
        self.state_path = tmp_path / "state.db"
        self.store = StateStore(self.state_path)
        self.hook_calls: list[dict[str, Any]] = []

        def inbox(request: httpx.Request) -> httpx.Response:
            self.hook_calls.append(
                {
                    "body": json.loads(request.content),
                    "canary_at_call": self.canary_weight(),
                    "url": str(request.url),
                }
            )
            return httpx.Response(204)

        self.hooks = HookRunner(httpx.Client(transport=httpx.MockTransport(inbox)))

    def canary_weight(self) -> float:
        return self.flags.split(self.flags.snapshot()).canary

    def runner(self, observers: tuple[RolloutObserver, ...] = ()) -> RolloutRunner:
        return RolloutRunner(
            self.rollout,
            flags=self.flags,
            metrics=self.metrics,
            store=self.store,
            clock=self.clock,
            observers=observers,
            hooks=self.hooks,
            poll_interval=5.0,
        )

    def run(self) -> RunResult:
        return self.runner().run()

    def other_terminal(self, kind: str, at: float, by: str = "alice") -> None:
        """Post a request through a second connection, as `canaryctl rollout` would."""

        def post() -> None:
            with StateStore(self.state_path) as other:
                other.request(1, kind, by=by, at=self.clock.now())

        self.clock.call_at(at, post)

    def weights_written(self) -> list[str]:
        return [comment.split(": ", 1)[1] for comment, _ in self.flags.history]

    def restored(self) -> bool:
        return json.loads(self.flags.snapshot().raw) == json.loads(self.prior.raw)


@pytest.fixture
def make(tmp_path: Path) -> Callable[..., Harness]:
    def factory(script: Script | None = None, **rollout: Any) -> Harness:
        return Harness(tmp_path, make_rollout(**rollout), script or steady())

    return factory


# -- the happy path ------------------------------------------------------------------------------


def test_healthy_canary_is_promoted_and_journaled(make: Callable[..., Harness]) -> None:
    h = make()
    result = h.run()
    assert result.exit_code == 0
    assert result.outcome == "promoted"
    assert result.final_split is not None and result.final_split.canary == 100
    assert json.loads(h.flags.snapshot().raw)["promoted"] is True
    assert h.weights_written() == ["canary to 10%", "canary to 50%", "canary to 100%", "promote"]

    record = h.store.run(result.run_id)
    assert record is not None
    assert (record.phase, record.outcome, record.exit_code) == ("promoted", "promoted", 0)
    assert record.prior_flag == h.prior
    assert record.final_split == {"baseline": 0.0, "canary": 100.0, "other": 0.0}
    flag_events = h.store.events(result.run_id, "flag_changed")
    assert [e.data["action"] for e in flag_events] == ["set_weight"] * 3 + ["promote"]
    assert all(e.result is not None for e in flag_events)
    assert flag_events[0].data["before"]["canary"] == 0
    assert flag_events[0].result is not None and flag_events[0].result["after"]["canary"] == 10
    analyses = h.store.events(result.run_id, "analysis")
    # 60 s pauses analysed every 10 s: six analyses per weight, all passing.
    assert len(analyses) == 18
    assert {a.data["outcome"] for a in analyses} == {"pass"}
    assert [h["body"]["outcome"] for h in h.hook_calls] == ["promoted"]


def test_each_weight_is_held_for_a_passing_analysis_even_without_a_pause(
    make: Callable[..., Harness],
) -> None:
    h = make(steps=[{"set_weight": 10}, {"set_weight": 100}])
    result = h.run()
    assert result.outcome == "promoted"
    analyses = h.store.events(result.run_id, "analysis")
    assert [(a.data["weight"], a.data["closing"]) for a in analyses] == [(10, True), (100, True)]
    set_at = [e.at for e in h.store.events(result.run_id, "flag_changed")]
    assert set_at[1] - set_at[0] == pytest.approx(10)  # one analysis interval at 10%


def test_a_broken_observer_does_not_steer(make: Callable[..., Harness]) -> None:
    class Broken(RolloutObserver):
        def __getattribute__(self, name: str) -> Any:
            if name.startswith("on_"):
                raise RuntimeError("display crashed")
            return super().__getattribute__(name)

    h = make()
    result = h.runner(observers=(Broken(),)).run()
    assert result.exit_code == 0


# -- rolling back ---------------------------------------------------------------------------------


@pytest.mark.parametrize("bad_from", [10, 50, 100])
def test_bad_canary_is_rolled_back_at_whichever_step_it_turns_bad(
    make: Callable[..., Harness], bad_from: float
) -> None:
    h = make()
    h.script = lambda s, n: steady(0.05 if h.canary_weight() >= bad_from else 0.0)(s, n)
    result = h.run()
    assert result.exit_code == 1
    assert result.outcome == "rolled_back"
    assert result.reason.startswith("SLO failed: error_rate = 0.05 is above the maximum 0.02")
    assert h.restored()
    assert h.weights_written()[-2:] == [f"canary to {bad_from:g}%", "restore"]
    assert result.final_split is not None and result.final_split.canary == 0
    # The hook hears about it after the flag is safe, and gets no secret in the journal.
    assert [(c["body"]["outcome"], c["canary_at_call"]) for c in h.hook_calls] == [
        ("rolled_back", 0.0)
    ]
    assert h.hook_calls[0]["body"]["last_verdict"]["outcome"] == "fail"
    record = h.store.run(result.run_id)
    assert record is not None and record.phase == "rolled_back"
    assert "s3cret" not in json.dumps(record.runbook)
    hook_events = h.store.events(result.run_id, "hook")
    assert hook_events[0].result == {
        "target": "http://hooks.test",  # its origin only: the path may be the secret
        "ok": True,
        "detail": "HTTP 204",
    }


def test_a_failing_webhook_changes_nothing(make: Callable[..., Harness]) -> None:
    h = make(steady(0.05))

    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("timed out", request=request)

    h.hooks = HookRunner(httpx.Client(transport=httpx.MockTransport(unreachable)))
    result = h.run()
    assert result.exit_code == 1
    assert h.restored()
    [hook] = h.store.events(result.run_id, "hook")
    assert hook.result == {
        "target": "http://hooks.test",  # its origin only: the path may be the secret
        "ok": False,
        "detail": "ConnectTimeout",
    }


@pytest.mark.parametrize(("failures", "outcome"), [(1, "promoted"), (2, "rolled_back")])
def test_failure_limit_tolerates_that_many_failed_analyses(
    make: Callable[..., Harness], failures: int, outcome: str
) -> None:
    calls = 0

    def flaky(since: float, now: float) -> Observation:
        nonlocal calls
        calls += 1
        bad = calls in (2, 8)[:failures]  # mid-pause analyses at two different weights
        return steady(0.05 if bad else 0.0)(since, now)

    h = make(
        flaky,
        analysis={"interval": 10, "min_requests": 50, "failure_limit": 1, "method": "threshold"},
    )
    result = h.run()
    assert result.outcome == outcome
    if outcome == "rolled_back":
        assert h.restored()


def test_failure_limit_zero_rolls_back_on_the_first_failure(make: Callable[..., Harness]) -> None:
    calls = 0

    def once(since: float, now: float) -> Observation:
        nonlocal calls
        calls += 1
        return steady(0.05 if calls == 2 else 0.0)(since, now)

    h = make(once)
    result = h.run()
    assert result.outcome == "rolled_back"
    assert len(h.store.events(result.run_id, "analysis")) == 2


@pytest.mark.parametrize("limit", [0, 2])
def test_no_data_never_promotes(make: Callable[..., Harness], limit: int) -> None:
    h = make(
        no_data,
        steps=[{"set_weight": 10}, {"pause": 30}],
        analysis={
            "interval": 10,
            "min_requests": 50,
            "inconclusive_limit": limit,
            "method": "threshold",
        },
    )
    result = h.run()
    assert result.exit_code == 1
    assert result.reason.startswith("inconclusive: not enough data")
    assert "too few requests" in result.reason
    assert h.restored()
    closing = [a for a in h.store.events(result.run_id, "analysis") if a.data["closing"]]
    assert len(closing) == limit + 1  # the pause's end, then `limit` extensions
    assert all(a.data["outcome"] == "inconclusive" for a in closing)


def test_inconclusive_during_a_pause_is_fine_and_an_extension_can_still_pass(
    make: Callable[..., Harness],
) -> None:
    # Traffic only starts 35 s in: the pause's analyses and its closing one are inconclusive,
    # the first extension (at 40 s) sees enough requests and passes.
    def late(since: float, now: float) -> Observation:
        return (
            steady(per_second=10)(max(since, T0 + 35), now)
            if now > T0 + 35
            else no_data(since, now)
        )

    h = make(
        late,
        steps=[{"set_weight": 10}, {"pause": 30}],
        analysis={
            "interval": 10,
            "min_requests": 50,
            "inconclusive_limit": 1,
            "method": "threshold",
        },
    )
    result = h.run()
    assert result.outcome == "promoted"
    outcomes = [a.data["outcome"] for a in h.store.events(result.run_id, "analysis")]
    assert outcomes == ["inconclusive", "inconclusive", "inconclusive", "pass"]


# -- other terminals -----------------------------------------------------------------------------


def test_abort_from_another_terminal_restores(make: Callable[..., Harness]) -> None:
    h = make()
    h.other_terminal("abort", at=T0 + 75)
    result = h.run()
    assert result.exit_code == 1
    assert (result.outcome, result.reason) == ("aborted", "aborted by alice")
    assert h.restored()
    assert h.weights_written() == ["canary to 10%", "canary to 50%", "restore"]
    record = h.store.run(result.run_id)
    assert record is not None and record.phase == "aborted"
    assert [c["body"]["outcome"] for c in h.hook_calls] == ["aborted"]


def test_approval_pause_waits_until_approved(make: Callable[..., Harness]) -> None:
    h = make(steps=[{"set_weight": 20}, {"pause": "approval"}, {"set_weight": 100}])
    seen: list[str] = []

    def look() -> None:
        with StateStore(h.state_path) as other:
            run = other.run(1)
            assert run is not None
            seen.append(run.phase)

    h.clock.call_at(T0 + 3000, look)
    h.other_terminal("approve", at=T0 + 3600)
    result = h.run()
    assert result.outcome == "promoted"
    assert seen == ["awaiting_approval"]
    to_100 = h.store.events(result.run_id, "flag_changed")[1]
    assert to_100.data["target_canary"] == 100
    assert to_100.at >= T0 + 3600
    # Analysis kept running while waiting.
    assert len(h.store.events(result.run_id, "analysis")) > 300


def test_a_failure_while_awaiting_approval_rolls_back(make: Callable[..., Harness]) -> None:
    h = make(steps=[{"set_weight": 20}, {"pause": "approval"}, {"set_weight": 100}])
    h.script = lambda s, n: steady(0.05 if n > T0 + 600 else 0.0)(s, n)
    result = h.run()
    assert result.outcome == "rolled_back"
    assert h.restored()
    assert h.clock.now() < T0 + 700


# -- backends failing ----------------------------------------------------------------------------


@pytest.mark.parametrize(("limit", "failures"), [(None, 5), (1, 2)])
def test_metrics_backend_down_rolls_back_with_exit_3(
    make: Callable[..., Harness], limit: int | None, failures: int
) -> None:
    analysis: dict[str, Any] = {"interval": 10, "min_requests": 50, "method": "threshold"}
    if limit is not None:
        analysis["consecutive_error_limit"] = limit
    h = make(analysis=analysis)

    def outage() -> None:
        h.metrics.down = True

    h.clock.call_at(T0 + 85, outage)
    result = h.run()
    assert result.exit_code == 3
    assert result.outcome == "error"
    assert result.reason.startswith(
        f"metrics backend error, not an SLO verdict: {failures} analyses in a row"
    )
    assert h.restored()
    errors = h.store.events(result.run_id, "error")
    assert any("scripted metrics source is down" in e.data["message"] for e in errors)


def test_metrics_backend_recovering_resets_the_count(make: Callable[..., Harness]) -> None:
    h = make()

    def set_down(value: bool) -> Callable[[], None]:
        def apply() -> None:
            h.metrics.down = value

        return apply

    h.clock.call_at(T0 + 15, set_down(True))
    h.clock.call_at(T0 + 35, set_down(False))  # two failed analyses, then it answers again
    h.clock.call_at(T0 + 75, set_down(True))
    h.clock.call_at(T0 + 95, set_down(False))
    assert h.run().outcome == "promoted"


def test_preflight_failures_change_nothing(make: Callable[..., Harness]) -> None:
    h = make()
    h.metrics.down = True
    with pytest.raises(MetricsBackendError):
        h.run()
    assert h.flags.history == []
    assert h.store.latest_run() is None

    class Missing(MemoryFlagStore):
        def snapshot(self) -> FlagSnapshot:
            raise FlagMismatch("flag 'support-bot-model' has no variation 'gpt-4o-mini'")

    h.flags = Missing("support-bot-model", BASELINE, CANARY)
    with pytest.raises(FlagMismatch) as caught:
        h.run()
    assert caught.value.exit_code == 2
    assert h.flags.history == []


def test_flag_conflict_stops_without_touching_the_humans_edit(
    make: Callable[..., Harness],
) -> None:
    h = make()
    h.clock.call_at(T0 + 30, lambda: h.flags.edit_by_someone_else(42))
    result = h.run()
    assert result.exit_code == 3
    assert result.outcome == "error"
    assert "someone else changed it" in result.reason
    assert h.canary_weight() == 42
    assert h.weights_written() == ["canary to 10%"]


def test_a_human_edit_during_a_long_pause_stops_the_run_at_the_next_analysis(
    make: Callable[..., Harness],
) -> None:
    h = make(steps=[{"set_weight": 10}, {"pause": 3600}, {"set_weight": 100}])
    h.clock.call_at(T0 + 35, lambda: h.flags.edit_by_someone_else(0))
    result = h.run()
    assert result.exit_code == 3 and "someone else changed it" in result.reason
    ended = h.store.run(1).ended_at  # type: ignore[union-attr]
    assert ended is not None and ended <= T0 + 35 + 10  # one analysis interval, not the hour
    assert h.weights_written() == ["canary to 10%"] and h.canary_weight() == 0


UNDECIDED_STEPS = [{"set_weight": 10}, {"pause": 20}, {"set_weight": 100}]
UNDECIDED_ANALYSIS = {
    "interval": 10,
    "min_requests": 50,
    "method": "threshold",
    "inconclusive_limit": 1,
    "on_inconclusive": "pause",
    "max_wait": 60,
}


def data_from(at: float) -> Script:
    """Before `at` only the baseline has requests (the canary none: undecided), then both do,
    healthy. The baseline's window is what a relative SLO at 100% is judged against."""

    def script(since: float, now: float) -> Observation:
        if now >= at:
            return steady()(since, now)
        return Observation(since, now, {BASELINE: stats(10.0 * (now - since), 0.0)})

    return script


def test_an_undecided_step_pauses_notifies_and_goes_on_when_approved(
    make: Callable[..., Harness],
) -> None:
    # No data at 10%: closings at 20 and 30 are undecided, the second past the limit: pause.
    h = make(data_from(T0 + 50), steps=UNDECIDED_STEPS, analysis=UNDECIDED_ANALYSIS, hooks=False)
    bodies: list[dict[str, Any]] = []

    def inbox(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(204)

    notifier = WebhookNotifier(
        NotifyWebhookSpec(url="http://hooks.test/x"),
        client=httpx.Client(transport=httpx.MockTransport(inbox)),
    )
    screen = io.StringIO()
    h.other_terminal("approve", at=T0 + 45)
    view = LiveView(Console(file=screen, width=200))
    result = h.runner(observers=(notifier, view)).run()
    notifier.close(grace=30)
    assert result.outcome == "promoted"
    assert h.weights_written() == ["canary to 10%", "canary to 100%", "promote"]
    phases = [(e.data["to"], e.data["reason"]) for e in h.store.events(1, "phase")]
    paused = [reason for to, reason in phases if to == "awaiting_approval"]
    assert len(paused) == 1 and paused[0].startswith("undecided at 10% after 1 extensions")
    assert "max_wait (60s)" in paused[0]
    [sent] = [b for b in bodies if b["event"] == "paused"]
    assert sent["weight"] == 10 and sent["reason"] == paused[0]
    assert "is paused at 10% waiting for approve or abort" in sent["text"]
    shown = screen.getvalue()
    assert "canaryctl rollout approve 1" in shown and "canaryctl rollout abort 1" in shown


def test_the_cli_shows_an_undecided_pause_and_approves_it(make: Callable[..., Harness]) -> None:
    """While the run waits, another terminal's `rollout status` shows why, and `rollout
    approve` (which accepts only a run awaiting approval) lets it go on."""
    from click.testing import CliRunner

    from canaryctl.cli import main as cli

    h = make(data_from(T0 + 50), steps=UNDECIDED_STEPS, analysis=UNDECIDED_ANALYSIS, hooks=False)
    seen: dict[str, str] = {}

    class OtherTerminal(RolloutObserver):
        def on_phase(self, run_id: int, phase: Phase, reason: str) -> None:
            if phase is Phase.AWAITING_APPROVAL and not seen:
                state = ["--state", str(h.state_path)]
                status = CliRunner().invoke(cli, ["rollout", "status", "1", *state, "-o", "text"])
                approve = CliRunner().invoke(cli, ["rollout", "approve", "1", *state])
                seen.update(status=status.output, approve=f"{approve.exit_code} {approve.output}")

    result = h.runner(observers=(OtherTerminal(),)).run()
    assert result.outcome == "promoted"
    assert "awaiting_approval" in seen["status"]
    assert "reason: undecided at 10% after 1 extensions" in seen["status"]
    assert seen["approve"].startswith("0 ")
    [request] = h.store.events(1, "request")
    assert request.data["kind"] == "approve" and request.at < T0 + 50  # before data could decide


def test_an_undecided_step_nobody_answers_rolls_back_at_max_wait(
    make: Callable[..., Harness],
) -> None:
    h = make(no_data, steps=UNDECIDED_STEPS, analysis=UNDECIDED_ANALYSIS, hooks=False)
    result = h.run()
    assert (result.outcome, result.exit_code) == ("rolled_back", 1)
    assert result.reason.startswith(
        "inconclusive: still undecided after max_wait (60s) at 10%, neither approved nor aborted"
    )
    assert h.restored()
    ended = h.store.run(1).ended_at  # type: ignore[union-attr]
    assert ended == T0 + 30 + 60  # paused at the second closing, rolled back at its deadline


def test_a_hand_edit_of_a_file_flag_that_keeps_its_version_stops_the_run_at_the_next_analysis(
    make: Callable[..., Harness], tmp_path: Path
) -> None:
    """Issue 23, point 5: a human puts a failing canary at 100% by hand, version unchanged. The
    run stops (exit 3) at its next analysis, not tens of seconds later, and its reason keeps
    both the edit and the failed SLO the run had already found (failure_limit 1 tolerated it)."""
    flag_file = tmp_path / "flags.json"
    flag = {
        "key": "support-bot-model", "version": 3, "on": True, "variations": [BASELINE, CANARY],
        "fallthrough": {"variation": 0}, "offVariation": 0, "salt": "s", "targets": [],
        "rules": [],
    }  # fmt: skip
    flag_file.write_text(json.dumps({"flags": {"support-bot-model": flag}, "segments": {}}))
    h = make(
        steady(canary_error_rate=0.5),
        steps=[{"set_weight": 10}, {"pause": 3600}, {"set_weight": 100}],
        analysis={"interval": 10, "min_requests": 50, "method": "threshold", "failure_limit": 1},
        hooks=False,  # the harness's hook inbox reads the flag, which is the human's now
    )
    h.flags = FileFlagStore(flag_file, "support-bot-model", BASELINE, CANARY)  # type: ignore[assignment]

    def by_hand() -> None:
        doc = json.loads(flag_file.read_text())
        entry = doc["flags"]["support-bot-model"]
        assert entry["version"] == 4  # our write of 10%
        entry["fallthrough"] = {"variation": 1}  # everyone on the canary, version kept
        flag_file.write_text(json.dumps(doc))

    h.clock.call_at(T0 + 15, by_hand)
    result = h.run()
    assert (result.outcome, result.exit_code) == ("error", 3)
    assert "was edited since our last write without changing its version (4)" in result.reason
    assert "fallthrough changed" in result.reason
    assert "SLO failed: " in result.reason and "error_rate" in result.reason
    analyses = h.store.events(1, "analysis")
    assert [a.data["outcome"] for a in analyses] == ["fail"]  # nothing judged the edited split
    ended = h.store.run(1).ended_at  # type: ignore[union-attr]
    assert ended is not None and ended <= T0 + 15 + 10  # within one interval of the edit
    entry = json.loads(flag_file.read_text())["flags"]["support-bot-model"]
    assert entry["fallthrough"] == {"variation": 1}  # the human's edit stands


def test_ctrl_c_restores_and_exits_130(make: Callable[..., Harness]) -> None:
    h = make()

    def ctrl_c() -> None:
        raise KeyboardInterrupt

    h.clock.call_at(T0 + 70, ctrl_c)
    result = h.run()
    assert result.exit_code == 130
    assert result.outcome == "interrupted"
    assert h.restored()
    record = h.store.run(result.run_id)
    assert record is not None and record.phase == "interrupted"


def test_an_unexpected_error_restores_then_propagates(make: Callable[..., Harness]) -> None:
    h = make()

    def bug(since: float, now: float) -> Observation:
        raise ZeroDivisionError("bug in a source")

    h.script = bug
    with pytest.raises(ZeroDivisionError):
        h.run()
    assert h.restored()
    record = h.store.latest_run()
    assert record is not None and record.outcome == "error"


# -- resume after a crash -------------------------------------------------------------------------


class Crashed:
    """What a process killed at some moment leaves behind: the journal file and the flag."""

    def __init__(self, h: Harness) -> None:
        self.h = h
        self.state_path = h.tmp_path / "crashed.db"
        self.flags: MemoryFlagStore | None = None
        self.at = 0.0

    def now(self) -> None:
        dest = sqlite3.connect(self.state_path)
        with sqlite3.connect(self.h.state_path) as source:
            source.backup(dest)
        with dest:  # the dead process's lease has run out by the time anyone resumes
            dest.execute("UPDATE runs SET lease_until = 0")
        dest.close()
        self.flags = copy.deepcopy(self.h.flags)
        self.at = self.h.clock.now()

    def resume(self, script: Script | None = None) -> tuple[RunResult, MemoryFlagStore]:
        assert self.flags is not None
        clock = FakeClock(self.at + 5)
        metrics = ScriptedMetricsSource(script or steady(), clock.now)
        result = resume_rollout(
            1,
            state_path=self.state_path,
            rollout=self.h.rollout,
            clock=clock,
            flags=self.flags,
            metrics=metrics,
        )
        return result, self.flags


def test_resume_after_a_crash_continues_from_the_stored_step(
    make: Callable[..., Harness],
) -> None:
    h = make(hooks=False)
    crash = Crashed(h)
    h.clock.call_at(T0 + 90, crash.now)  # 30 s into the pause at 50%
    h.run()
    result, flags = crash.resume()
    assert result.exit_code == 0
    comments = [c.split(": ", 1)[1] for c, _ in flags.history]
    assert comments == ["canary to 10%", "canary to 50%", "canary to 100%", "promote"]
    with StateStore(crash.state_path) as store:
        types = [e.type for e in store.events(1)]
        assert "resumed" in types
        analyses_at_50 = [
            a for a in store.events(1, "analysis") if a.data["weight"] == 50 and a.at > crash.at
        ]
        # The dead driver's analysis was due as it died: judged at once on resume (not an
        # interval later), then the hold restarted in full: six more.
        assert analyses_at_50[0].at == crash.at + 5
        assert len(analyses_at_50) == 7
        assert store.run(1).outcome == "promoted"  # type: ignore[union-attr]


def test_resume_adopts_a_write_that_landed_before_the_crash(
    make: Callable[..., Harness],
) -> None:
    h = make(hooks=False)
    crash = Crashed(h)

    class DiesAfterWriting(MemoryFlagStore):
        def set_canary_weight(
            self, percent: float, *, expect_version: int, comment: str
        ) -> FlagSnapshot:
            snapshot = super().set_canary_weight(
                percent, expect_version=expect_version, comment=comment
            )
            if percent == 50 and not crash.at:  # once: the resumed copy must not crash too
                crash.now()  # the write landed; the journal never heard back
            return snapshot

    h.flags = DiesAfterWriting("support-bot-model", BASELINE, CANARY)
    h.run()
    with StateStore(crash.state_path) as store:
        last = store.events(1, "flag_changed")[-1]
        assert (last.data["target_canary"], last.result) == (50, None)
    result, flags = crash.resume()
    assert result.outcome == "promoted"
    assert json.loads(flags.snapshot().raw)["promoted"] is True


def test_requests_posted_while_no_runner_lives_are_honoured_on_resume(
    make: Callable[..., Harness],
) -> None:
    h = make(hooks=False, steps=[{"set_weight": 20}, {"pause": "approval"}, {"set_weight": 100}])
    crash = Crashed(h)
    h.clock.call_at(T0 + 60, crash.now)
    h.other_terminal("abort", at=T0 + 61)  # ends the first process's run; not in the copy
    h.run()
    with StateStore(crash.state_path) as store:
        assert store.run(1).phase == "awaiting_approval"  # type: ignore[union-attr]
        store.request(1, "approve", by="alice", at=crash.at + 1)
    result, flags = crash.resume()
    assert result.outcome == "promoted"
    assert json.loads(flags.snapshot().raw)["promoted"] is True


def test_resume_leaves_a_flag_a_human_moved_alone(make: Callable[..., Harness]) -> None:
    h = make(hooks=False)
    crash = Crashed(h)
    h.clock.call_at(T0 + 90, crash.now)
    h.run()
    assert crash.flags is not None
    crash.flags.edit_by_someone_else(0)
    result, flags = crash.resume()
    assert result.exit_code == 3
    assert "someone else changed it" in result.reason
    assert len(flags.history) == 2  # nothing written after the human's edit


def test_resume_refuses_a_run_whose_owner_still_lives(make: Callable[..., Harness]) -> None:
    h = make(hooks=False)
    crash = Crashed(h)
    h.clock.call_at(T0 + 90, crash.now)
    h.run()
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        alive = f"{socket.gethostname()}:{owner.pid}:cafe"
        with sqlite3.connect(crash.state_path) as db:  # its lease is fresh, its process alive
            db.execute(
                "UPDATE runs SET owner = ?, lease_until = ? WHERE id = 1", (alive, time.time() + 60)
            )
        with pytest.raises(InvalidInput, match=f"still driven by {alive}"):
            crash.resume()
        assert crash.flags is not None and len(crash.flags.history) == 2  # untouched
    finally:
        owner.kill()
        owner.wait()
    result, _ = crash.resume()  # its owner is gone on this host: its lease is void at once
    assert result.outcome == "promoted"


def test_a_new_run_refuses_a_flag_held_by_an_unfinished_run(
    make: Callable[..., Harness],
) -> None:
    h = make(hooks=False)
    crash = Crashed(h)
    h.clock.call_at(T0 + 90, crash.now)
    h.run()
    assert crash.flags is not None
    with StateStore(crash.state_path) as store:
        runner = RolloutRunner(
            h.rollout,
            flags=crash.flags,
            metrics=ScriptedMetricsSource(steady(), FakeClock(crash.at).now),
            store=store,
            clock=FakeClock(crash.at),
        )
        with pytest.raises(InvalidInput, match="still held by run 1"):
            runner.run()
        assert len(store.runs()) == 1
    assert len(crash.flags.history) == 2  # the half-moved split was not taken as "prior"


@pytest.mark.parametrize("landed", [False, True], ids=["before-the-restore", "after-it"])
def test_resume_finishes_a_run_left_rolling_back(
    make: Callable[..., Harness], landed: bool
) -> None:
    """Issue 24: a process that dies once it decided to roll back leaves the run in phase
    `rolling_back`, the restore not journaled (landed or not); `resume` finishes it."""
    h = make(steady(canary_error_rate=0.5), hooks=False)
    crash = Crashed(h)

    class DiesRestoring(MemoryFlagStore):
        def restore(
            self, saved: FlagSnapshot, *, expect_version: int, comment: str
        ) -> FlagSnapshot:
            if landed:
                snapshot = super().restore(saved, expect_version=expect_version, comment=comment)
            if not crash.at:  # once: the resumed copy must not die too
                crash.now()
            if not landed:
                snapshot = super().restore(saved, expect_version=expect_version, comment=comment)
            return snapshot

    h.flags = DiesRestoring("support-bot-model", BASELINE, CANARY)
    h.prior = h.flags.snapshot()
    h.run()
    assert crash.flags is not None
    with StateStore(crash.state_path) as store:
        record = store.run(1)
        assert record is not None and record.phase == "rolling_back" and not record.finished
        assert store.events(1, "flag_changed")[-1].result is None  # the restore: in flight
    assert crash.flags.split(crash.flags.snapshot()).canary == (0 if landed else 10)
    result, flags = crash.resume()
    assert (result.outcome, result.exit_code) == ("rolled_back", 1), result.reason
    assert "SLO" in result.reason or "error_rate" in result.reason, result.reason
    assert json.loads(flags.snapshot().raw) == json.loads(h.prior.raw)
    with StateStore(crash.state_path) as store:
        record = store.run(1)
        assert record is not None and record.phase == "rolled_back" and record.finished


def test_a_database_lost_while_resuming_restores_and_the_next_resume_journals_it(
    make: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 24: the state database failing once the resumed driver claimed the flag (here as
    it journals `resumed`) must not leave the canary unjudged for the whole outage."""
    h = make(hooks=False)
    crash = Crashed(h)
    h.clock.call_at(T0 + 90, crash.now)  # 30 s into the pause at 50%
    h.run()
    assert crash.flags is not None and crash.flags.split(crash.flags.snapshot()).canary == 50
    record_event = StateStore.record_event

    def down_on_resume(store: StateStore, run_id: int, type_: str, *args: Any, **kw: Any) -> int:
        if type_ == "resumed":
            raise StateBackendError("state database crashed.db: connection refused")
        return record_event(store, run_id, type_, *args, **kw)

    monkeypatch.setattr(StateStore, "record_event", down_on_resume)
    with pytest.raises(StateBackendError, match="the flag was restored"):
        crash.resume()
    assert json.loads(crash.flags.snapshot().raw) == json.loads(h.prior.raw)
    mark = crash.flags.claimed_by
    assert mark is not None and mark.restored == crash.flags.snapshot().version
    monkeypatch.setattr(StateStore, "record_event", record_event)
    with sqlite3.connect(crash.state_path) as db:  # the failed resume's lease has run out
        db.execute("UPDATE runs SET lease_until = 0")
    result, flags = crash.resume()  # the database is back
    assert result.outcome == "error" and "this run restored the flag" in result.reason
    assert len(flags.history) == 3  # 10%, 50%, the restore: nothing written since
    assert flags.claimed_by is None


def test_resume_claims_as_the_submitted_run_whose_driver_died_before_journaling_its_claim(
    make: Callable[..., Harness],
) -> None:
    """A controller's first driver of a submitted run claimed the flag, then lost the run
    before `flag_claimed` was journaled: the next driver claims with the token the submitted
    run journaled first, instead of being refused by its own run's claim."""
    h = make(hooks=False)
    run_id, _ = submit_rollout(h.rollout, state_path=h.state_path)
    leases = Leases(h.store)
    assert [r.id for r in leases.acquire(1)] == [run_id] == [1]
    crash = Crashed(h)
    h.clock.call_at(T0 + 90, crash.now)
    RolloutRunner(
        h.rollout,
        flags=h.flags,
        metrics=h.metrics,
        store=h.store,
        clock=h.clock,
        hooks=h.hooks,
        poll_interval=5.0,
        leases=leases,
    ).run(submitted=run_id)
    with sqlite3.connect(crash.state_path) as db:  # it died before journaling its claim
        db.execute("DELETE FROM events WHERE type = 'flag_claimed'")
    result, flags = crash.resume()
    assert result.outcome == "promoted", result.reason
    assert json.loads(flags.snapshot().raw)["promoted"] is True


def test_resume_restores_when_metrics_are_gone(make: Callable[..., Harness]) -> None:
    h = make(hooks=False)
    crash = Crashed(h)
    h.clock.call_at(T0 + 90, crash.now)
    h.run()

    def gone(since: float, now: float) -> Observation:
        raise AssertionError("never observed")

    assert crash.flags is not None
    clock = FakeClock(crash.at + 5)
    metrics = ScriptedMetricsSource(gone, clock.now)
    metrics.down = True
    result = resume_rollout(
        1,
        state_path=crash.state_path,
        rollout=h.rollout,
        clock=clock,
        flags=crash.flags,
        metrics=metrics,
    )
    assert result.exit_code == 3
    assert json.loads(crash.flags.snapshot().raw) == json.loads(h.prior.raw)


# -- sequential analysis --------------------------------------------------------------------------

SEQUENTIAL = {"interval": 10, "min_requests": 50, "method": "sequential", "alpha": 0.05}
# At 100% the baseline serves nothing: the absolute bound alone judges that step. Both SLOs are
# tested sequentially, so each is rejected at m / alpha = 2 / 0.05 = 40.
ERRORS_NO_WORSE = [
    {"metric": "error_rate", "compare": "baseline", "max_ratio": 1.0},
    {"metric": "error_rate", "max": 0.5},
]


def weighted(h: Harness, canary_error_rate: float, baseline_error_rate: float = 0.01) -> Script:
    """100 requests a second split by the flag's weight, errors at the given rates."""

    def script(since: float, now: float) -> Observation:
        served = 100 * (now - since)
        share = h.canary_weight() / 100
        return Observation(
            since,
            now,
            {
                BASELINE: stats(served * (1 - share), baseline_error_rate),
                CANARY: stats(served * share, canary_error_rate),
            },
        )

    return script


def test_sequential_analysis_rolls_back_a_bad_canary_with_its_evidence(
    make: Callable[..., Harness],
) -> None:
    h = make(analysis=SEQUENTIAL, slos=ERRORS_NO_WORSE)
    h.script = weighted(h, canary_error_rate=0.05)
    screen = io.StringIO()
    result = h.runner(observers=(LiveView(Console(file=screen, width=160)),)).run()
    assert result.outcome == "rolled_back" and h.restored()
    assert re.search(r"fail e=\d+(\.\d+)?/40", screen.getvalue())  # the live view shows why
    assert "the canary is worse than allowed" in result.reason
    assert h.weights_written() == ["canary to 10%", "restore"]
    failed = h.store.events(result.run_id, "analysis")[-1].data["checks"][0]
    assert failed["outcome"] == "fail"
    assert failed["evidence"]["e_value"] >= failed["evidence"]["threshold"] == 40
    assert failed["evidence"]["lower"] > 1


def test_sequential_evidence_carries_across_steps_and_a_resume(
    make: Callable[..., Harness],
) -> None:
    h = make(analysis=SEQUENTIAL, slos=ERRORS_NO_WORSE, hooks=False)
    h.script = weighted(h, canary_error_rate=0.01)
    crash = Crashed(h)
    h.clock.call_at(T0 + 90, crash.now)  # 30 s into the pause at 50%
    assert h.run().outcome == "promoted"
    with StateStore(crash.state_path) as store:
        record = store.run(1)
        assert record is not None
        before = record.state["ledger"]["tests"]["0:" + SloSpec(**ERRORS_NO_WORSE[0]).describe()]
        events_before = before["ratio"]["events"]
    assert events_before > 0  # the 10% step's evidence is still there at 50%

    result, _ = crash.resume(weighted_at(50, canary_error_rate=0.01))
    assert result.outcome == "promoted"
    with StateStore(crash.state_path) as store:
        resumed = [a for a in store.events(1, "analysis") if a.at > crash.at]
        samples = [a.data["checks"][0]["evidence"]["samples"] for a in resumed[:2]]
    # The resumed run goes on from the stored evidence: its first analysis, due as the process
    # died, is judged at once on an empty window (the stored evidence exactly), the next adds.
    assert samples[0] == events_before and samples[1] > events_before


def weighted_at(percent: float, canary_error_rate: float) -> Script:
    """As `weighted`, for a resumed run whose flag the harness does not hold."""

    def script(since: float, now: float) -> Observation:
        served = 100 * (now - since)
        return Observation(
            since,
            now,
            {
                BASELINE: stats(served * (1 - percent / 100), 0.01),
                CANARY: stats(served * percent / 100, canary_error_rate),
            },
        )

    return script


# -- the pure tick -------------------------------------------------------------------------------


def test_plan_adds_a_hold_after_weights_without_a_pause() -> None:
    items = plan(make_rollout(steps=[{"set_weight": 5}, {"set_weight": 50}, {"pause": 60}]).spec)
    assert [i.describe() for i in items] == [
        "set_weight 5%",
        "hold for one analysis",
        "set_weight 50%",
        "pause 60s",
    ]


def test_tick_is_pure_and_state_round_trips() -> None:
    spec = make_rollout().spec
    state = RolloutState()
    first = tick(spec, state, T0, None)
    assert tick(spec, state, T0, None) == first
    assert state == RolloutState()
    assert RolloutState.from_dict(first.state.to_dict()) == first.state
    assert first.state.phase is Phase.PROGRESSING


# -- every weight is judged -----------------------------------------------------------------------

RELATIVE_ONLY = [{"metric": "error_rate", "compare": "baseline", "max_increase": 0.01}]


@pytest.mark.parametrize("method", ["sequential", "threshold"])
def test_a_healthy_canary_with_only_relative_slos_is_promoted_through_100_percent(
    make: Callable[..., Harness], method: str
) -> None:
    """Before, the 100% step had no check, ended `inconclusive: not enough data ()` and rolled a
    healthy canary back: now its relative SLO is judged against the baseline's last window."""
    h = make(slos=RELATIVE_ONLY, analysis={"interval": 10, "min_requests": 50, "method": method})
    result = h.run()
    assert (result.exit_code, result.outcome) == (0, "promoted"), result.reason
    at_full = [a.data for a in h.store.events(result.run_id, "analysis") if a.data["weight"] == 100]
    assert at_full and all(a["outcome"] == "pass" for a in at_full)
    [check] = at_full[-1]["checks"]
    assert "judged against the baseline's last window before this weight" in check["reason"]


@pytest.mark.parametrize("method", ["sequential", "threshold"])
def test_a_canary_failing_half_its_requests_at_100_percent_is_rolled_back_there(
    make: Callable[..., Harness], method: str
) -> None:
    h = make(slos=RELATIVE_ONLY, analysis={"interval": 10, "min_requests": 50, "method": method})
    h.script = lambda s, n: steady(0.5 if h.canary_weight() >= 100 else 0.0)(s, n)
    result = h.run()
    assert result.outcome == "rolled_back"
    assert result.reason.startswith(
        "SLO failed: error_rate <= baseline + 0.01: judged against the baseline's last window"
    )
    assert h.weights_written()[-2:] == ["canary to 100%", "restore"] and h.restored()


def test_a_canary_failing_half_its_requests_fast_is_rolled_back_undecided_never_promoted(
    tmp_path: Path,
) -> None:
    """The runner end to end (fake clock, scripted counts): a canary failing 50% of its requests
    in 0.4 s under a runbook that bounds latency only was promoted on its fast p95; the built-in
    check holds every closing analysis, so the run ends undecided at the first weight, the flag
    restored."""
    world = World(
        tmp_path,
        slos=[{"metric": "latency_p95_seconds", "max": 2.0}],
        analysis={"interval": "10s", "min_requests": 50, "inconclusive_limit": 2},
    )
    world.canary_error_rate = 0.5
    result = run_rollout(
        world.rollout, state_path=world.state, clock=world.clock, flags=world.flags,
        metrics=world.metrics,
    )  # fmt: skip
    assert result.outcome == "rolled_back", result.reason
    assert result.reason.startswith("inconclusive: "), result.reason
    assert "model failed 250 of its 500 requests in the window" in result.reason  # 10/s, 50 s
    assert world.canary() == 0
