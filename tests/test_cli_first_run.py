"""What a newcomer meets on a first run of the README and the docs: headers that say what a
column is, errors that say what to do next, views that fit an 80-column terminal."""

from __future__ import annotations

import io
import socket
from pathlib import Path

import pytest
import test_cli_rollout
from click.testing import CliRunner
from rich.console import Console
from test_cli_rollout import World

from canaryctl.analysis import Check, Evidence, Outcome, Verdict
from canaryctl.cli import main
from canaryctl.cli.views import LiveView
from canaryctl.controller import RunInfo, RunResult, StateStore
from canaryctl.flags.base import Split
from canaryctl.runbook import Rollout, load_document
from canaryctl.runbook.scenario import FaultSpec

RUNBOOKS = Path(__file__).resolve().parent.parent / "runbooks"
world = test_cli_rollout.world  # the CLI's rollout on fakes: a fixture


def cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def _submit(state: Path, name: str) -> int:
    with StateStore(str(state)) as store:
        return store.submit_run(
            name=name,
            runbook={"metadata": {"name": name}, "spec": {}},
            host="here",
            pid=1,
            version="0",
            at=1_800_000_000.0,
        )


def test_rollout_list_has_a_header_and_keeps_its_columns_in_line_under_a_long_name(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state.db"
    long_name = "support-bot-gpt4o-mini-for-the-free-tier-in-europe"  # past any fixed width
    _submit(state, "short")
    _submit(state, long_name)
    code, out, _ = cli("rollout", "list", "--state", str(state), "-o", "text")
    assert code == 0, out
    header, *rows = out.splitlines()
    assert header.split() == ["run", "name", "phase", "outcome", "started"]
    assert [row.split()[:3] for row in rows] == [
        ["2", long_name, "submitted"],
        ["1", "short", "submitted"],
    ]
    column = header.index("phase")
    assert all(row[column:].startswith("submitted") for row in rows), out


def test_rollout_list_of_an_empty_journal_says_so(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    with StateStore(str(state)):
        pass
    code, out, err = cli("rollout", "list", "--state", str(state), "-o", "text")
    assert (code, out) == (0, "")
    assert f"no runs in {state}" in err


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_dry_run_with_no_gateway_running_says_to_start_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's second block typed before its first: the shipped runbook, no lab."""
    for name in ("support-bot-gpt4o-mini.yaml", "flags.json"):
        (tmp_path / name).write_bytes((RUNBOOKS / name).read_bytes())
    port = _free_port()
    monkeypatch.setenv("CANARYCTL_GATEWAY", f"127.0.0.1:{port}")
    code, out, err = cli(
        "rollout", "run", str(tmp_path / "support-bot-gpt4o-mini.yaml"), "--dry-run", "-o", "text"
    )
    assert code == 3, (out, err)
    assert f"cannot read metrics from http://127.0.0.1:{port}/metrics" in err
    assert "nothing answers at that address: start the gateway it names" in err
    assert "canaryctl lab serve runbooks/lab.yaml" in err


def _check(slo: str, outcome: Outcome, canary: float, baseline: float | None) -> Check:
    evidence = Evidence("sequential", 0.0871, 80.0, canary, None, None, 231.0)
    return Check(slo, slo.split()[0], outcome, "", canary, baseline, 0.009712, 231, 4032, evidence)


def test_the_live_view_keeps_every_slo_whole_in_an_80_column_terminal() -> None:
    """The SLO column was squeezed by the others to `latency_p95_seco…`, and the outcome to
    `inconclus`, with the numbers of a real run (a relative bound of 0.009712): what is judged
    and its outcome are never cut (the SLO may wrap at a space)."""
    screen = io.StringIO()
    view = LiveView(Console(file=screen, width=80, force_terminal=False))
    slos = load_document(RUNBOOKS / "support-bot-gpt4o-mini.yaml", expect=Rollout).spec.slos
    view.on_start(
        RunInfo(
            1,
            "support-bot-gpt4o-mini",
            "gpt-4-turbo",
            "gpt-4o-mini",
            (),
            tuple(slos),
            Split(100.0, 0.0),
        )
    )
    checks = (
        _check("error_rate <= 0.02", Outcome.INCONCLUSIVE, 0.0105, None),
        _check("latency_p95_seconds <= 2", Outcome.PASS, 1.095, None),
        _check("cost_per_query_usd <= 0.002", Outcome.PASS, 8.316e-05, None),
        _check("error_rate <= baseline + 0.005", Outcome.PASS, 0.0105, 0.005111),
    )
    view.on_analysis(1, Verdict.of(checks, 0.0, 30.0))
    view.on_finish(RunResult(1, "support-bot-gpt4o-mini", "aborted", "", 1, Split(100.0, 0.0)))
    lines = screen.getvalue().splitlines()
    assert all(len(line) <= 80 for line in lines), screen.getvalue()
    assert "…" not in screen.getvalue()
    for check in checks:  # the metric and the outcome whole on the SLO's first line
        whole = [
            line for line in lines if f"│ {check.metric} " in line and check.outcome.value in line
        ]
        assert whole, (check.slo, screen.getvalue())


def test_detach_warns_that_a_written_webhook_url_will_not_fire_under_a_controller(
    tmp_path: Path,
) -> None:
    """docs/controller.md's first command submits the shipped runbook, whose on_rollback hook
    has a written URL: the controller drives the journal's copy, which keeps its origin alone.
    The submitter hears it at once, not from a controller log suggesting a --runbook option
    that `controller serve` does not have."""
    hook = "http://127.0.0.1:9000/hook/T0/secret-path"
    runbook = (RUNBOOKS / "support-bot-gpt4o-mini.yaml").read_text()
    assert 'url: "http://127.0.0.1:9000/hook"' in runbook
    (tmp_path / "rollout.yaml").write_text(runbook.replace("http://127.0.0.1:9000/hook", hook))
    code, out, err = cli(
        "rollout", "run", str(tmp_path / "rollout.yaml"), "--detach",
        "--state", str(tmp_path / "state.db"), "-o", "text",
    )  # fmt: skip
    assert code == 0, err
    assert out.splitlines()[0] == "1"
    warning = next(line for line in err.splitlines() if line.startswith("warning:"))
    assert "spec.on_rollback[0] (http://127.0.0.1:9000) will not fire" in warning
    assert "when a controller drives this run" in warning and "url_env" in warning
    assert "--runbook" not in warning
    assert "secret-path" not in out + err


def test_a_fault_reads_as_words_not_a_python_dict() -> None:
    """docs/chaos.md's second inject, as `chaos list`, `chaos run --dry-run` and reports show
    it: it was `stream_cut (after_chunks=3) on 100% of requests where {'model': 'gpt-4*'}`,
    though a stream fault never hits a request that is not streamed."""
    cut = FaultSpec.model_validate(
        {"fault": "stream_cut", "after_chunks": 3, "match": {"model": "gpt-4*"}, "ttl": "5m"}
    )
    assert cut.describe() == (
        "stream_cut (after_chunks=3) on 100% of streamed requests where model gpt-4*, ttl 300s"
    )
    error = FaultSpec.model_validate(
        {
            "fault": "error",
            "status": 503,
            "rate": 0.5,
            "match": {"path": "/v1/*", "headers": {"X-Tier": "free"}},
        }
    )
    assert error.describe() == (
        "error (status=503) on 50% of requests where path /v1/* and header X-Tier: free, ttl 300s"
    )


def test_state_help_does_not_say_sqlite_only() -> None:
    """`--state` takes PostgreSQL too; its help said "the run journal (SQLite): a SQLite path
    or a postgresql:// URL"."""
    for command in (["rollout", "list"], ["report"], ["backtest"]):
        code, out, _ = cli(*command, "--help")
        assert code == 0, out
        state_help = " ".join(out.split("--state PATH|URL", 1)[1].split("[default")[0].split())
        assert "(SQLite)" not in state_help and "postgresql:// URL" in state_help, state_help


def test_a_dry_run_says_what_an_undecided_step_does(world: World) -> None:
    """The shipped runbook holds an undecided step and asks a human (on_inconclusive: pause,
    max_wait 30m); the plan printed only the limits, so a newcomer expected a rollback."""
    runbook = world.runbook.read_text().replace(
        "method: threshold}", "on_inconclusive: pause, max_wait: 30m}"
    )
    world.runbook.write_text(runbook)
    code, out, _ = cli("rollout", "run", str(world.runbook), "--dry-run", "-o", "text")
    assert code == 0, out
    assert "analysis every 10s (sequential, alpha 0.05)" in out
    assert "then undecided: hold and ask a human, rolling back after 1800s" in out
