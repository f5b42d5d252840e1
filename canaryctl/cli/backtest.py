"""`canaryctl backtest RUNBOOK (--run ID | --prometheus URL --from T --to T)`: what a runbook
would have decided on recorded traffic. Thin: read, call the pure backtest, print."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from canaryctl.cli.arguments import ID, http_url, parse_time, positive_duration
from canaryctl.cli.main import existing_state, output_option, state_option, wants_json
from canaryctl.errors import InvalidInput
from canaryctl.times import when

if TYPE_CHECKING:
    from canaryctl.backtest.journal import RunBacktest
    from canaryctl.runbook import Rollout

__all__ = ["backtest"]




def _incident(value: str | None) -> tuple[float, float] | None:
    if value is None:
        return None
    begin, sep, end = value.partition("..")
    if not sep:
        raise InvalidInput(f"--incident: '{value}' is not FROM..TO")
    window = parse_time(begin, "--incident"), parse_time(end, "--incident")
    if window[1] <= window[0]:
        raise InvalidInput("--incident: TO must be after FROM")
    return window


@click.command("backtest")
@click.argument("runbook", type=click.Path(dir_okay=False))
@click.option("--run", "run_id", type=ID, help="replay this past run's journaled counts")
@state_option("the run journal --run reads")
@click.option("--prometheus", "prometheus_url", help="replay history from this Prometheus")
@click.option("--from", "from_", help="first start time (RFC 3339 or epoch seconds)")
@click.option("--to", help="end of the history to replay")
@click.option("--every", default="1h", show_default=True, help="one rollout start per ...")
@click.option("--step", default="1m", show_default=True, help="range query resolution")
@click.option("--incident", help="FROM..TO: a known incident; reports the delay to detect it")
@click.option(
    "--aa-split",
    metavar="LABEL",
    help="A/A: split the baseline's own traffic by LABEL (user bucket, replica) into two arms",
)
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="with --prometheus: write the timeline as a self-contained HTML page",
)
@output_option
def backtest(
    runbook: str,
    run_id: int | None,
    state_path: Path,
    prometheus_url: str | None,
    from_: str | None,
    to: str | None,
    every: str,
    step: str,
    incident: str | None,
    aa_split: str | None,
    html_path: Path | None,
    output: str | None,
) -> None:
    """What a runbook would have decided on a past run's counts or on Prometheus' history.

    --run ID judges the counts a past run journaled by RUNBOOK's SLOs and analysis (on the
    run's steps). --prometheus URL --from T --to T starts RUNBOOK's rollout every --every on
    the history of the baseline and canary, or of the baseline alone split in two by
    --aa-split LABEL: how often it would have rolled back, and how soon after --incident."""
    from canaryctl.runbook import Rollout, load_document

    document = load_document(runbook, expect=Rollout)
    if (run_id is None) == (prometheus_url is None):
        raise InvalidInput("give exactly one of --run RUN_ID or --prometheus URL")
    if run_id is not None:
        if html_path is not None:
            raise InvalidInput("--html: only with --prometheus (a run's page is `report RUN_ID`)")
        _from_run(document, run_id, state_path, output)
        return
    assert prometheus_url is not None
    if from_ is None or to is None:
        raise InvalidInput("--prometheus needs --from and --to")
    _from_prometheus(
        document,
        http_url(prometheus_url, "--prometheus"),
        start=parse_time(from_, "--from"),
        end=parse_time(to, "--to"),
        every=positive_duration(every, "--every"),
        step=positive_duration(step, "--step"),
        incident=_incident(incident),
        aa_split=aa_split,
        html_path=html_path,
        output=output,
    )


def _shadowed(count: int) -> str:
    """The shadow step's analyses, said apart: the replay does not judge mirrored traffic."""
    return f" ({count} of shadow traffic, not replayed)" if count else ""


