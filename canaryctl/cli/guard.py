"""`canaryctl guard run|status|rearm GUARD`: a standing watch on a flag between rollouts.

`run` keeps watching until Ctrl-C or SIGTERM (which leave the flag as it is: a guard only ever
moves it to the safe variation). `rearm` is how a person says the guard may act again; it works
from any terminal, the running guard reads it from the journal within a second.
"""

from __future__ import annotations

import getpass
import json
import socket
import time
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from canaryctl.cli.listen import split_listen
from canaryctl.cli.main import output_option, signals_as_ctrl_c, state_option, wants_json
from canaryctl.errors import InvalidInput

if TYPE_CHECKING:
    from canaryctl.guard.journal import GuardJournal
    from canaryctl.runbook import Guard

# The watch, its journal and the documents are imported by the commands that use them.

__all__ = ["guard"]

_journal_option = click.option(
    "--journal",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="the guard's journal (JSON lines); default .canaryctl/guards/NAME.jsonl",
)


def _journal(document: Guard, path: Path | None) -> GuardJournal:
    from canaryctl.guard.journal import GuardJournal

    if path is not None:
        return GuardJournal(path)
    return GuardJournal.for_guard(document.metadata.name)


def _show(entry: dict[str, Any], output: str | None) -> None:
    if wants_json(output):
        click.echo(json.dumps(entry))
        return
    details = {k: v for k, v in entry.items() if k not in ("at", "event")}
    when = time.strftime("%H:%M:%S", time.gmtime(entry["at"]))
    click.echo(f"{when} {entry['event']} {json.dumps(details) if details else ''}".rstrip())


@click.group()
def guard() -> None:
    """Watch a flag between rollouts; move it to its safe variation when an SLO fails."""


@guard.command("run")
@click.argument("document_path", metavar="GUARD", type=click.Path(dir_okay=False))
@state_option("the rollouts' journal, to stand aside while one runs on the flag")
@_journal_option
@click.option(
    "--listen",
    default=None,
    help="serve an Alertmanager webhook on HOST:PORT (tokens: CANARYCTL_API_TOKENS)",
)
@output_option
def run_command(
    document_path: str,
    state_path: str,
    journal: Path | None,
    listen: str | None,
    output: str | None,
) -> None:
    """Watch until interrupted (exit 130); once tripped, wait for a re-arm."""
    from canaryctl.clock import SystemClock
    from canaryctl.controller.hooks import webhook_url
    from canaryctl.controller.store import StateStore
    from canaryctl.flags.factory import flag_store_for
    from canaryctl.guard.watch import GuardWatch
    from canaryctl.metrics.factory import metrics_source_for
    from canaryctl.runbook import Guard, load_document

    document = load_document(document_path, expect=Guard)
    spec = document.spec
    for index, hook in enumerate(spec.on_trip):
        webhook_url(hook.webhook, f"spec.on_trip[{index}].webhook")
    address = split_listen(listen) if listen is not None else None
    tokens = None
    if address is not None:
        from canaryctl.api.tokens import ApiTokens

        tokens = ApiTokens.from_env()
    flags = flag_store_for(spec.flag)
    flags.snapshot()  # the flag reads, before we promise to watch it
    clock = SystemClock()
    metrics = metrics_source_for(spec.metrics, clock=clock.now, slos=spec.slos,
                                 baseline=spec.flag.baseline, canary=spec.flag.canary)  # fmt: skip
    metrics.check()

    def rollouts() -> list[Any]:
        if "://" not in state_path and not Path(state_path).exists():
            return []  # no rollout has ever run here
        with StateStore(state_path) as store:
            return store.unfinished_runs()

    book = _journal(document, journal)
    book.echo = lambda entry: _show(entry, output)
    watch = GuardWatch(document, flags=flags, metrics=metrics, journal=book, clock=clock,
                       rollouts=rollouts)  # fmt: skip
    with ExitStack() as stack:
        if address is not None and tokens is not None:
            from canaryctl.guard.server import guard_app
            from canaryctl.request_limits import ServerLimits
            from canaryctl.serving import BackgroundServer, limited

            app = limited(guard_app(watch, tokens), ServerLimits())
            server = BackgroundServer(app, host=address[0], port=address[1])
            stack.enter_context(server)
            click.echo(f"alertmanager webhook at {server.url}/api/v1/alertmanager", err=True)
        stack.callback(watch.hooks.close)
        with signals_as_ctrl_c():
            watch.run()  # Ctrl-C or SIGTERM: exit 130, the flag left as it is


@guard.command("status")
@click.argument("document_path", metavar="GUARD", type=click.Path(dir_okay=False))
@_journal_option
@output_option
def status_command(document_path: str, journal: Path | None, output: str | None) -> None:
    """Armed or tripped (and why), from the journal."""
    from canaryctl.runbook import Guard, load_document

    document = load_document(document_path, expect=Guard)
    book = _journal(document, journal)
    trip = book.last_trip()
    entries = book.entries()
    state = "tripped" if trip is not None else "armed"
    if wants_json(output):
        click.echo(json.dumps({"guard": document.metadata.name, "state": state, "trip": trip,
                               "last": entries[-1] if entries else None}))  # fmt: skip
        return
    click.echo(f"guard {document.metadata.name}: {state}")
    if trip is not None:
        click.echo(f"  tripped: {trip.get('reason', '')}")
        click.echo(f"  re-arm with: canaryctl guard rearm {document_path}")


@guard.command("rearm")
@click.argument("document_path", metavar="GUARD", type=click.Path(dir_okay=False))
@_journal_option
@output_option
def rearm_command(document_path: str, journal: Path | None, output: str | None) -> None:
    """Let a tripped guard act again (it does nothing until then)."""
    from canaryctl.runbook import Guard, load_document

    document = load_document(document_path, expect=Guard)
    book = _journal(document, journal)
    if book.last_trip() is None:
        raise InvalidInput(f"guard {document.metadata.name} is not tripped ({book.path})")
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    entry = book.append("rearmed", at=time.time(), by=f"{user}@{socket.gethostname()}")
    if wants_json(output):
        click.echo(json.dumps(entry))
    else:
        click.echo(f"guard {document.metadata.name} re-armed; a running guard watches again "
                   "within a second")  # fmt: skip
