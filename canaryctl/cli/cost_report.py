"""`canaryctl cost report`: what drives the bill. Thin: read the counts, call the pure report,
print (text, JSON) or write the page."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from canaryctl.cli.arguments import FiniteRange, http_url, parse_time, positive_duration
from canaryctl.errors import InvalidInput

if TYPE_CHECKING:
    from canaryctl.metrics.prometheus import PrometheusMetricsSource

__all__ = ["report"]


@click.command("report")
@click.option(
    "--metrics",
    "targets",
    multiple=True,
    metavar="URL",
    help="a gateway's /metrics (repeat for replicas): totals since it started, or --window",
)
@click.option("--window", help="with --metrics: scrape twice this far apart (e.g. 5m)")
@click.option("--prometheus", "prometheus_url", metavar="URL", help="read from this Prometheus")
@click.option("--from", "from_", help="with --prometheus: start (RFC 3339 or epoch seconds)")
@click.option("--to", help="with --prometheus: end (RFC 3339 or epoch seconds)")
@click.option(
    "--bearer-token-env",
    metavar="VAR",
    help="with --prometheus: environment variable holding a bearer token",
)
@click.option(
    "--batch-discount",
    type=FiniteRange(0, 1),
    default=0.5,
    show_default=True,
    help="share of a job's cost a provider's batch API takes off",
)
@click.option(
    "--min-share",
    type=FiniteRange(0, 1),
    default=0.05,
    show_default=True,
    help="a slice below this share of the bill is not listed as a driver",
)
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="also write the report as a self-contained HTML page",
)
@click.option("--output", "-o", type=click.Choice(["text", "json"]), default="text",
              show_default=True)  # fmt: skip
def report(
    targets: tuple[str, ...],
    window: str | None,
    prometheus_url: str | None,
    from_: str | None,
    to: str | None,
    bearer_token_env: str | None,
    batch_discount: float,
    min_share: float,
    html_path: Path | None,
    output: str,
) -> None:
    """Cost, queries, cost and tokens per query; the bill's share by route, model, tier, team,
    job and top users; fallback and retry cost; cache hits and what they saved; redundant
    calls per job and route; the projected month; and the largest drivers, each with the
    change that would cut it and what that saves.

    From gateways (--metrics URL, totals since they started or --window D between two
    scrapes) or from Prometheus (--prometheus URL --from T --to T, increase() over the range).
    """
    from canaryctl.cost.report import build_report
    from canaryctl.cost.sources import prometheus_counts, scraped_counts

    if bool(targets) == bool(prometheus_url):
        raise InvalidInput("give --metrics URL (one or more) or --prometheus URL, not both")
    if prometheus_url:
        if window is not None:
            raise InvalidInput("--window: only with --metrics (Prometheus takes --from/--to)")
        if from_ is None or to is None:
            raise InvalidInput("--prometheus needs --from and --to")
        start, end = parse_time(from_, "--from"), parse_time(to, "--to")
        if end <= start:
            raise InvalidInput("--to must be after --from")
        counts = prometheus_counts(_prometheus(prometheus_url, bearer_token_env), start, end)
    else:
        if from_ is not None or to is not None or bearer_token_env is not None:
            raise InvalidInput("--from, --to and --bearer-token-env: only with --prometheus")
        for target in targets:
            http_url(target, "--metrics")
        import httpx

        seconds = None if window is None else positive_duration(window, "--window")
        with httpx.Client(timeout=10.0) as client:
            counts = scraped_counts(list(targets), client, window=seconds)
    built = build_report(counts, batch_discount=batch_discount, min_share=min_share)
    if html_path is not None:
        from canaryctl.report.cost_page import cost_html

        try:
            html_path.write_text(cost_html(built), encoding="utf-8")
        except OSError as exc:
            raise InvalidInput(f"--html: cannot write {html_path}: {exc.strerror}") from None
    if output == "json":
        data = built.to_json()
        data["html"] = None if html_path is None else str(html_path)
        click.echo(json.dumps(data))
    else:
        from canaryctl.cost.text import render_text

        click.echo(render_text(built), nl=False)


def _prometheus(url: str, token_env: str | None) -> PrometheusMetricsSource:
    from canaryctl.metrics.prometheus import PrometheusMetricsSource

    http_url(url, "--prometheus")
    headers = None
    if token_env is not None:
        token = os.environ.get(token_env)
        if not token:
            raise InvalidInput(f"--bearer-token-env: environment variable {token_env} is not set")
        headers = {"Authorization": f"Bearer {token}"}
    return PrometheusMetricsSource(url, headers=headers, timeout=10.0)
