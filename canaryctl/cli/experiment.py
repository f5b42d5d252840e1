"""`canaryctl experiment run|status|report|restore`: variations of a flag on a fixed split,
compared with anytime-valid intervals (docs/experiments.md).

`run` exits 0 when a winner is decided, 1 when the experiment ended without one (the flag
restored), 2 for bad input (nothing changed), 3 when a backend failed (the flag restored where it
could be), 130 when interrupted (the flag restored). `status` and `report` read the state
database, during the run or after it. `restore` puts the prior targeting back after the run's
process died without doing so (SIGKILL).
"""

from __future__ import annotations

import json
from typing import Any

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

__all__ = ["experiment"]


@click.group()
def experiment() -> None:
    """Compare variations of a flag on a fixed split until a winner is decided."""


def _text(event: dict[str, Any]) -> str:
    kind = event["event"]
    if kind == "start":
        split = ", ".join(f"{k} {v:g}%" for k, v in event["weights"].items())
        return f"experiment {event['experiment_id']} {event['name']}: {split}"
    if kind == "interval":
        winner = event["winner"] or "none yet"
        return f"  {event['elapsed']:7.0f}s interval {event['intervals']}: winner {winner}"
    if kind == "error":
        return f"error: {event['message']}"
    promoted = " (the flag now serves it)" if event["promoted"] else ""
    return f"{event['outcome']}: {event['reason']}{promoted}"


@experiment.command("run")
@click.argument("document_path", metavar="DOC", type=click.Path(dir_okay=False))
@state_option("where the experiment and its intervals are journaled")
@click.option(
    "--promote-winner",
    is_flag=True,
    help="when a winner is decided, serve it to everyone (else the prior targeting comes back)",
)
@output_option
def run_command(
    document_path: str, state_path: str, promote_winner: bool, output: str | None
) -> None:
    """Set the split, observe until decided or the duration ends; exit 0 winner, 1 none."""
    from canaryctl.clock import SystemClock
    from canaryctl.controller.store import StateStore
    from canaryctl.experiment.runner import ExperimentRunner
    from canaryctl.flags.factory import split_store_for
    from canaryctl.metrics.factory import metrics_source_for
    from canaryctl.metrics.prometheus import SloQuery
    from canaryctl.runbook import load_document
    from canaryctl.runbook.experiment import Experiment

    document = load_document(document_path, expect=Experiment)
    spec = document.spec
    names = [v.value for v in spec.variations]
    others = [name for name in names if name != spec.control]
    flags = split_store_for(spec.flag, spec.control, others[0])
    values = flags.values(flags.snapshot(), names)  # exit 2 for a missing variation, first
    clock = SystemClock()
    custom = [m for m in (spec.primary, *spec.guards) if m.query is not None]
    queries = [SloQuery(m.subject, m.query or "", tuple(values)) for m in custom]
    metrics = metrics_source_for(spec.metrics, clock=clock.now, queries=queries)
    tiers = {
        tier: metrics_source_for(spec.metrics, clock=clock.now, queries=queries, tier=tier)
        for tier in spec.tiers
    }
    as_json = wants_json(output)

    def emit(event: dict[str, Any]) -> None:
        click.echo(json.dumps(event) if as_json else _text(event))

    with StateStore(state_path) as store, signals_as_ctrl_c():
        runner = ExperimentRunner(document, flags=flags, metrics=metrics, tier_metrics=tiers,
                                  store=store, clock=clock, promote_winner=promote_winner,
                                  emit=emit)  # fmt: skip
        result = runner.run()
    raise SystemExit(result.exit_code)


def _load(state_path: str, experiment_id: int | None) -> tuple[Any, dict[str, Any]]:
    from canaryctl.analysis.experiment import Design
    from canaryctl.controller.store import StateStore
    from canaryctl.experiment.summary import summarize

    existing_state(state_path)
    with StateStore(state_path) as store:
        record = store.experiment(experiment_id)
        if record is None:
            which = "no experiment" if experiment_id is None else f"no experiment {experiment_id}"
            raise InvalidInput(f"{which} in the state database {store.where}")
        intervals = [data for _, data in store.observations(record.id)]
    return record, summarize(Design.from_dict(record.design), intervals)


