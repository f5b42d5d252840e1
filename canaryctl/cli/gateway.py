"""`gateway serve`: run the reference gateway in the foreground until Ctrl-C or SIGTERM."""

from __future__ import annotations

import click

from canaryctl.cli.listen import split_listen
from canaryctl.errors import InvalidInput

__all__ = ["gateway"]


@click.group()
def gateway() -> None:
    """Run the reference gateway."""


@gateway.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--listen", metavar="HOST:PORT", help="overrides the document's spec.listen")
def serve(config: str, listen: str | None) -> None:
    """Serve the Gateway document CONFIG: OpenAI and Ollama APIs, /metrics and /health."""
    from canaryctl.gateway import create_app
    from canaryctl.gateway.routing import check_flag_source
    from canaryctl.runbook import Gateway, load_document
    from canaryctl.serving import bind, server_for

    spec = load_document(config, expect=Gateway).spec
    host, port = split_listen(listen or spec.listen)
    try:
        check_flag_source(spec.flags)
    except InvalidInput as exc:
        raise InvalidInput(f"{config}: {exc}") from None
    app = create_app(spec)
    sock = bind(host, port)
    click.echo(f"gateway on http://{host}:{port} (metrics at /metrics); Ctrl-C stops", err=True)
    # in-flight requests finish at shutdown, however long their answers take
    server_for(app, spec.limits.server(), grace=None).run(sockets=[sock])
