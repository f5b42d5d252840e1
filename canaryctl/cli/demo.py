"""`canaryctl demo`: the rollout story on the embedded defaults, offline."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import click

from canaryctl.cli.main import output_option, signals_as_ctrl_c, wants_json
from canaryctl.demo import SCENARIOS, run_demo

if TYPE_CHECKING:
    from canaryctl.demo import DemoReport


@click.command()
@output_option
@click.option(
    "--keep",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="keep the flag file and state database in this directory (to inspect with "
    "`canaryctl rollout list --state DIR/state.db`)",
)
@click.option(
    "--scenario",
    type=click.Choice(sorted(SCENARIOS)),
    default="support-bot",
    show_default=True,
    help="support-bot: Mixtral rolled back, GPT-4o-mini promoted; claude: a Claude canary whose "
    "overloaded errors climb, rolled back to GPT-4",
)
def demo(output: str | None, keep: Path | None, scenario: str) -> None:
    """Roll out a bad canary (rolled back) and a good one (promoted) against a simulated lab."""
    from canaryctl.cli.views import JsonLinesView, LiveView

    as_json = wants_json(output)
    view = JsonLinesView() if as_json else LiveView()
    try:
        with signals_as_ctrl_c():
            if keep is not None:
                keep.mkdir(parents=True, exist_ok=True)
                report = run_demo(keep, [view], scenario)
            else:
                with tempfile.TemporaryDirectory(prefix="canaryctl-demo-") as workdir:
                    report = run_demo(Path(workdir), [view], scenario)
    except KeyboardInterrupt:
        # Between rollouts or while the lab starts there is no flag change to undo.
        click.echo("interrupted; the lab is stopped", err=True)
        click.get_current_context().exit(130)
    if as_json:
        click.echo(json.dumps(report.to_dict()))
    else:
        _print_summary(report)
    interrupted = any(result.outcome == "interrupted" for _, result in report.results)
    click.get_current_context().exit(130 if interrupted else 0 if report.ok else 1)


def _print_summary(report: DemoReport) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"canaryctl demo ({report.seconds:.0f} s)")
    for column in ("rollout", "expected", "outcome", "reason"):
        table.add_column(column)
    for expected, result in report.results:
        style = "green" if result.outcome == expected else "red"
        table.add_row(result.name, expected, f"[{style}]{result.outcome}[/]", result.reason or "-")
    console = Console()
    console.print(table)
    served = ", ".join(
        f"{variant}: {sum(counts.values())}" for variant, counts in sorted(report.served.items())
    )
    console.print(f"requests served by variant: {served}")