def _status(record: Any) -> dict[str, Any]:
    return {
        "experiment_id": record.id,
        "name": record.name,
        "phase": record.phase,
        "outcome": record.outcome,
        "reason": record.reason,
        "exit_code": record.exit_code,
        "started_at": record.started_at,
        "updated_at": record.updated_at,
        "ended_at": record.ended_at,
        "final_weights": record.final_weights,
    }


def _interval(effect: dict[str, Any]) -> str:
    low, high = effect["low"], effect["high"]
    estimate = effect["estimate"]
    shown = "—" if estimate is None else f"{estimate:+.4g}"
    if low is None or high is None:
        return f"{shown} [not enough intervals: {effect['intervals']}]"
    return f"{shown} [{low:+.4g}, {high:+.4g}]"


@experiment.command("status")
@click.argument("experiment_id", metavar="[ID]", type=ID, required=False)
@state_option("the state database the experiment is journaled in")
@output_option
def status_command(experiment_id: int | None, state_path: str, output: str | None) -> None:
    """Where an experiment stands (the latest without ID): any time, during or after the run."""
    record, summary = _load(state_path, experiment_id)
    if wants_json(output):
        click.echo(json.dumps({**_status(record), "summary": summary}))
        return
    state = record.outcome or record.phase
    click.echo(f"experiment {record.id} {record.name}: {state} after {summary['intervals']} "
               f"intervals; winner: {summary['winner'] or 'none yet'}")  # fmt: skip
    if record.reason:
        click.echo(f"  {record.reason}")
    for variation, standing in summary["standing"].items():
        click.echo(f"  {variation}: {standing}")
    level = 1 - summary["alpha_each"]
    click.echo(f"  effects against {summary['control']} ({level:.2%} each, "
               f"{1 - summary['alpha']:.0%} together):")  # fmt: skip
    for effect in summary["effects"]:
        if effect["tier"] is None:
            click.echo(f"    {effect['metric']:24} {effect['variation']:20} {_interval(effect)}")


@experiment.command("report")
@click.argument("experiment_id", metavar="[ID]", type=ID, required=False)
@state_option("the state database the experiment is journaled in")
@click.option("--html", "html_path", type=click.Path(dir_okay=False), default=None,
              help="write a self-contained page here")  # fmt: skip
@output_option
def report_command(
    experiment_id: int | None, state_path: str, html_path: str | None, output: str | None
) -> None:
    """The experiment's result: effect sizes with their intervals, per variation and tier."""
    from pathlib import Path

    from canaryctl.report.experiment_page import experiment_html

    record, summary = _load(state_path, experiment_id)
    if html_path is not None:
        try:
            Path(html_path).write_text(experiment_html(_status(record), summary), "utf-8")
        except OSError as exc:
            raise InvalidInput(f"--html {html_path}: cannot write: {exc.strerror}") from exc
        if not wants_json(output):
            click.echo(f"wrote {html_path}")
            return
    click.echo(json.dumps({**_status(record), "summary": summary}))


@experiment.command("restore")
@click.argument("experiment_id", metavar="ID", type=ID)
@state_option("the state database the experiment is journaled in")
@click.option(
    "--force", is_flag=True, help="it ran on another host and you know its process is gone"
)
def restore_command(experiment_id: int, state_path: str, force: bool) -> None:
    """Put back the flag's prior targeting after an experiment's process died (SIGKILL)."""
    from canaryctl.clock import SystemClock
    from canaryctl.controller.store import StateStore
    from canaryctl.experiment.runner import restore_abandoned
    from canaryctl.flags.factory import split_store_for
    from canaryctl.runbook.experiment import Experiment

    existing_state(state_path)
    with StateStore(state_path) as store:
        record = store.experiment(experiment_id)
        if record is None:
            raise InvalidInput(f"no experiment {experiment_id} in the state database {store.where}")
        spec = Experiment.model_validate(record.document).spec
        others = [v.value for v in spec.variations if v.value != spec.control]
        flags = split_store_for(spec.flag, spec.control, others[0])
        restored = restore_abandoned(record, flags, store, SystemClock(), force=force)
    click.echo(f"experiment {record.id}: the prior targeting of flag '{restored.key}' is back "
               f"(version {restored.version})")  # fmt: skip
