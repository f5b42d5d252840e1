"""`canaryctl cost optimize DOC`: exit 0 with a plan for every tier, 1 when some tier cannot meet
its constraints (the binding ones named), 2 bad input, 3 a gateway's /metrics unreadable."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from canaryctl.cli.main import output_option, wants_json
from canaryctl.errors import InvalidInput

if TYPE_CHECKING:
    from canaryctl.cost.planning import OptimizeReport

__all__ = ["optimize"]


def _usd(value: float | None) -> str:
    return "—" if value is None else f"${value:,.2f}"


def _split(split: dict[str, float]) -> str:
    return ", ".join(f"{name} {share:.1%}" for name, share in split.items())


def _text(report: OptimizeReport, written: list[Path]) -> None:
    from rich.console import Console
    from rich.table import Table

    data = report.to_dict()
    console = Console(highlight=False)
    models = Table(title=f"models on route {data['route']}")
    for column in ("model", "accuracy", "p95", "cost/query"):
        models.add_column(column, justify="left" if column == "model" else "right")
    for m in data["models"]:
        models.add_row(
            m["model"],
            "—" if m["accuracy"] is None else f"{m['accuracy']:.3f}",
            "—" if m["p95_seconds"] is None else f"{m['p95_seconds']:.2f}s",
            "—" if m["cost_per_query_usd"] is None else f"${m['cost_per_query_usd']:.6f}",
        )
    console.print(models)
    for t in data["tiers"]:
        c, plan = t["constraints"], t["plan"]
        bounds = f"p95 <= {c['p95_seconds']:g}s, " if c["p95_seconds"] is not None else ""
        bounds += f"accuracy >= {c['min_accuracy']:g}"
        if c["models"]:
            bounds += f", only {', '.join(c['models'])}"
        console.print(
            f"\n[bold]{t['tier']}[/] ({t['monthly_queries']:,.0f} queries a month; {bounds})"
        )
        console.print(
            f"  today {_split(t['today']['split'])}: {_usd(t['today']['monthly_usd'])}/month"
        )
        if plan is None:
            console.print("  [bold red]no plan[/]")
            continue
        console.print(
            f"  plan  {_split(plan['split'])}: {_usd(plan['monthly_usd'])}/month, "
            f"accuracy {plan['accuracy']:.3f}"
        )
        for b in plan["binding"]:
            console.print(f"  binds: {b['constraint']}: {b['message']}")
    for b in data["infeasible"]:
        console.print(f"[bold red]infeasible[/] {b['tier']}: {b['constraint']}: {b['message']}")
    if report.solution.feasible:
        console.print(
            f"\ntoday {_usd(data['today_monthly_usd'])}/month -> planned "
            f"{_usd(data['planned_monthly_usd'])}/month"
        )
    for path in written:
        console.print(f"wrote {path}")
    for note in report.notes:
        console.print(f"note: {note}", soft_wrap=True)


@click.command("optimize")
@click.argument("document", type=click.Path(dir_okay=False))
@click.option(
    "--runbooks",
    "runbooks_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="write the Rollout runbooks that move each tier to its plan into this directory",
)
@output_option
def optimize(document: str, runbooks_dir: str | None, output: str | None) -> None:
    """The cheapest split of each tier's traffic that meets its p95 and accuracy floor."""
    import yaml

    from canaryctl.cost import planning
    from canaryctl.runbook.loader import load_document
    from canaryctl.runbook.optimize import CostOptimization

    doc = load_document(document, expect=CostOptimization)
    report = planning.optimize(doc, Path(document).resolve().parent)
    written: list[Path] = []
    if runbooks_dir is not None and report.runbooks:
        folder = Path(runbooks_dir)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for order, (_, runbook) in enumerate(report.runbooks, start=1):
                path = folder / f"{order:02d}-{runbook['metadata']['name']}.yaml"
                path.write_text(yaml.safe_dump(runbook, sort_keys=False), encoding="utf-8")
                written.append(path)
        except OSError as exc:
            raise InvalidInput(f"--runbooks {runbooks_dir}: cannot write: {exc.strerror}") from None
    if wants_json(output):
        data = report.to_dict()
        for entry, path in zip(data["runbooks"], written, strict=False):
            entry["path"] = str(path)
        click.echo(json.dumps(data))
    else:
        _text(report, written)
    click.get_current_context().exit(report.exit_code)
