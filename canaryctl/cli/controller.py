"""`canaryctl controller serve`: the long-running controller that drives every submitted run."""

from __future__ import annotations

import os
import socket
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import click

from canaryctl.cli.arguments import FiniteRange
from canaryctl.cli.listen import split_listen
from canaryctl.cli.main import output_option, state_option, wants_json
from canaryctl.controller.defaults import DEFAULT_LEASE_TTL, wait_bound
from canaryctl.errors import InvalidInput

if TYPE_CHECKING:
    from canaryctl.controller.store import StateStore

__all__ = ["controller"]


@click.group()
def controller() -> None:
    """Drive every rollout submitted to a shared state database."""


@controller.command("serve")
@state_option("the state database runs are submitted to (`rollout run --detach`)")
@click.option(
    "--listen",
    default="127.0.0.1:8090",
    show_default=True,
    metavar="HOST:PORT",
    help="the HTTP listener (/healthz; the API and live page with CANARYCTL_API_TOKENS); "
    "port 0 picks a free one",
)
@click.option(
    "--lease",
    "lease_ttl",
    type=FiniteRange(0.5, 86_400),
    default=DEFAULT_LEASE_TTL,
    show_default=True,
    help="seconds a run's lease lasts without a heartbeat: how soon another controller takes "
    "over the runs of one that died",
)
@output_option
def serve(state_path: str, listen: str, lease_ttl: float, output: str | None) -> None:
    """Drive every run submitted to the state database, many at once, until SIGTERM or Ctrl-C;
    then hand the runs back (their flags untouched) for another controller to continue."""
    from canaryctl.cli.views import JsonLinesView
    from canaryctl.controller.service import Controller, serve
    from canaryctl.controller.store import StateStore

    host, port = split_listen(listen)
    try:
        listener = socket.create_server((host, port))
    except OSError as exc:
        raise InvalidInput(f"--listen {listen}: {exc.strerror}") from exc
    # Every database wait is bounded well within the lease (canaryctl/controller/lease.py).
    with listener, StateStore(state_path, timeout=wait_bound(lease_ttl)) as store:
        observers = [JsonLinesView()] if wants_json(output) else []
        service = Controller(store, lease_ttl=lease_ttl, observers=observers)
        # Tokens are checked before the controller says it is up: a bad entry must not read
        # as a controller that started and then died.
        routes, handlers = _api(store, state_path)
        bound = listener.getsockname()[1]
        click.echo(
            f"controller {service.owner} on http://{host}:{bound} (state {store.where}, lease "
            f"{lease_ttl:g}s); SIGTERM hands its runs back",
            err=True,
        )
        serve(service, listener, routes=routes, exception_handlers=handlers)


def _api(store: StateStore, state_path: str) -> tuple[list[Any], dict[Any, Any]]:
    """The JSON API, its OpenAPI document and the live page, with submit, when tokens are set;
    without them only /healthz is served (an API anyone on the host could call is not served).
    The API shares the controller's store (thread-safe, pooled): no engine and no schema check
    per request."""
    from canaryctl.api import ApiTokens, api_routes, json_errors
    from canaryctl.api.tokens import TOKENS_ENV
    from canaryctl.controller.runner import submit_rollout

    if not os.environ.get(TOKENS_ENV, "").strip():
        click.echo(f"{TOKENS_ENV} is not set: the API and the live page are off", err=True)
        return [], {}
    tokens = ApiTokens.from_env()
    routes = api_routes(
        lambda: nullcontext(store),
        tokens,
        submit=lambda rollout: submit_rollout(rollout, state_path=state_path)[0],
    )
    return routes, json_errors
