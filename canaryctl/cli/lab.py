"""`lab serve`: providers, gateway and traffic in the background until Ctrl-C, SIGTERM or
`--duration`; prints where everything listens, then what the traffic saw."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import click

from canaryctl.cli.main import output_option, wants_json

if TYPE_CHECKING:
    from canaryctl.lab import LabStack, TrafficSnapshot
    from canaryctl.runbook import Lab

# The lab's servers and the documents are imported when the lab runs, not for `lab --help`.

__all__ = ["lab"]


@click.group()
def lab() -> None:
    """Run simulated providers behind the gateway."""


def _seconds(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    from canaryctl.runbook import parse_duration

    try:
        return None if value is None else parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


@lab.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--flags",
    "flags_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="flag file to use instead of the document's gateway.flags.path",
)
@click.option("--duration", callback=_seconds, help="stop after this long (30s, 5m)")
@click.option("--no-traffic", is_flag=True, help="serve, but send no traffic")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help="the gateway's port instead of the document's gateway.listen (0: a free one); to move "
    "a shipped lab and the example runbooks watching it together, set CANARYCTL_GATEWAY instead",
)
@output_option
def serve(
    file: str,
    flags_path: Path | None,
    duration: float | None,
    no_traffic: bool,
    port: int | None,
    output: str | None,
) -> None:
    """Serve the Lab document FILE on 127.0.0.1 until Ctrl-C, SIGTERM or --duration."""
    from canaryctl.lab import LabStack
    from canaryctl.runbook import Lab, load_document

    doc = load_document(file, expect=Lab)
    if port is not None:
        gateway = doc.spec.gateway.model_copy(update={"listen": f"127.0.0.1:{port}"})
        doc = doc.model_copy(update={"spec": doc.spec.model_copy(update={"gateway": gateway})})
    as_json = wants_json(output)
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with LabStack(doc, flags_path=flags_path, traffic=not no_traffic) as stack:
            _started(doc, stack, as_json)
            done.wait(duration)
            snapshot = stack.traffic.snapshot() if stack.traffic else None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    _stopped(snapshot, as_json)


def _started(doc: Lab, stack: LabStack, as_json: bool) -> None:
    traffic = doc.spec.traffic if stack.traffic else None
    if as_json:
        record = {
            "event": "started",
            "lab": doc.metadata.name,
            "gateway_url": stack.gateway_url,
            "metrics_url": stack.metrics_url,
            "providers": stack.provider_urls,
            "traffic": traffic.model_dump() if traffic else None,
        }
        click.echo(json.dumps(record))
        return
    click.echo(f"lab {doc.metadata.name} (seed {doc.spec.seed})")
    click.echo(f"  gateway   {stack.gateway_url}   metrics {stack.metrics_url}")
    for name, url in stack.provider_urls.items():
        click.echo(f"  provider  {url}   {name}")
    if traffic:
        click.echo(f"  traffic   {traffic.rate:g} req/s on route {traffic.route}")
    click.echo("Ctrl-C stops")


def _stopped(snapshot: TrafficSnapshot | None, as_json: bool) -> None:
    # Requests in flight at the stop are cancelled and never answered: say how many, so the
    # counts per variant need not add up to what was sent.
    unanswered = 0 if snapshot is None else snapshot.sent - sum(snapshot.by_outcome.values())
    if as_json:
        traffic = None
        if snapshot is not None:
            traffic = {
                "sent": snapshot.sent,
                "shed": snapshot.shed,
                "unanswered": unanswered,
                "by_variant": snapshot.by_variant,
                "correct": snapshot.correct,
            }
        click.echo(json.dumps({"event": "stopped", "traffic": traffic}))
        return
    if snapshot is None:
        click.echo("stopped")
        return
    cut = f"; {unanswered} still unanswered at the stop, not counted below" if unanswered else ""
    click.echo(f"stopped after {snapshot.sent} requests ({snapshot.shed} shed{cut})")
    for variant, outcomes in sorted(snapshot.by_variant.items()):
        counts = ", ".join(f"{k}: {v}" for k, v in sorted(outcomes.items()))
        click.echo(f"  {variant}: {counts}; right answers: {snapshot.correct.get(variant, 0)}")
