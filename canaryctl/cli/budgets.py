"""`budgets show`: what each user, team and job has spent of its budgets in the current window."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

from canaryctl.cli.main import output_option, wants_json
from canaryctl.errors import InvalidInput

if TYPE_CHECKING:
    from canaryctl.runbook.gateway import BudgetsSpec

__all__ = ["budgets"]


@click.group()
def budgets() -> None:
    """Inspect the gateway's token and USD budgets."""


async def _counters(spec: BudgetsSpec) -> dict[str, int]:
    from canaryctl.gateway.budgets import open_store

    store = open_store(spec)
    try:
        return await store.counters()
    finally:
        await store.close()


def _amount(unit: str, value: int) -> float:
    from canaryctl.gateway.budgets import MICRO_USD

    return value / MICRO_USD if unit == "usd" else value


@budgets.command()
@click.argument("config", type=click.Path(dir_okay=False))
@output_option
def show(config: str, output: str | None) -> None:
    """Usage, limit and reset of every budget key in the store of Gateway document CONFIG."""
    from rich.console import Console
    from rich.table import Table

    from canaryctl.gateway.budgets import store_prefix, usage_by_counter
    from canaryctl.runbook import Gateway, load_document

    spec = load_document(config, expect=Gateway).spec.budgets
    if spec is None:
        raise InvalidInput(f"{config}: spec.budgets: no budgets configured")
    if spec.store.provider == "memory" and spec.store.path is None:
        raise InvalidInput(f"{config}: spec.budgets.store.path: unset, so no usage is kept")
    counters = asyncio.run(_counters(spec))
    rows = []
    for slot, used in usage_by_counter(counters, spec, store_prefix(spec), time.time()):
        rows.append(
            {
                "budget": slot.budget.name,
                "per": slot.budget.per,
                "key": slot.who,
                "unit": slot.unit,
                "used": _amount(slot.unit, used),
                "limit": _amount(slot.unit, slot.limit),
                "remaining": _amount(slot.unit, max(0, slot.limit - used)),
                "window": f"{slot.budget.kind} {slot.budget.window}",
                "resets_at": datetime.fromtimestamp(slot.resets_at, UTC).strftime(
                    "%Y-%m-%dT%H:%M:%SZ"
                ),
            }
        )
    if wants_json(output):
        for row in rows:
            click.echo(json.dumps(row))
        return
    if not rows:
        click.echo("no usage recorded in the current windows")
        return
    table = Table("budget", "per", "key", "used", "limit", "remaining", "window", "resets at")
    for row in rows:
        unit = " USD" if row["unit"] == "usd" else " tokens"
        fmt = "{:,.4f}" if row["unit"] == "usd" else "{:,.0f}"
        table.add_row(
            row["budget"],
            row["per"],
            row["key"],
            fmt.format(row["used"]) + unit,
            fmt.format(row["limit"]) + unit,
            fmt.format(row["remaining"]) + unit,
            row["window"],
            row["resets_at"],
        )
    Console().print(table)
