"""`canaryctl report RUN_ID --html FILE`: a finished rollout as a page (or JSON) people read."""

from __future__ import annotations

import json
from pathlib import Path

import click

from canaryctl.cli.main import main, output_option, wants_json
from canaryctl.controller import DEFAULT_STATE_PATH, StateStore
from canaryctl.errors import InvalidInput
from canaryctl.report import report_html, timeline

__all__ = ["report"]


@main.command("report")
@click.argument("run_id", type=int)
@click.option("--html", "html_path", type=click.Path(dir_okay=False, path_type=Path),
              help="write a self-contained HTML page")  # fmt: skip
@click.option(
    "--state",
    "state_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_STATE_PATH,
    envvar="CANARYCTL_STATE",
    show_default=True,
    help="the run journal (SQLite); env CANARYCTL_STATE",
)
@output_option
def report(run_id: int, html_path: Path | None, state_path: Path, output: str | None) -> None:
    """Chart a rollout from its journal: weight, error rate, p95, steps, the decision."""
    if not state_path.exists():
        raise InvalidInput(f"no state database at {state_path}: no rollout has run here (--state?)")
    with StateStore(state_path) as store:
        record = store.run(run_id)
        if record is None:
            raise InvalidInput(f"no run {run_id} in {state_path}")
        story = timeline(record, store.events(run_id))
    if html_path is not None:
        try:
            html_path.write_text(report_html(story), encoding="utf-8")
        except OSError as exc:
            raise InvalidInput(f"--html {html_path}: cannot write: {exc.strerror}") from exc
    if wants_json(output):
        click.echo(
            json.dumps({**story.to_dict(), "html": None if html_path is None else str(html_path)})
        )
        return
    outcome = (story.outcome or story.phase).replace("_", " ")
    click.echo(f"run {story.run_id} {story.name}: {outcome}, {len(story.analyses)} analyses")
    if story.reason:
        click.echo(f"  decision: {story.reason}")
    if html_path is not None:
        click.echo(f"  report written to {html_path}")