def _from_run(document: Rollout, run_id: int, state_path: Path, output: str | None) -> None:
    from canaryctl.backtest.journal import backtest_run
    from canaryctl.controller.store import StateStore

    existing_state(state_path)
    with StateStore(state_path) as store:
        record = store.run(run_id)
        if record is None:
            raise InvalidInput(f"no run {run_id} in {state_path}")
        events = store.events(run_id)
    result = backtest_run(document.spec, record, events)
    data = result.to_dict()
    if wants_json(output):
        click.echo(json.dumps(data))
        return
    run, replayed = data["run"], data["replay"]
    click.echo(f"run {result.run_id} {result.name} replayed by {document.metadata.name}")
    click.echo(
        f"  the run:    {run['outcome'] or 'unfinished'} at {_after(run['decided_at'], result)}"
        f" after {run['analyses']} analyses{_shadowed(run['shadow_analyses'])}"
    )
    if run["reason"]:
        click.echo(f"              {run['reason']}")
    click.echo(
        f"  the replay: {replayed['outcome']} at {_after(replayed['decided_at'], result)}"
        f" after {len(replayed['analyses'])} analyses"
    )
    if replayed["reason"]:
        click.echo(f"              {replayed['reason']}")
    click.echo("  first failure per SLO (replay):")
    for slo, failed in data["first_failures"].items():
        if failed is None:
            shown = "never failed"
        else:
            shown = (
                f"analysis {failed['analysis']}, +{failed['after_seconds']:.0f}s, "
                f"at {failed['weight']:g}%"
            )
        click.echo(f"    {slo}: {shown}")


def _after(at: float | None, result: RunBacktest) -> str:
    if at is None:
        return "—"
    return f"+{at - result.started_at:.0f}s"


def _from_prometheus(
    document: Rollout,
    url: str,
    *,
    start: float,
    end: float,
    every: float,
    step: float,
    incident: tuple[float, float] | None,
    aa_split: str | None,
    html_path: Path | None,
    output: str | None,
) -> None:
    from canaryctl.backtest.prometheus import read_history
    from canaryctl.backtest.sweep import starts, sweep

    spec = document.spec
    start_times = starts(spec, start, end, every)
    if not start_times:
        raise InvalidInput(
            f"--from..--to: {end - start:g}s is shorter than one rollout of this runbook"
        )
    history, baseline, canary = read_history(
        spec, url, start=start, end=end, step=step, aa_split=aa_split
    )
    result = sweep(
        spec,
        history,
        start_times,
        baseline=baseline,
        canary=canary,
        until=end,
        aa=aa_split is not None,
        incident=incident,
    )
    data = {
        "kind": "backtest",
        "name": document.metadata.name,
        "from": start,
        "to": end,
        **result.to_dict(),
    }
    if html_path is not None:
        from canaryctl.report.backtest_page import backtest_html

        html = backtest_html(data, name=document.metadata.name, begin=start, end=end)
        try:
            html_path.write_text(html, encoding="utf-8")
        except OSError as exc:
            raise InvalidInput(f"--html {html_path}: cannot write: {exc.strerror}") from exc
    if wants_json(output):
        click.echo(json.dumps({**data, "html": None if html_path is None else str(html_path)}))
        return
    mode = f"A/A split by {aa_split}" if aa_split else f"{baseline} vs {canary}"
    counts = data["outcomes"]
    click.echo(
        f"{document.metadata.name}: {data['rollouts']} rollouts from {when(start)}, one every "
        f"{every:g}s, on {mode}: {counts['rolled_back']} rolled back, {counts['promoted']} "
        f"promoted, {counts['undecided']} undecided"
    )
    for row in data["starts"]:
        after = "" if row["after_seconds"] is None else f" after {row['after_seconds']:.0f}s"
        click.echo(f"  {when(row['start'])}  {row['outcome']:<12}{after}  {row['reason']}")
    false = data["false_rollbacks"]
    if false is not None and false["rate"] is not None:
        click.echo(
            f"false rollbacks: {false['rolled_back']} of {false['decided']} = "
            f"{false['rate']:.1%} (95% Clopper-Pearson {false['lower']:.1%} to "
            f"{false['upper']:.1%})"
        )
    found = data["incident"]
    if found is not None:
        median = found["median_delay_seconds"]
        delay = "—" if median is None else f"{median:.0f}s"
        click.echo(
            f"incident {when(found['from'])}..{when(found['to'])}: caught by "
            f"{found['caught']} of {found['rollouts']} rollouts running during it, median "
            f"delay {delay}"
        )
    if html_path is not None:
        click.echo(f"report written to {html_path}")
