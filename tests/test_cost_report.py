"""`canaryctl cost report` end to end on the lab of runbooks/cost/lab.yaml: real gateway, real
simulated providers, traffic with a planted driver (the nightly-digest job on GPT-4-turbo), a
planted redundant job (reindex repeats 40% of its calls), cache hits (faq at temperature 0)
and fallbacks (Mixtral fails 10%). The report must find each, in text, JSON and the page, which
headless Chromium renders. Without chromium the page test skips locally and FAILS in CI."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from loopback import free_port

from canaryctl.cli import main
from canaryctl.lab import LabStack
from canaryctl.runbook import load_document
from canaryctl.runbook.lab import Lab
from tests.test_report import rendered, screenshot

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.e2e


def cost_lab() -> LabStack:
    lab = load_document(ROOT / "runbooks/cost/lab.yaml", expect=Lab).spec
    gateway = lab.gateway.model_copy(update={"listen": "127.0.0.1:0"})
    return LabStack(lab.model_copy(update={"gateway": gateway}))


@pytest.fixture(scope="module")
def stack() -> Iterator[LabStack]:
    with cost_lab() as running:
        running.set_traffic_rate(150)
        # Until the lab has answered what it answers in 5 s on a quiet machine: a loaded one
        # takes longer instead of leaving the report too few queries to find with.
        answered = 600
        deadline = time.monotonic() + 120  # a bound, not a pace
        assert running.traffic is not None
        while sum(running.traffic.snapshot().by_outcome.values()) < answered:
            assert time.monotonic() < deadline, "the lab stopped answering"
            time.sleep(0.1)
        yield running


def cost_report(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["cost", "report", *args])
    return result.exit_code, result.output


def test_the_report_finds_the_planted_driver_and_the_redundant_job(stack: LabStack) -> None:
    code, output = cost_report("--metrics", stack.metrics_url, "-o", "json")
    assert code == 0, output
    report = json.loads(output)
    assert report["queries"] > 300 and report["cost_usd"] > 0
    assert report["cost_per_query_usd"] == pytest.approx(report["cost_usd"] / report["queries"])
    assert report["projected_month_usd"] == pytest.approx(
        report["cost_usd"] / report["window_seconds"] * 30 * 86400
    )
    # The planted driver: the job is most of the bill, on GPT-4-turbo, and the change that cuts
    # it most is a downgrade to the cheapest model seen.
    jobs = report["breakdown"]["job"]
    assert jobs[0]["name"] == "nightly-digest" and jobs[0]["share"] > 0.8
    assert report["breakdown"]["model"][0]["name"] == "gpt-4-turbo"
    assert report["breakdown"]["team"][0]["name"] == "research"
    first = report["drivers"][0]
    assert first["name"] in ("gpt-4-turbo", "digest", "nightly-digest", "research"), first
    digest = next(d for d in report["drivers"] if d["kind"] == "job")
    assert digest["name"] == "nightly-digest"
    best = digest["actions"][0]
    assert best["change"] == "downgrade it" and "gpt-4o-mini" in best["how"]
    assert 0.9 * digest["cost_usd"] < best["saving_usd"] < digest["cost_usd"]
    assert {a["change"] for a in digest["actions"]} >= {"batch it", "budget it"}
    # The planted redundant job has the largest share of repeats, near its 40% (the first
    # requests of a job are counted as `other` until it is found heavy, and a repeat sent while
    # the first is in flight is not yet a repeat); the fresh-question jobs are not redundant.
    repeats = {(r["route"], r["job"]): r for r in report["repeats"]}
    reindex = repeats[("index", "reindex")]
    assert 0.25 < reindex["share"] < 0.5, reindex
    assert max(report["repeats"], key=lambda r: r["share"])["job"] == "reindex"
    # Listed costliest first (docs/cost.md): a few GPT-4-turbo repeats may outrank it.
    costs = [r["redundant_cost_usd"] for r in report["repeats"]]
    assert costs == sorted(costs, reverse=True)
    assert repeats[("digest", "nightly-digest")]["share"] < 0.05
    # Cache hits on faq's temperature-0 repeats, and what they saved.
    assert report["cache"]["hits"] > 10 and report["cache"]["saved_usd"] > 0
    # Mixtral's failures were answered by GPT-4o-mini: fallback cost.
    assert report["fallback"]["requests"] > 0 and report["fallback"]["cost_usd"] > 0
    # Top users: bounded, heaviest first, each a share of the bill.
    users = report["top_users"]
    assert 0 < len(users) <= 10
    assert [u["cost_usd"] for u in users] == sorted((u["cost_usd"] for u in users), reverse=True)
    # Shares of each breakdown add up to the bill.
    for dimension in ("route", "model", "team", "job"):
        total = sum(s["cost_usd"] for s in report["breakdown"][dimension])
        assert total == pytest.approx(report["cost_usd"]), dimension


def test_a_window_between_two_scrapes_counts_only_what_happened_in_it(stack: LabStack) -> None:
    code, output = cost_report("--metrics", stack.metrics_url, "-o", "json")
    totals = json.loads(output)
    code, output = cost_report("--metrics", stack.metrics_url, "--window", "1s", "-o", "json")
    assert code == 0, output
    window = json.loads(output)
    assert 0.9 < window["window_seconds"] < 3
    # About a second of traffic (150 req/s on a quiet machine; however many a loaded one
    # serves): some, and far fewer than the totals since the start.
    assert 0 < window["queries"] < totals["queries"] / 2


def test_text_lists_drivers_first_and_every_breakdown(stack: LabStack) -> None:
    code, output = cost_report("--metrics", stack.metrics_url)
    assert code == 0, output
    lines = output.splitlines()
    drivers = lines.index("drivers, largest first (savings overlap: do not add them up)")
    assert drivers < lines.index("by route") < lines.index("by job")
    assert any(line.startswith("job nightly-digest") and "downgrade it" in line for line in lines)
    assert any(line.startswith("index / reindex") for line in lines)
    for title in ("by model", "by tier", "by team", "top users", "repeated calls"):
        assert any(line.startswith(title) for line in lines), title


def test_the_page_shows_the_breakdown_as_charts_and_renders_in_chromium(
    stack: LabStack, tmp_path: Path
) -> None:
    page = tmp_path / "cost.html"
    code, output = cost_report("--metrics", stack.metrics_url, "--html", str(page), "-o", "json")
    assert code == 0, output
    assert json.loads(output)["html"] == str(page)
    html = page.read_text()
    for dimension in ("route", "model", "tier", "team", "job", "user"):
        assert f'class="bars {dimension}"' in html, dimension
    assert re.search(r'<g class="bar" data-name="nightly-digest" data-share="0\.[89]', html)
    assert '<tr class="driver" data-kind="job" data-name="nightly-digest">' in html
    assert '<tr class="repeat" data-route="index" data-job="reindex">' in html
    # Nothing to fetch: no script, stylesheet link, image, font or remote URL.
    assert not re.search(r"<script|<link|<img|\bsrc=|\bhref=|url\(|@import", html)
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", html)
    screenshot(tmp_path, page)
    # What Chromium draws: a bar per slice on one scale per chart, nightly-digest's near 90%.
    dom = rendered(tmp_path, page)
    for dimension in ("route", "model", "tier", "team", "job", "user"):
        assert f'class="bars {dimension}"' in dom, dimension
    assert re.search(r'<g class="bar" data-name="nightly-digest" data-share="0\.[89]', dom)


def test_bad_input_is_exit_2_and_a_dead_gateway_exit_3() -> None:
    code, output = cost_report()
    assert code == 2 and "give --metrics URL" in output
    code, output = cost_report("--metrics", "http://127.0.0.1:1/metrics", "--window", "soon")
    assert code == 2 and "--window: 'soon' is not a duration" in output
    code, output = cost_report("--prometheus", "http://127.0.0.1:1", "--from", "yesterday",
                               "--to", "0")  # fmt: skip
    assert code == 2 and "--from: 'yesterday'" in output
    code, output = cost_report("--prometheus", "http://127.0.0.1:1")
    assert code == 2 and "--prometheus needs --from and --to" in output
    dead = f"http://user:hunter2@127.0.0.1:{free_port()}/metrics?token=s3cret"
    code, output = cost_report("--metrics", dead)
    assert code == 3 and "cannot read metrics from http://127.0.0.1:" in output
    assert "hunter2" not in output and "s3cret" not in output
