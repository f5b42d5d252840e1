"""`canaryctl rollout run|status|list|abort|approve|resume`: thin commands over the controller.

Other terminals talk to a running rollout through the state database: `abort` and `approve`
insert a request that the runner picks up at its next poll (about a second).
"""

from __future__ import annotations

import getpass
import json
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from canaryctl.cli.arguments import ID
from canaryctl.cli.main import (
    existing_state,
    output_option,
    signals_as_ctrl_c,
    state_option,
    wants_json,
)
from canaryctl.errors import InvalidInput
from canaryctl.times import when

if TYPE_CHECKING:
    from canaryctl.controller import RolloutObserver, RunResult, StateStore
    from canaryctl.controller.store import RunRecord
    from canaryctl.runbook import Rollout

# The controller, the views and the document models are imported by the commands that use
# them, so `rollout --help` starts as fast as `canaryctl --help`.

__all__ = ["rollout"]


_state_option = state_option("the run journal")


@click.group()
def rollout() -> None:
    """Step a canary model's share of traffic up through its flag, watching SLOs."""


def _view(output: str | None) -> RolloutObserver:
    from canaryctl.cli.views import JsonLinesView, LiveView

    return JsonLinesView() if wants_json(output) else LiveView()


def _end(result: RunResult) -> None:
    click.get_current_context().exit(result.exit_code)


def _metrics_port_option(func: Any) -> Any:
    return click.option(
        "--metrics-port",
        type=click.IntRange(0, 65535),
        default=None,
        help="serve the controller's Prometheus metrics on 127.0.0.1:PORT while it runs",
    )(func)


@contextmanager
def _observers(output: str | None, metrics_port: int | None) -> Iterator[list[RolloutObserver]]:
    """The view, and the metrics exporter when asked for (closed when the run ends)."""
    if metrics_port is None:
        yield [_view(output)]
        return
    from canaryctl.controller.exporter import RolloutExporter

    exporter = RolloutExporter(metrics_port)
    click.echo(f"controller metrics at {exporter.url}", err=True)
    try:
        yield [_view(output), exporter]
    finally:
        exporter.close()


@rollout.command("run")
@click.argument("runbook", type=click.Path(dir_okay=False))
@_state_option
@output_option
@click.option("--dry-run", is_flag=True, help="read the flag, check metrics, print the plan")
@click.option(
    "--from-current",
    is_flag=True,
    help="start from the flag's current baseline/canary split: a rollback restores it, and "
    "the run begins at the first set_weight above the current canary weight",
)
@click.option(
    "--break-claim",
    is_flag=True,
    help="take over a claim on the flag left by a run whose process is gone",
)
@_metrics_port_option
@click.option(
    "--detach",
    is_flag=True,
    help="submit the run for `canaryctl controller serve` to drive, print its id, exit 0",
)
def run_command(
    runbook: str,
    state_path: str,
    output: str | None,
    dry_run: bool,
    from_current: bool,
    break_claim: bool,
    metrics_port: int | None,
    detach: bool,
) -> None:
    """Run a rollout to its end: promoted (exit 0) or rolled back (exit 1)."""
    from canaryctl.controller import run_rollout
    from canaryctl.runbook import Rollout, load_document

    document = load_document(runbook, expect=Rollout)
    if detach:
        _submit(
            document,
            state_path,
            output,
            dry_run or from_current or break_claim or metrics_port is not None,
        )
        return
    if dry_run:
        _dry_run(document, output, from_current=from_current)
        return
    with signals_as_ctrl_c(), _observers(output, metrics_port) as observers:
        result = run_rollout(
            document,
            state_path=state_path,
            observers=observers,
            from_current=from_current,
            break_claim=break_claim,
        )
    _end(result)


def _submit(document: Rollout, state_path: str, output: str | None, other_options: bool) -> None:
    from canaryctl.controller.runner import submit_rollout

    if other_options:
        raise click.UsageError(
            "--detach submits the runbook as it is: --dry-run, --from-current, --break-claim "
            "and --metrics-port belong to a run this command drives itself"
        )
    run_id, where = submit_rollout(
        document,
        state_path=state_path,
        warn=lambda message: click.echo(f"warning: {message}", err=True),
    )
    if wants_json(output):
        click.echo(json.dumps({"event": "submitted", "run_id": run_id, "state": where}))
        return
    click.echo(run_id)
    click.echo(
        f"run {run_id} ({document.metadata.name}) submitted to {where}: a controller "
        f"(`canaryctl controller serve`) drives it; `canaryctl rollout status {run_id}` follows it",
        err=True,
    )


