"""`canaryctl gate RUNBOOK`: the CI step before promotion; exit 0 pass, 1 fail, 2, 3."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import click

from canaryctl.analysis.verdict import Outcome
from canaryctl.cli.main import output_option, wants_json
from canaryctl.errors import InvalidInput

if TYPE_CHECKING:
    from rich.progress import TaskID

    from canaryctl.gate import GateReport

# rich, the gate and the documents are imported when the gate runs: `gate --help` stays quick.

__all__ = ["gate"]

_STYLE = {Outcome.PASS: "green", Outcome.FAIL: "bold red", Outcome.INCONCLUSIVE: "yellow"}


class _Bars:
    """A rich progress bar per variant on stderr, only when a person watches it."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self._tasks: dict[str, TaskID] = {}

    def start(self, variant: str, total: int) -> None:
        self._tasks[variant] = self._progress.add_task(f"eval {variant}", total=total)

    def advance(self, variant: str) -> None:
        self._progress.advance(self._tasks[variant])

    def __enter__(self) -> _Bars:
        self._progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()


def _write(path: Path, text: str, what: str, mode: str = "w") -> None:
    try:
        with path.open(mode, encoding="utf-8") as file:
            file.write(text)
    except OSError as exc:
        raise InvalidInput(f"--{what} {path}: cannot write: {exc.strerror}") from exc


def _print(report: GateReport) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    table = Table(title=f"gate {report.name}: {report.canary} vs {report.baseline}")
    for column in ("check", "canary", "baseline", "bound", "verdict"):
        table.add_column(column, justify="left" if column in ("check", "verdict") else "right")
    for gate_check in report.checks:
        c = gate_check.check
        table.add_row(
            escape(gate_check.name),
            *(
                "—" if v is None else f"{v:.4g}"
                for v in (c.canary_value, c.baseline_value, c.bound)
            ),
            f"[{_STYLE[c.outcome]}]{c.outcome.value}[/]",
        )
    console.print(table)
    if report.eval is not None:
        for score in (report.eval.baseline, report.eval.canary):
            console.print(
                f"  {score.variant}: {score.right}/{score.items} right ({score.errors} errors), "
                f"p95 {score.latency_p95 or 0:.3f}s, eval cost "
                + ("unknown (no price)" if score.cost_usd is None else f"${score.cost_usd:.4f}")
            )
    if report.projection is not None:
        p = report.projection
        for variant, monthly in (
            (report.baseline, p.baseline_monthly),
            (report.canary, p.canary_monthly),
        ):
            shown = "unknown" if monthly is None else f"${monthly:,.2f}"
            console.print(f"  {variant}: {shown} a month at {p.monthly_queries:,} queries")
    verdict = f"[{_STYLE[report.outcome]}]{report.outcome.value}[/] (exit {report.exit_code})"
    console.print(f"gate {verdict}" + (f": {escape(report.reason)}" if report.reason else ""))


@click.command("gate")
@click.argument("runbook", type=click.Path(dir_okay=False))
@click.option("--junit", type=click.Path(dir_okay=False, path_type=Path), help="write JUnit XML")
@click.option(
    "--summary",
    type=click.Path(dir_okay=False, path_type=Path),
    help="write a Markdown summary (e.g. $GITHUB_STEP_SUMMARY)",
)
@click.option(
    "--json-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="write the JSON result (what -o json prints) for `canaryctl report`",
)
@output_option
def gate(
    runbook: str,
    junit: Path | None,
    summary: Path | None,
    json_file: Path | None,
    output: str | None,
) -> None:
    """Eval the canary against the baseline, check live SLOs and cost: exit 0 to promote."""
    from canaryctl.gate import junit_xml, markdown_summary, run_gate
    from canaryctl.runbook import Rollout, load_document

    document = load_document(runbook, expect=Rollout)
    as_json = wants_json(output)
    if not as_json and sys.stderr.isatty():
        with _Bars() as bars:
            report = run_gate(document, progress=bars)
    else:
        report = run_gate(document)
    if junit is not None:
        _write(junit, junit_xml(report), "junit")
    if summary is not None:
        _write(summary, markdown_summary(report), "summary", "a")  # as $GITHUB_STEP_SUMMARY wants
    if json_file is not None:
        _write(json_file, json.dumps(report.to_dict()) + "\n", "json-file")
    if as_json:
        click.echo(json.dumps(report.to_dict()))
    else:
        _print(report)
    click.get_current_context().exit(report.exit_code)
