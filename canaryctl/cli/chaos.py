"""`canaryctl chaos proxy|inject|list|remove|clear`: the fault proxy and its admin API, driven the
way SREs drive toxiproxy-cli. The admin token comes from CANARYCTL_CHAOS_TOKEN, never a flag."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import click
from pydantic import ValidationError

from canaryctl.chaos.client import ChaosClient, token_from_env
from canaryctl.chaos.proxy import ADMIN_PREFIX, TOKEN_ENV, create_proxy_app
from canaryctl.chaos.server import bind, server_for
from canaryctl.cli.gateway import split_listen
from canaryctl.cli.main import main, output_option, wants_json
from canaryctl.errors import InvalidInput
from canaryctl.runbook.scenario import FAULT_KINDS, FaultSpec

__all__ = ["chaos"]


@main.group()
def chaos() -> None:
    """Inject faults into a provider through the fault proxy; run chaos scenarios."""


@chaos.command("proxy")
@click.option("--listen", default="127.0.0.1:8091", show_default=True, metavar="HOST:PORT")
@click.option("--upstream", required=True, help="the provider's base URL, e.g. http://h:8000")
@click.option(
    "--admin-from-anywhere",
    is_flag=True,
    help="let non-loopback clients use the admin API (the token is still required)",
)
@output_option
def proxy_command(
    listen: str, upstream: str, admin_from_anywhere: bool, output: str | None
) -> None:
    """Proxy to UPSTREAM, injecting the faults added through the admin API (under /_chaos)."""
    if not upstream.startswith(("http://", "https://")):
        raise click.BadParameter("must be an http:// or https:// URL", param_hint="--upstream")
    token = token_from_env()
    host, port = split_listen(listen)
    sock = bind(host, port)
    url = f"http://{host}:{sock.getsockname()[1]}"
    app = create_proxy_app(upstream, token=token, admin_from_anywhere=admin_from_anywhere)
    if wants_json(output):
        click.echo(json.dumps({"event": "listening", "url": url, "upstream": upstream}))
    else:
        click.echo(
            f"chaos proxy on {url} -> {upstream}; admin API at {url}{ADMIN_PREFIX} "
            f"(token from {TOKEN_ENV}); Ctrl-C stops"
        )
    asyncio.run(server_for(app).serve(sockets=[sock]))


def _proxy_option(func: Any) -> Any:
    return click.option(
        "--proxy",
        "proxy_url",
        required=True,
        envvar="CANARYCTL_CHAOS_PROXY",
        help="the proxy's base URL; env CANARYCTL_CHAOS_PROXY",
    )(func)


def _client(proxy_url: str) -> ChaosClient:
    return ChaosClient(proxy_url, token_from_env())


def _header(values: tuple[str, ...]) -> dict[str, str]:
    headers = {}
    for value in values:
        name, sep, wanted = value.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"'{value}' is not NAME=VALUE", param_hint="--match-header")
        headers[name] = wanted
    return headers


@chaos.command("inject")
@_proxy_option
@click.option("--fault", "kind", required=True, type=click.Choice(FAULT_KINDS))
@click.option("--rate", type=float, default=1.0, show_default=True, help="probability, 0..1")
@click.option("--ttl", default="5m", show_default=True, help="lifetime, enforced by the proxy")
@click.option("--status", type=int, help="error: 500, 502, 503 or 529")
@click.option("--shape", type=click.Choice(["openai", "anthropic"]), help="error body shape")
@click.option("--retry-after", help="rate_limit: Retry-After, e.g. 2s")
@click.option("--delay", help="latency, slow_first_token: e.g. 500ms")
@click.option("--delay-p95", help="latency: log-normal with median --delay and this p95")
@click.option("--after-chunks", type=int, help="stream_cut, stream_stall, malformed")
@click.option("--match-path", help="glob on the URL path")
@click.option("--match-model", help="glob on the request's model")
@click.option("--match-header", multiple=True, metavar="NAME=VALUE")
@output_option
def inject_command(
    proxy_url: str,
    kind: str,
    match_path: str | None,
    match_model: str | None,
    match_header: tuple[str, ...],
    output: str | None,
    **params: Any,
) -> None:
    """Add a fault; it ends by itself when its TTL runs out."""
    body = {"fault": kind, **{k: v for k, v in params.items() if v is not None}}
    match = {"path": match_path, "model": match_model, "headers": _header(match_header)}
    body["match"] = {k: v for k, v in match.items() if v}
    try:
        spec = FaultSpec.model_validate(body)
    except ValidationError as exc:
        raise InvalidInput("\n".join(_as_options(exc))) from None
    fault = _client(proxy_url).add(spec)
    if wants_json(output):
        click.echo(json.dumps({"event": "injected", **fault}))
    else:
        click.echo(f"{fault['id']}: {spec.describe()}")


def _as_options(exc: ValidationError) -> list[str]:
    """Field errors named as the options the user typed (`--status: ...`)."""
    problems = []
    for error in exc.errors(include_url=False):
        field = ".".join(str(p) for p in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if not field:  # a check across fields names its own field first
            field, _, message = message.partition(": ")
        problems.append(f"--{field.replace('_', '-')}: {message}")
    return problems


@chaos.command("list")
@_proxy_option
@output_option
def list_command(proxy_url: str, output: str | None) -> None:
    """The faults in force, with the seconds each has left."""
    faults = _client(proxy_url).faults()
    for fault in faults:
        if wants_json(output):
            click.echo(json.dumps(fault))
        else:
            spec = FaultSpec.model_validate({k: v for k, v in fault.items() if k in _SPEC_KEYS})
            click.echo(f"{fault['id']}  {spec.describe()}; ends in {fault['expires_in']:g}s")
    if not faults and not wants_json(output):
        click.echo("no faults")


_SPEC_KEYS = frozenset(FaultSpec.model_fields)


@chaos.command("remove")
@_proxy_option
@click.argument("fault_id")
@output_option
def remove_command(proxy_url: str, fault_id: str, output: str | None) -> None:
    """Remove one fault by id."""
    removed = _client(proxy_url).remove(fault_id)
    if wants_json(output):
        click.echo(json.dumps({"event": "removed", "id": fault_id, "found": removed}))
    else:
        click.echo(f"{fault_id}: removed" if removed else f"{fault_id}: already gone")


@chaos.command("clear")
@_proxy_option
@output_option
def clear_command(proxy_url: str, output: str | None) -> None:
    """Remove every fault."""
    count = _client(proxy_url).clear()
    if wants_json(output):
        click.echo(json.dumps({"event": "cleared", "removed": count}))
    else:
        click.echo(f"removed {count} fault(s)")
