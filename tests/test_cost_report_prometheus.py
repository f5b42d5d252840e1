"""`canaryctl cost report --prometheus URL --from T --to T` against a real Prometheus scraping
the cost lab's gateway: increase() over the range finds what the gateway's own counters say.
Without the prometheus binary this skips locally and FAILS in CI."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from prometheus_server import eventually, running_prometheus

from canaryctl.cli import main
from canaryctl.cost.counts import difference
from canaryctl.cost.report import build_report
from canaryctl.cost.sources import scrape
from tests.test_cost_report import cost_lab

pytestmark = pytest.mark.e2e


def scraped_through(prometheus_url: str, moment: float) -> bool:
    """Prometheus holds a sample of the gateway taken after `moment`."""
    answer = httpx.get(
        f"{prometheus_url}/api/v1/query",
        params={"query": "timestamp(llm_spend_start_time_seconds)"},
        timeout=5,
    ).json()["data"]["result"]
    return bool(answer) and float(answer[0]["value"][1]) > moment


def scrapes_since(prometheus_url: str, moment: float) -> int:
    """How many samples of the gateway Prometheus took after `moment`."""
    seconds = max(1, int(time.time() - moment))
    answer = httpx.get(
        f"{prometheus_url}/api/v1/query",
        params={"query": f"count_over_time(llm_spend_start_time_seconds[{seconds}s])"},
        timeout=5,
    ).json()["data"]["result"]
    return int(float(answer[0]["value"][1])) if answer else 0


def test_prometheus_range_reports_the_planted_driver_and_redundant_job(tmp_path: Path) -> None:
    with cost_lab() as stack, running_prometheus(tmp_path) as prometheus, httpx.Client() as client:
        stack.set_traffic_rate(150)
        prometheus.scrape(stack.metrics_url)
        start = time.time()
        eventually("a first scrape", lambda: scraped_through(prometheus.url, start))
        traffic = stack.traffic
        assert traffic is not None
        start, first = time.time(), scrape([stack.metrics_url], client)
        before = sum(traffic.snapshot().by_outcome.values())

        def range_is_long_enough() -> bool:
            """900 answers (6 s at 150/s on a quiet machine: a loaded one takes longer, never
            fewer) and 6 scrapes inside the range, so that increase() extrapolates from as
            many samples as it would on a quiet machine: the range ends on counts, not a clock."""
            answered = sum(traffic.snapshot().by_outcome.values()) - before
            return answered >= 900 and scrapes_since(prometheus.url, start) >= 6

        deadline = time.monotonic() + 180  # a bound for a loaded machine, not a pace
        while not range_is_long_enough():
            assert time.monotonic() < deadline, "the lab stopped answering"
            time.sleep(0.2)
        end, last = time.time(), scrape([stack.metrics_url], client)
        eventually("a scrape after the range", lambda: scraped_through(prometheus.url, end + 1))
        result = CliRunner().invoke(
            main,
            ["cost", "report", "--prometheus", prometheus.url, "--from", f"{start}",
             "--to", f"{end}", "-o", "json"],
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    exact = build_report(difference(last, first, at=end, since=start))
    # increase() extrapolates to the range's edges from 1 s scrapes: close, not equal.
    assert report["queries"] == pytest.approx(exact.queries, rel=0.25)
    assert report["cost_usd"] == pytest.approx(exact.cost_usd, rel=0.3)
    assert report["window_seconds"] == pytest.approx(end - start)
    jobs = report["breakdown"]["job"]
    assert jobs[0]["name"] == "nightly-digest" and jobs[0]["share"] > 0.8
    digest = next(d for d in report["drivers"] if d["kind"] == "job")
    assert digest["name"] == "nightly-digest"
    assert digest["actions"][0]["change"] == "downgrade it"
    reindex = next(r for r in report["repeats"] if r["job"] == "reindex")
    assert 0.25 < reindex["share"] < 0.5, reindex
    assert report["cache"]["hits"] > 0 and report["fallback"]["requests"] > 0
    assert report["top_users"] and report["top_users"][0]["cost_usd"] > 0
