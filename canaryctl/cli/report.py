"""`canaryctl report SOURCE --html FILE`: a finished rollout, chaos run, drill, gate or backtest
as a page (or JSON) people read. SOURCE is a run id (digits) or a chaos journal, gate result or
backtest result file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from canaryctl.cli.arguments import run_id_of
from canaryctl.cli.main import existing_state, output_option, state_option, wants_json
from canaryctl.errors import InvalidInput

__all__ = ["report"]


# The journal, the readers and the pages are imported for the kind of SOURCE being charted.


def _rollout(run_id: int, state_path: str) -> tuple[dict[str, Any], str, str]:
    from canaryctl.controller import StateStore
    from canaryctl.report import report_html, timeline

    existing_state(state_path)
    with StateStore(state_path) as store:
        record = store.run(run_id)
        if record is None:
            raise InvalidInput(f"no run {run_id} in {store.where}")
        story = timeline(record, store.events(run_id))
    outcome = (story.outcome or story.phase).replace("_", " ")
    summary = f"run {story.run_id} {story.name}: {outcome}, {len(story.analyses)} analyses"
    return {"kind": "rollout", **story.to_dict()}, report_html(story), summary


def _chaos(path: Path, journal: dict[str, Any]) -> tuple[dict[str, Any], str, str]:
    from canaryctl.report import chaos_html
    from canaryctl.report.source import read_story

    story, scenario = read_story(path, journal)
    outcome = (story.outcome or story.status).replace("_", " ")
    summary = (
        f"chaos {story.name}: {outcome}, {len(story.faults)} fault(s),"
        f" {len(story.judgements)} judgements"
    )
    return story.to_dict(), chaos_html(story, scenario.spec.target.url), summary


def _gate(path: Path, result: dict[str, Any]) -> tuple[dict[str, Any], str, str]:
    from canaryctl.report import gate_html

    try:
        html = gate_html(result)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise InvalidInput(f"{path}: a damaged gate result ({type(exc).__name__}: {exc})") from None
    summary = f"gate {result['name']}: {result['outcome']} (exit {result['exit_code']})"
    return {"kind": "gate", **result}, html, summary


def _backtest(path: Path, result: dict[str, Any]) -> tuple[dict[str, Any], str, str]:
    from canaryctl.report.backtest_page import backtest_html

    try:
        html = backtest_html(result, name=str(result["name"]), begin=result["from"],
                             end=result["to"])  # fmt: skip
        counts = result["outcomes"]
        summary = (
            f"backtest {result['name']}: {result['rollouts']} rollouts, "
            f"{counts['rolled_back']} rolled back"
        )
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise InvalidInput(
            f"{path}: a damaged backtest result ({type(exc).__name__}: {exc})"
        ) from None
    return result, html, summary


_FILES = {"chaos": _chaos, "gate": _gate, "backtest": _backtest}


@click.command("report")
@click.argument("source")
@click.option("--html", "html_path", type=click.Path(dir_okay=False, path_type=Path),
              help="write a self-contained HTML page")  # fmt: skip
@state_option("the run journal a run id is read from")
@output_option
def report(source: str, html_path: Path | None, state_path: str, output: str | None) -> None:
    """Chart a rollout (SOURCE: its run id), a chaos run or drill (its journal JSON), a gate
    or a backtest (its JSON result): what happened, against which bounds, and the decision."""
    run_id = run_id_of(source)
    if run_id is not None:
        data, html, summary = _rollout(run_id, state_path)
    else:
        from canaryctl.report.source import read_source

        path = Path(source)
        kind, document = read_source(path)
        data, html, summary = _FILES[kind](path, document)
    if html_path is not None:
        try:
            html_path.write_text(html, encoding="utf-8")
        except OSError as exc:
            raise InvalidInput(f"--html {html_path}: cannot write: {exc.strerror}") from exc
    if wants_json(output):
        click.echo(json.dumps({**data, "html": None if html_path is None else str(html_path)}))
        return
    click.echo(summary)
    if data.get("reason"):
        click.echo(f"  decision: {data['reason']}")
    if html_path is not None:
        click.echo(f"  report written to {html_path}")