def _dry_run(document: Rollout, output: str | None, *, from_current: bool) -> None:
    """Every preflight check a real run makes but the claim, and nothing else: no journal, no
    write."""
    from canaryctl.clock import SystemClock
    from canaryctl.controller import plan
    from canaryctl.controller.preflight import (
        check_shadow_flag,
        ensure_baseline_has_traffic,
        starting_state,
    )
    from canaryctl.flags.factory import flag_store_for
    from canaryctl.metrics.factory import metrics_source_for

    spec = document.spec
    flags = flag_store_for(spec.flag)
    snapshot = flags.snapshot()
    split = flags.split(snapshot)
    start = starting_state(document, split, from_current=from_current)
    metrics = metrics_source_for(
        spec.metrics, slos=spec.slos, baseline=spec.flag.baseline, canary=spec.flag.canary
    )
    if spec.shadow_flag is not None and any(s.shadow is not None for s in spec.steps):
        check_shadow_flag(document, flag_store_for(spec.shadow_flag), metrics)
    metrics.check()
    baseline = flags.variants(snapshot)[0]
    ensure_baseline_has_traffic(document, metrics, SystemClock(), baseline)
    steps = [item.describe() for item in plan(spec)]
    slos = [slo.describe() for slo in spec.slos]
    if wants_json(output):
        click.echo(
            json.dumps(
                {
                    "event": "plan",
                    "name": document.metadata.name,
                    "flag": spec.flag.key,
                    "baseline": spec.flag.baseline,
                    "canary": spec.flag.canary,
                    "split": {"baseline": split.baseline, "canary": split.canary},
                    "metrics": "ok",
                    "plan": steps,
                    "starts_at": start.item,
                    "slos": slos,
                    "analysis": spec.analysis.model_dump(),
                }
            )
        )
        return
    click.echo(
        f"rollout {document.metadata.name}: flag '{spec.flag.key}' serves {spec.flag.canary} "
        f"to {split.canary:g}% and {spec.flag.baseline} to {split.baseline:g}%; metrics answer"
    )
    analysis = spec.analysis
    method = analysis.method
    if method == "sequential":
        method += f", alpha {analysis.alpha:g}"
    undecided = "roll back"
    if analysis.on_inconclusive == "pause":
        undecided = f"hold and ask a human, rolling back after {analysis.pause_limit:g}s"
    click.echo(
        f"analysis every {analysis.interval:g}s ({method}), at least "
        f"{analysis.min_requests} requests per variant, failure_limit {analysis.failure_limit}, "
        f"inconclusive_limit {analysis.inconclusive_limit}, then undecided: {undecided}"
    )
    for slo in slos:
        click.echo(f"  slo: {slo}")
    for index, step in enumerate(steps, 1):
        skipped = " (skipped: --from-current)" if index <= start.item else ""
        click.echo(f"  {index}. {step}{skipped}")
    click.echo(f"  {len(steps) + 1}. promote {spec.flag.canary}")
    click.echo("dry run: nothing changed")


@rollout.command("resume")
@click.argument("run_id", type=ID)
@click.option(
    "--runbook",
    type=click.Path(dir_okay=False),
    help="the original runbook (for webhook headers the journal does not keep)",
)
@_state_option
@output_option
@_metrics_port_option
def resume_command(
    run_id: int, runbook: str | None, state_path: str, output: str | None, metrics_port: int | None
) -> None:
    """Continue a run whose process died; the current step's hold restarts from scratch."""
    from canaryctl.controller import resume_rollout
    from canaryctl.runbook import Rollout, load_document

    existing_state(state_path)
    document = load_document(runbook, expect=Rollout) if runbook else None
    with signals_as_ctrl_c(), _observers(output, metrics_port) as observers:
        result = resume_rollout(
            run_id,
            state_path=state_path,
            rollout=document,
            observers=observers,
            warn=lambda message: click.echo(f"warning: {message}", err=True),
        )
    _end(result)


def _find(store: StateStore, run_id: int | None) -> RunRecord:
    record = store.latest_run() if run_id is None else store.run(run_id)
    if record is None:
        which = "no runs" if run_id is None else f"no run {run_id}"
        raise InvalidInput(f"{which} in {store.where}")
    return record


