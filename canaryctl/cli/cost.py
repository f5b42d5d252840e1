"""`canaryctl cost ...`: what drives the bill, and the cheapest routing per tier.

Each subcommand lives in its own module, imported only when it runs (COST_COMMANDS).
"""

from __future__ import annotations

import click

from canaryctl.cli.main import LazyGroup

__all__ = ["COST_COMMANDS", "cost"]

COST_COMMANDS: dict[str, tuple[str, str]] = {
    "report": (
        "canaryctl.cli.cost_report:report",
        "Cost, queries and the bill's share by route, model, tier, team, job and top users.",
    ),
    "optimize": (
        "canaryctl.cli.cost_optimize:optimize",
        "The cheapest split of each tier's traffic that meets its p95 and accuracy floor.",
    ),
}


@click.group(cls=LazyGroup, lazy=COST_COMMANDS)
def cost() -> None:
    """Find what drives the bill and the cheapest routing that meets each tier's floor."""
