"""`canaryctl report SOURCE` for a chaos journal and a gate result: real inputs (a chaos run
played by the runner with a fake proxy and a fake clock; a gate run on the lab over loopback),
the pages self-contained, holding their charts and outcome, and rendering in headless Chromium.
Bad sources are exit 2 naming the file and what was expected.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from canaryctl.chaos.journal import Journal
from canaryctl.chaos.scenario import run_scenario
from canaryctl.cli import main
from canaryctl.clock import FakeClock
from canaryctl.metrics import Observation, VariantStats
from canaryctl.metrics.scripted import ScriptedMetricsSource
from tests.test_chaos_scenario import FakeInjector, fake_scenario
from tests.test_gate import write_lab, write_runbook
from tests.test_report import screenshot


def chaos_journal(tmp_path: Path, *, fallback_works: bool) -> Path:
    """Play the example scenario (503s from the primary for 30 s) with a fake proxy: users keep
    being answered while the fallback works; without it every request fails during the fault."""
    clock, injector = FakeClock(), FakeInjector()

    def traffic(since: float, now: float) -> Observation:
        n = 10 * (now - since)
        failing = bool(injector.faults) and not fallback_works
        buckets = ((0.5, n), (float("inf"), n))
        stats = VariantStats(
            requests=n, errors=n if failing else 0, fallbacks=n, latency_buckets=buckets
        )
        return Observation(since, now, {"primary": stats})

    scenario = fake_scenario()
    path = tmp_path / "journal.json"
    run_scenario(
        scenario,
        injector=injector,
        metrics=ScriptedMetricsSource(traffic, clock.now),
        journal=Journal(scenario, path, clock=clock.now),
        clock=clock,
    )
    return path


def report(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["report", *args])
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), result.exception
    return result.exit_code, result.output


def assert_self_contained(html: str) -> None:
    assert not re.search(r"<script|<link|<img|\bsrc=|\bhref=|url\(|@import", html)
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg|127\.0\.0\.1)", html)


def test_a_violated_chaos_run_as_a_page(tmp_path: Path) -> None:
    journal = chaos_journal(tmp_path, fallback_works=False)
    page = tmp_path / "chaos.html"
    code, output = report(str(journal), "--html", str(page), "-o", "json")
    assert code == 0, output
    story = json.loads(output)
    assert story["kind"] == "chaos" and story["outcome"] == "violated"
    assert story["html"] == str(page)
    assert [p["phase"] for p in story["phases"]] == ["before", "during", "after"]
    [fault] = story["faults"]
    assert fault["ttl"] == 60.0 and fault["removed"] is True
    assert fault["injected_at"] == story["phases"][1]["start"]
    success = next(c for c in story["checks"] if c["metric"] == "success_rate")
    assert success["min"] == 0.99 and success["max"] is None
    during = [p for p in success["points"] if p["phase"] == "during"]
    # The first window after settling is too short to judge; the next sees every request fail.
    assert [(p["value"], p["outcome"]) for p in during] == [
        (None, "inconclusive"),
        (0.0, "violated"),
    ]
    assert success["points"][0]["value"] == 1.0 and success["points"][0]["outcome"] == "held"

    html = page.read_text()
    assert_self_contained(html)
    assert html.count("<svg") == 1 and 'class="chaos-timeline"' in html
    panels = len(story["checks"])
    assert panels == 3 and html.count('class="panel"') == panels
    for phase in ("before", "during", "after"):
        assert html.count(f'class="phase {phase}"') == panels
    assert html.count('class="injection"') == 1 and html.count('class="removal"') == 1
    assert 'class="bound min"' in html and 'class="bound max"' in html
    for outcome in ("violated", "held", "inconclusive"):
        assert f'class="check {outcome}"' in html
    assert 'class="badge outcome"' in html and ">violated</span>" in html
    assert "during the faults: success_rate &gt;= 0.99 but was 0" in html
    assert "error (status=503) on 100% of requests, ttl 60s" in html
    screenshot(tmp_path, page)


def test_a_held_chaos_run_says_so(tmp_path: Path) -> None:
    journal = chaos_journal(tmp_path, fallback_works=True)
    page = tmp_path / "chaos.html"
    code, output = report(str(journal), "--html", str(page), "-o", "text")
    assert code == 0, output
    assert "chaos primary-503: held, 1 fault(s)" in output
    html = page.read_text()
    assert ">held</span>" in html and 'class="check violated"' not in html
    assert "the steady state held before, during and after" in html


def gate_result(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """A worse canary (60% right) against the baseline (90%), gated on the lab."""
    write_lab(tmp_path)
    runbook = write_runbook(tmp_path, "bad")
    result_file = tmp_path / "gate.json"
    ran = CliRunner().invoke(main, ["gate", str(runbook), "--json-file", str(result_file),
                                    "-o", "json"])  # fmt: skip
    assert ran.exit_code == 1, ran.output
    printed = json.loads(ran.output)  # stdout keeps its single JSON line
    assert json.loads(result_file.read_text()) == printed
    return result_file, printed


def test_a_gate_result_as_a_page(tmp_path: Path) -> None:
    result_file, result = gate_result(tmp_path)
    page = tmp_path / "gate.html"
    code, output = report(str(result_file), "--html", str(page), "-o", "json")
    assert code == 0, output
    shown = json.loads(output)
    assert shown["kind"] == "gate" and shown["outcome"] == "fail"
    assert shown["checks"] == result["checks"] and shown["html"] == str(page)

    html = page.read_text()
    assert_self_contained(html)
    assert html.count("<svg") == 1 and 'class="intervals"' in html
    for role in ("baseline", "canary", "difference"):
        assert html.count(f'class="interval {role}"') == 1
    assert 'class="bound min-score"' in html and 'class="bound margin"' in html
    assert ">fail</span>" in html
    for check in result["checks"]:
        assert check["name"] in html.replace("&gt;", ">")
    canary = result["eval"]["canary"]
    low, high = canary["interval"]
    assert f"{canary['score']:.1%} [{low:.1%}, {high:.1%}]" in html
    projection = result["cost_projection"]
    assert f"{projection['monthly_queries']:,} queries a month" in html
    assert f"${projection['canary']['monthly_usd']:,.2f}" in html
    assert f"${projection['baseline']['monthly_usd']:,.2f}" in html
    screenshot(tmp_path, page)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, ": no such file; expected a run id, a chaos journal"),
        ("not json {", ":1: not JSON: Expecting value (column 1); expected a run id"),
        ('{"flags": {}, "segments": {}}', ": JSON, but neither a chaos journal (keys checks,"),
        ("[1, 2]", ": JSON, but neither a chaos journal"),
    ],
)
def test_a_bad_source_is_exit_2_naming_the_file(
    tmp_path: Path, content: str | None, message: str
) -> None:
    source = tmp_path / "source.json"
    if content is not None:
        source.write_text(content)
    code, output = report(str(source))
    assert code == 2, output
    assert f"{source}{message}" in output and "Traceback" not in output


def test_a_damaged_chaos_journal_is_exit_2(tmp_path: Path) -> None:
    journal = chaos_journal(tmp_path, fallback_works=True)
    data = json.loads(journal.read_text())
    data["scenario"]["spec"]["duration"] = "soon"
    journal.write_text(json.dumps(data))
    code, output = report(str(journal))
    assert code == 2 and f"{journal}: the journal's scenario.spec.duration:" in output


def test_a_run_not_steady_before_shows_no_fault(tmp_path: Path) -> None:
    clock, injector = FakeClock(), FakeInjector()

    def quiet(since: float, now: float) -> Observation:
        stats = VariantStats(requests=3, errors=0, fallbacks=0, latency_buckets=())
        return Observation(since, now, {"primary": stats})

    scenario = fake_scenario()
    path = tmp_path / "journal.json"
    run_scenario(
        scenario,
        injector=injector,
        metrics=ScriptedMetricsSource(quiet, clock.now),
        journal=Journal(scenario, path, clock=clock.now),
        clock=clock,
    )
    page = tmp_path / "chaos.html"
    code, output = report(str(path), "--html", str(page), "-o", "json")
    assert code == 0, output
    story = json.loads(output)
    assert story["outcome"] == "not_steady" and story["faults"] == []
    assert [p["phase"] for p in story["phases"]] == ["before"]
    html = page.read_text()
    assert 'class="injection"' not in html and 'class="phase during"' not in html
    assert "nothing is injected unless the steady state holds first" in html
    assert "3 requests in the window, fewer than 100" in html


def test_a_journal_left_by_a_killed_run_reads_as_running(tmp_path: Path) -> None:
    """The file as SIGKILL would leave it mid-fault: copied while the runner was in `during`."""
    clock, injector = FakeClock(), FakeInjector()
    scenario = fake_scenario()
    path, killed = tmp_path / "journal.json", tmp_path / "killed.json"
    clock.call_at(clock.now() + 22, lambda: shutil.copy(path, killed))

    def traffic(since: float, now: float) -> Observation:
        n = 10 * (now - since)
        stats = VariantStats(requests=n, errors=0, fallbacks=n, latency_buckets=((0.5, n),))
        return Observation(since, now, {"primary": stats})

    run_scenario(
        scenario,
        injector=injector,
        metrics=ScriptedMetricsSource(traffic, clock.now),
        journal=Journal(scenario, path, clock=clock.now),
        clock=clock,
    )
    page = tmp_path / "killed.html"
    code, output = report(str(killed), "--html", str(page), "-o", "json")
    assert code == 0, output
    story = json.loads(output)
    assert story["status"] == "running" and story["outcome"] is None
    assert [p["phase"] for p in story["phases"]] == ["before", "during"]
    assert story["faults"][0]["removed"] is None and story["faults"][0]["removed_at"] is None
    html = page.read_text()
    assert ">running</span>" in html and "never attempted: ended by its TTL" in html
    assert "the journal never finished: the run was killed" in html
    assert 'class="injection"' in html and 'class="removal"' not in html