@rollout.command("status")
@click.argument("run_id", type=ID, required=False)
@_state_option
@output_option
def status_command(run_id: int | None, state_path: str, output: str | None) -> None:
    """Where a run stands (the latest if no RUN_ID), with its last verdict and recent events."""
    from canaryctl.controller import StateStore

    existing_state(state_path)
    with StateStore(state_path) as store:
        record = _find(store, run_id)
        events = store.events(record.id)
    if wants_json(output):
        click.echo(json.dumps({**record.to_dict(), "events": [e.to_dict() for e in events]}))
        return
    click.echo(f"run {record.id} {record.name}: {record.phase}")
    click.echo(
        f"  started {when(record.started_at)} on {record.host} (pid {record.pid}, "
        f"canaryctl {record.version}); ended {when(record.ended_at)}"
    )
    click.echo(f"  canary weight {record.state.get('weight', 0):g}%")
    shadowed = [e for e in events if e.type == "shadow_flag_changed" and e.result is not None]
    if shadowed:
        share = shadowed[-1].result["after"]["canary"]
        if share:
            click.echo(f"  shadow: mirroring {share:g}% of requests to the candidate")
        else:
            click.echo("  shadow: step over, the shadow flag is back off")
    if record.outcome is not None:
        click.echo(f"  outcome {record.outcome} (exit {record.exit_code})")
    if record.reason:
        click.echo(f"  reason: {record.reason}")
    analyses = [e for e in events if e.type == "analysis"]
    if analyses:
        last = analyses[-1].data
        shadow = " of shadow traffic" if last.get("shadow") else ""
        click.echo(f"  last analysis{shadow} ({when(analyses[-1].at)}): {last['outcome']}")
        for check in last["checks"]:
            click.echo(f"    {check['outcome']:<12} {check['reason']}")
    click.echo("  recent events:")
    for event in [e for e in events if e.type != "analysis"][-10:]:
        click.echo(f"    {when(event.at)} {event.type} {json.dumps(event.data)}")


@rollout.command("list")
@_state_option
@output_option
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True)
def list_command(state_path: str, output: str | None, limit: int) -> None:
    """Recent runs, newest first."""
    from canaryctl.controller import StateStore

    existing_state(state_path)
    with StateStore(state_path) as store:
        records = store.runs(limit)
        where = store.where
    if wants_json(output):
        for record in records:
            click.echo(json.dumps(record.to_dict()))
        return
    if not records:
        click.echo(f"no runs in {where}", err=True)
        return
    # Columns as wide as their widest value, under a header: a name longer than any fixed
    # width would push the columns after it out of line.
    rows = [(str(r.id), r.name, r.phase, r.outcome or "—", when(r.started_at)) for r in records]
    header = ("run", "name", "phase", "outcome", "started")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        cells = [row[0].rjust(widths[0])]
        cells += [cell.ljust(width) for cell, width in zip(row[1:-1], widths[1:], strict=True)]
        click.echo("  ".join([*cells, row[-1]]))


def _requester() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _request(state_path: str, run_id: int, kind: str, output: str | None) -> None:
    from canaryctl.controller import Phase, StateStore

    existing_state(state_path)
    with StateStore(state_path) as store:
        record = _find(store, run_id)
        if record.finished:
            raise InvalidInput(f"run {run_id} already ended: {record.outcome}")
        if kind == "approve" and record.phase != Phase.AWAITING_APPROVAL.value:
            raise InvalidInput(f"run {run_id} is {record.phase}, not awaiting approval")
        by = _requester()
        store.request(run_id, kind, by=by, at=time.time())
    if wants_json(output):
        click.echo(json.dumps({"event": "request", "run_id": run_id, "kind": kind, "by": by}))
    else:
        click.echo(
            f"{kind} requested for run {run_id}; its runner acts on it within a second "
            f"(if that process is gone: canaryctl rollout resume {run_id})"
        )


@rollout.command("abort")
@click.argument("run_id", type=ID)
@_state_option
@output_option
def abort_command(run_id: int, state_path: str, output: str | None) -> None:
    """Ask a running rollout to restore its flag and stop (its exit code will be 1)."""
    _request(state_path, run_id, "abort", output)


@rollout.command("approve")
@click.argument("run_id", type=ID)
@_state_option
@output_option
def approve_command(run_id: int, state_path: str, output: str | None) -> None:
    """Let a rollout waiting at a `pause: approval` step go on."""
    _request(state_path, run_id, "approve", output)
