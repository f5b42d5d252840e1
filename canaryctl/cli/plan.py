"""`canaryctl plan RUNBOOK --rps N`: what the runbook will decide at that traffic, before it
runs. Thin: read, check the numbers, call canaryctl.plan, print."""

from __future__ import annotations

import json
import math

import click

from canaryctl.cli.main import output_option, wants_json
from canaryctl.errors import InvalidInput

__all__ = ["plan"]

MAX_RUNS = 10_000


def _check(
    name: str, value: float, *, at_least_zero: bool = False, below: float | None = None
) -> None:
    """Exit 2 naming the option unless the value is positive (or zero, `at_least_zero`) and
    under `below`."""
    low_ok = math.isfinite(value) and (value >= 0 if at_least_zero else value > 0)
    if not (low_ok and (below is None or value < below)):
        wanted = "at least 0" if at_least_zero else "above 0"
        if below is not None:
            wanted += f" and below {below:g}"
        raise InvalidInput(f"{name}: {value:g} is not a number {wanted}")


@click.command("plan")
@click.argument("runbook", type=click.Path(dir_okay=False))
@click.option("--rps", type=float, required=True, help="requests per second on the route")
@click.option(
    "--error-rate",
    type=float,
    default=0.005,
    show_default=True,
    help="the baseline's share of failed requests",
)
@click.option(
    "--p95", type=float, default=1.0, show_default=True, help="the baseline's p95 latency, seconds"
)
@click.option(
    "--runs", type=int, default=30, show_default=True, help="simulated rollouts per canary"
)
@click.option("--seed", type=int, default=1, show_default=True)
@output_option
def plan(
    runbook: str,
    rps: float,
    error_rate: float,
    p95: float,
    runs: int,
    seed: int,
    output: str | None,
) -> None:
    """What a runbook will do at a given traffic: chances to promote, roll back, pause.

    For a canary equal to the baseline, 1.5x, 2x and 4x worse, and at its bounds: the chance
    RUNBOOK promotes it, rolls it back or pauses for a human at --rps, and the time each step
    takes to decide, simulated through the controller's own decision logic. Warns when a step's
    hold is too short to decide at that traffic, naming one long enough (docs/plan.md)."""
    _check("--rps", rps)
    _check("--error-rate", error_rate, at_least_zero=True, below=1)
    _check("--p95", p95)
    if not 1 <= runs <= MAX_RUNS:
        raise InvalidInput(f"--runs: {runs} is not between 1 and {MAX_RUNS}")
    from canaryctl.plan import operating_characteristic  # the simulation: when it runs
    from canaryctl.runbook import Rollout, load_document

    rollout = load_document(runbook, Rollout)
    result = operating_characteristic(
        rollout, rps=rps, error_rate=error_rate, p95=p95, runs=runs, seed=seed
    )
    if wants_json(output):
        click.echo(json.dumps(result.to_dict()))
    else:
        click.echo(result.render())
