"""`canaryctl chaos proxy|inject|list|remove|clear|run`: the fault proxy and its admin API, driven
the way SREs drive toxiproxy-cli, and scenarios. The admin token comes from the environment
(CANARYCTL_CHAOS_TOKEN, or the scenario's target.token_env), never from a flag or a document.
The server stack and the metrics backends are imported by the commands that use them, so
`chaos list` and `chaos inject` start as fast as the admin client does."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from canaryctl.chaos.admin import ADMIN_PREFIX, FAULT_KINDS, TOKEN_ENV
from canaryctl.cli.arguments import FiniteRange, http_url
from canaryctl.cli.listen import split_listen
from canaryctl.cli.main import output_option, signals_as_ctrl_c, wants_json
from canaryctl.errors import InvalidInput
from canaryctl.redact import redact_url
from canaryctl.request_limits import DEFAULT_MAX_BODY_BYTES

if TYPE_CHECKING:
    from pydantic import ValidationError

    from canaryctl.chaos.client import ChaosClient
    from canaryctl.metrics.base import MetricsSource
    from canaryctl.runbook.scenario import ChaosScenario

# The documents' models (pydantic), the admin client (httpx) and the server stack are imported
# by the commands that use them, so `chaos --help` starts as fast as `canaryctl --help`.

__all__ = ["chaos"]


@click.group()
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
@click.option(
    "--max-body-bytes",
    type=click.IntRange(1024, 2**31 - 1),
    default=DEFAULT_MAX_BODY_BYTES,
    show_default=True,
    help="larger client bodies get a 413 and are never forwarded",
)
@output_option
def proxy_command(
    listen: str,
    upstream: str,
    admin_from_anywhere: bool,
    max_body_bytes: int,
    output: str | None,
) -> None:
    """Proxy to UPSTREAM, injecting the faults added through the admin API (under /_chaos)."""
    from canaryctl.chaos.client import token_from_env
    from canaryctl.chaos.proxy import create_proxy_app  # the server stack, for this command only
    from canaryctl.chaos.server import bind, server_for

    if not upstream.startswith(("http://", "https://")):
        raise click.BadParameter("must be an http:// or https:// URL", param_hint="--upstream")
    token = token_from_env()
    host, port = split_listen(listen)
    sock = bind(host, port)
    url = f"http://{host}:{sock.getsockname()[1]}"
    app = create_proxy_app(
        upstream,
        token=token,
        admin_from_anywhere=admin_from_anywhere,
        max_body_bytes=max_body_bytes,
    )
    if wants_json(output):
        click.echo(json.dumps({"event": "listening", "url": url, "upstream": redact_url(upstream)}))
    else:
        click.echo(
            f"chaos proxy on {url} -> {redact_url(upstream)}; admin API at {url}{ADMIN_PREFIX} "
            f"(token from {TOKEN_ENV}); Ctrl-C stops"
        )
    server_for(app).run(sockets=[sock])  # on uvloop when it is installed


def _proxy_option(func: Any) -> Any:
    return click.option(
        "--proxy",
        "proxy_url",
        required=True,
        envvar="CANARYCTL_CHAOS_PROXY",
        help="the proxy's base URL; env CANARYCTL_CHAOS_PROXY",
    )(func)


def _client(proxy_url: str) -> ChaosClient:
    from canaryctl.chaos.client import ChaosClient, token_from_env  # httpx: when it is used

    return ChaosClient(http_url(proxy_url, "--proxy"), token_from_env())


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
@click.option(
    "--rate", type=FiniteRange(0, 1), default=1.0, show_default=True, help="probability, 0..1"
)
@click.option("--ttl", default="5m", show_default=True, help="lifetime, enforced by the proxy")
@click.option("--status", type=int, help="error: 500, 502, 503 or 529")
@click.option(
    "--shape",
    type=click.Choice(["openai", "anthropic"]),
    help="shape of error bodies and empty/filtered answers",
)
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
    from pydantic import ValidationError

    from canaryctl.runbook.scenario import FaultSpec

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
    from canaryctl.runbook.scenario import FaultSpec

    faults = _client(proxy_url).faults()
    for fault in faults:
        if wants_json(output):
            click.echo(json.dumps(fault))
        else:
            spec = FaultSpec.model_validate(
                {k: v for k, v in fault.items() if k in FaultSpec.model_fields}
            )
            click.echo(f"{fault['id']}  {spec.describe()}; ends in {fault['expires_in']:.0f}s")
    if not faults and not wants_json(output):
        click.echo("no faults")


@chaos.command("remove")
@_proxy_option
@click.argument("fault_id")
@output_option
def remove_command(proxy_url: str, fault_id: str, output: str | None) -> None:
    """Remove one fault by id; an id the proxy does not hold (never injected, expired, or
    removed already) is exit 2, like a run id the state does not hold."""
    client = _client(proxy_url)
    if not client.remove(fault_id):
        shown = fault_id if len(fault_id) <= 64 else fault_id[:64] + "..."
        raise InvalidInput(
            f"no fault {shown} on {client.shown} (never injected, expired or removed already; "
            "`canaryctl chaos list` shows the faults in force)"
        )
    if wants_json(output):
        click.echo(json.dumps({"event": "removed", "id": fault_id, "found": True}))
    else:
        click.echo(f"{fault_id}: removed")


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


def _journal_path(name: str) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return Path(".canaryctl/chaos") / f"{name}-{stamp}.json"


def _printer(output: str | None) -> Callable[[dict[str, Any]], None]:
    as_json = wants_json(output)

    def emit(event: dict[str, Any]) -> None:
        if as_json:
            click.echo(json.dumps(event))
            return
        kind = event["event"]
        if kind == "check":
            values = ", ".join(
                f"{c['check']}: {'-' if c['value'] is None else format(c['value'], '.4g')}"
                for c in event["checks"]
            )
            click.echo(
                f"{event['phase']:<7} {event['outcome']:<12} {event['requests']:g} requests; "
                f"{values}"
            )
        elif kind == "injected":
            click.echo(
                f"injected {event['id']}: {event['fault']}, ends in {event['expires_in']:g}s"
            )
        elif kind == "removed":
            click.echo(f"removed  {event['id']}" + ("" if event["found"] else " (already gone)"))
        elif kind == "abort":
            click.echo(f"abort: {event['reason']}")
        elif kind == "finished":
            click.echo(f"outcome: {event['outcome']}" + (f" ({event.get('reason')})"))

    return emit


@chaos.command("run")
@click.argument("scenario_file", metavar="SCENARIO", type=click.Path(dir_okay=False))
@click.option(
    "--journal",
    "journal_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="where the JSON journal goes; default .canaryctl/chaos/NAME-TIME.json",
)
@click.option("--junit", type=click.Path(dir_okay=False, path_type=Path), help="JUnit XML")
@click.option("--dry-run", is_flag=True, help="check the proxy and metrics, print the plan")
@output_option
def run_command(
    scenario_file: str,
    journal_path: Path | None,
    junit: Path | None,
    dry_run: bool,
    output: str | None,
) -> None:
    """Check the steady state, inject, check during, remove, check after: exit 0 held, 1 not."""
    from canaryctl.chaos.client import ChaosClient, token_from_env
    from canaryctl.chaos.journal import Journal, junit_xml  # metrics backends: this command only
    from canaryctl.chaos.scenario import hypothesis_metrics, run_scenario
    from canaryctl.runbook import load_document
    from canaryctl.runbook.scenario import ChaosScenario

    scenario = load_document(scenario_file, expect=ChaosScenario)
    spec = scenario.spec
    client = ChaosClient(spec.target.url, token_from_env(spec.target.token_env))
    metrics = hypothesis_metrics(scenario)
    if dry_run:
        _dry_run(scenario, client, metrics, output)
        return
    journal = Journal(scenario, journal_path or _journal_path(scenario.metadata.name))
    try:
        with signals_as_ctrl_c():
            result = run_scenario(
                scenario, injector=client, metrics=metrics, journal=journal, emit=_printer(output)
            )
    finally:
        if junit is not None:
            junit.write_text(junit_xml(journal.data), encoding="utf-8")
        if not wants_json(output):
            click.echo(f"journal: {journal.path}", err=True)
    click.get_current_context().exit(result.exit_code)


def _dry_run(
    scenario: ChaosScenario, client: ChaosClient, metrics: MetricsSource, output: str | None
) -> None:
    """What a run would do, after checking that the proxy and the metrics answer."""
    from canaryctl.runbook.scenario import PHASES

    spec = scenario.spec
    present = client.faults()
    metrics.check()
    faults = [f.model_dump(mode="json", exclude_none=True) for f in spec.injected_faults()]
    checks = {p: [c.describe() for c in spec.hypothesis.checks if p in c.phases] for p in PHASES}
    if wants_json(output):
        plan = {
            "event": "plan",
            "name": scenario.metadata.name,
            "target": redact_url(spec.target.url),
            "faults_present": len(present),
            "inject": faults,
            "duration": spec.duration,
            "checks": checks,
            "window": spec.hypothesis.window,
            "interval": spec.hypothesis.interval,
            "recovery": spec.recovery,
        }
        click.echo(json.dumps(plan))
        return
    h = spec.hypothesis
    click.echo(
        f"scenario {scenario.metadata.name}: proxy {redact_url(spec.target.url)} answers "
        f"({len(present)} fault(s) in force); metrics answer"
    )
    click.echo(f"1. before: over {h.window:g}s of traffic, check {', '.join(checks['before'])}")
    for fault in spec.injected_faults():
        click.echo(f"2. inject {fault.describe()}")
    click.echo(
        f"3. for {spec.duration:g}s, every {h.interval:g}s, check {', '.join(checks['during'])}"
        + (" (abort on violation)" if spec.abort_on_violation else "")
    )
    click.echo("4. remove the injected faults, whatever happened")
    click.echo(
        f"5. after {spec.recovery:g}s of recovery, over {h.window:g}s, "
        f"check {', '.join(checks['after'])}"
    )
    click.echo("dry run: nothing injected")
