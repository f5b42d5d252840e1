"""`canaryctl drills serve|list DIR`: scheduled chaos scenarios (see canaryctl.drills)."""

from __future__ import annotations

import json
import signal
import threading
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import click

from canaryctl.cli.main import output_option, state_option, wants_json

__all__ = ["drills"]


def _home_options(func: Any) -> Any:
    func = click.option(
        "--home",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path(".canaryctl/drills"),
        show_default=True,
        envvar="CANARYCTL_DRILLS_HOME",
        help="jobs, run history and journals; env CANARYCTL_DRILLS_HOME",
    )(func)
    return state_option("the rollout state database: no drill starts while a rollout runs")(func)


@click.group()
def drills() -> None:
    """Run chaos scenarios on their schedule."""


@drills.command("serve")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@_home_options
@click.option(
    "--misfire-grace",
    default="5m",
    show_default=True,
    help="a fire time missed (server down) still runs, once, if this recent",
)
@output_option
def serve_command(
    directory: Path, home: Path, state_path: str, misfire_grace: str, output: str | None
) -> None:
    """Run DIR's scheduled ChaosScenarios until Ctrl-C or SIGTERM."""
    from canaryctl.drills import DrillHome, serve  # the scheduler: for the commands that run
    from canaryctl.runbook.common import parse_duration

    try:
        grace = parse_duration(misfire_grace)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--misfire-grace") from None
    stop = threading.Event()
    lock = threading.Lock()
    as_json = wants_json(output)

    def emit(event: dict[str, Any]) -> None:
        with lock:
            if as_json:
                click.echo(json.dumps(event))
            else:
                fields = " ".join(f"{k}={v}" for k, v in event.items() if k != "event")
                click.echo(f"{datetime.now(UTC):%H:%M:%S} {event['event']} {fields}")

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        serve(directory, DrillHome(home, state_path, grace), stop=stop, emit=emit)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@drills.command("list")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@_home_options
@output_option
def list_command(directory: Path, home: Path, state_path: str, output: str | None) -> None:
    """DIR's drills: schedule, next run time, last outcome."""
    from canaryctl.drills import DrillHome, drill_status

    for status in drill_status(directory, DrillHome(home, state_path)):
        if wants_json(output):
            click.echo(json.dumps(status.to_dict()))
            continue
        next_run = f"{status.next_run:%Y-%m-%d %H:%M:%SZ}" if status.next_run else "—"
        last = status.last
        outcome = f"{last.outcome}: {last.reason}" if last else "never ran"
        click.echo(f"{status.name:<24} {status.schedule:<20} next {next_run}  last {outcome}")
