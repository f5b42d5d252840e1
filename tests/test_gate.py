"""`canaryctl gate` end to end on the lab: real HTTP to simulated providers on loopback.

The lab's models answer the built-in arithmetic benchmark right with the probability their
quality profile says, so a good canary passes, a worse one fails, and every output format
(exit code, JUnit XML, Markdown, JSON) carries the same verdict.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from loopback import free_port

from canaryctl.analysis import Outcome
from canaryctl.analysis.verdict import Check
from canaryctl.cli import main
from canaryctl.flags import MemoryFlagStore
from canaryctl.gate import run_gate
from canaryctl.gate.result import GateReport
from canaryctl.metrics import Observation, ScriptedMetricsSource, VariantStats
from canaryctl.report.gate_page import gate_html
from canaryctl.runbook import Rollout, load_document

FAST = {"median": "5ms", "p95": "20ms"}


def write_lab(tmp_path: Path) -> None:
    (tmp_path / "flags.json").write_text(json.dumps({"flags": {}, "segments": {}}))
    providers = [
        {"name": "old", "latency": FAST, "quality": 0.9},
        {"name": "good", "latency": FAST, "quality": 0.95},
        {"name": "bad", "latency": FAST, "quality": 0.6},
    ]
    models: list[dict[str, Any]] = [
        {
            "name": p["name"],
            "base_url": f"lab://{p['name']}",
            "price": {"prompt_per_1k": price, "completion_per_1k": price},
        }
        for p, price in zip(providers, (0.01, 0.001, 0.0005), strict=True)
    ]
    providers.append({"name": "local", "latency": FAST, "quality": 0.95})
    models.append({"name": "local", "base_url": "lab://local"})  # no price: cost unknown
    lab = {
        "apiVersion": "canaryctl/v1",
        "kind": "Lab",
        "metadata": {"name": "gate-lab"},
        "spec": {
            "seed": 7,
            "providers": providers,
            "gateway": {
                "listen": "127.0.0.1:0",
                "flags": {"provider": "file", "path": "flags.json"},
                "routes": [{"name": "bot", "flag": "model", "default_model": "old"}],
                "models": models,
            },
        },
    }
    (tmp_path / "lab.yaml").write_text(yaml.safe_dump(lab))


def write_runbook(tmp_path: Path, canary: str, /, **gate_eval: object) -> Path:
    eval_spec = {
        "builtin": "arithmetic",
        "lab": "lab.yaml",
        "baseline": {"base_url": "lab://old"},
        "canary": {"base_url": f"lab://{canary}"},
        "min_score": 0.8,
        "margin": 0.05,
        "confidence": 0.95,
        "concurrency": 16,
        "timeout": "5s",
        **gate_eval,
    }
    runbook = {
        "apiVersion": "canaryctl/v1",
        "kind": "Rollout",
        "metadata": {"name": f"to-{canary}"},
        "spec": {
            "flag": {
                "provider": "file",
                "path": "flags.json",
                "key": "model",
                "baseline": "old",
                "canary": canary,
            },
            "metrics": {"provider": "scrape", "targets": ["http://127.0.0.1:9/metrics"]},
            "slos": [{"metric": "error_rate", "max": 0.02}],
            "steps": [{"set_weight": 100}],
            "gate": {"eval": eval_spec, "cost": {"monthly_queries": 10_000_000}},
        },
    }
    path = tmp_path / f"rollout-{canary}.yaml"
    path.write_text(yaml.safe_dump(runbook))
    return path


def gate(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["gate", *args])
    return result.exit_code, result.output


def junit_cases(path: Path) -> dict[str, ET.Element]:
    root = ET.parse(path).getroot()
    suite = root.find("testsuite")
    assert suite is not None
    return {case.get("name", ""): case for case in suite.iter("testcase")}


def markdown_rows(path: Path) -> dict[str, list[str]]:
    """The first table's rows, keyed by the check column."""
    rows: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if line.startswith("| eval:") or line.startswith("| live:") or line.startswith("| cost:"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def test_gate_passes_a_good_canary(tmp_path: Path) -> None:
    write_lab(tmp_path)
    runbook = write_runbook(tmp_path, "good")
    junit, summary = tmp_path / "gate.xml", tmp_path / "summary.md"
    code, output = gate(
        str(runbook), "--junit", str(junit), "--summary", str(summary), "-o", "json"
    )
    assert code == 0, output
    report = json.loads(output)
    assert report["outcome"] == "pass" and report["exit_code"] == 0
    assert [c["outcome"] for c in report["checks"]] == ["pass", "pass"]
    canary, baseline = report["eval"]["canary"], report["eval"]["baseline"]
    assert canary["items"] == baseline["items"] == 400
    assert canary["score"] > 0.9 and 0.85 < baseline["score"] < 0.95
    assert canary["latency_p95_seconds"] is not None and canary["cost_usd"] > 0
    projection = report["cost_projection"]
    assert projection["canary"]["source"] == "eval"
    assert projection["canary"]["monthly_usd"] < projection["baseline"]["monthly_usd"]

    cases = junit_cases(junit)
    assert set(cases) == {"eval score >= 0.8", "eval score >= baseline - 0.05"}
    assert all(case.find("failure") is None for case in cases.values())
    assert ET.parse(junit).getroot().find("testsuite").get("failures") == "0"  # type: ignore[union-attr]

    text = summary.read_text()
    assert text.startswith("## canaryctl gate `to-good`: ✅ pass")
    rows = markdown_rows(summary)
    assert rows["eval: eval score >= 0.8"][-2] == "✅ pass"
    assert rows["eval: eval score >= 0.8"][0] == f"{canary['score']:.4g}"
    assert "### Cost at 10,000,000 queries a month" in text


def test_a_canary_with_no_price_never_passes_a_monthly_cost_bound(tmp_path: Path) -> None:
    """The eval's cost of a model the lab gateway gives no price is unknown, not $0: the cost
    bound is inconclusive, so the gate does not pass."""
    write_lab(tmp_path)
    runbook = write_runbook(tmp_path, "local")
    document = yaml.safe_load(runbook.read_text())
    document["spec"]["gate"]["cost"]["max_monthly_usd"] = 1_000_000
    runbook.write_text(yaml.safe_dump(document))
    summary = tmp_path / "summary.md"
    code, output = gate(str(runbook), "--summary", str(summary), "-o", "json")
    report = json.loads(output)
    assert code != 0 and report["outcome"] != "pass", output
    (cost,) = [c for c in report["checks"] if c["kind"] == "cost"]
    assert cost["outcome"] == "inconclusive" and cost["canary_value"] is None
    assert report["eval"]["canary"]["cost_usd"] is None
    assert report["eval"]["baseline"]["cost_usd"] > 0 and report["eval"]["cost_usd"] is None
    assert report["cost_projection"]["canary"]["source"] == "none"
    assert "| no price |" in summary.read_text()
    assert '<td class="num">no price</td>' in gate_html(report)  # the report page
    code, output = gate(str(runbook), "-o", "text")
    assert code != 0 and "eval cost unknown (no price)" in output


def test_gate_fails_a_worse_canary(tmp_path: Path) -> None:
    write_lab(tmp_path)
    runbook = write_runbook(tmp_path, "bad")
    junit, summary = tmp_path / "gate.xml", tmp_path / "summary.md"
    code, output = gate(
        str(runbook), "--junit", str(junit), "--summary", str(summary), "-o", "text"
    )
    assert code == 1, output
    assert "gate fail (exit 1)" in output
    cases = junit_cases(junit)
    for name in ("eval score >= 0.8", "eval score >= baseline - 0.05"):
        failure = cases[name].find("failure")
        assert failure is not None and failure.get("type") == "fail"
    assert "is below 0.8" in cases["eval score >= 0.8"].find("failure").get("message", "")  # type: ignore[union-attr]
    rows = markdown_rows(summary)
    assert [row[-2] for row in rows.values()] == ["❌ fail", "❌ fail"]
    assert "❌ fail" in summary.read_text().splitlines()[0]


def test_too_few_items_is_inconclusive_and_blocks(tmp_path: Path) -> None:
    write_lab(tmp_path)
    bench = tmp_path / "five.jsonl"
    bench.write_text(
        "\n".join(
            json.dumps({"prompt": f"What is {i} + {i}?", "expected": 2 * i, "scorer": "numeric",
                        "pattern": r"=\s*(-?\d+)"})
            for i in range(1, 6)
        )
    )  # fmt: skip
    runbook = write_runbook(tmp_path, "good", builtin=None, benchmark="five.jsonl")
    junit = tmp_path / "gate.xml"
    code, output = gate(str(runbook), "--junit", str(junit), "-o", "json")
    assert code == 1, output
    report = json.loads(output)
    assert report["outcome"] == "inconclusive"
    assert all("too few items (5 < min_items 30)" in c["reason"] for c in report["checks"])
    failures = [case.find("failure") for case in junit_cases(junit).values()]
    assert [f.get("type") for f in failures if f is not None] == ["inconclusive"] * 2


def test_bad_benchmark_is_exit_2_naming_the_line(tmp_path: Path) -> None:
    write_lab(tmp_path)
    bench = tmp_path / "bad.jsonl"
    bench.write_text('{"prompt": "x", "scorer": "exact"}\n')
    runbook = write_runbook(tmp_path, "good", builtin=None, benchmark="bad.jsonl")
    code, output = gate(str(runbook), "-o", "json")
    assert code == 2
    assert f"{bench}:1: scorer exact needs expected" in output
    assert "Traceback" not in output


def test_a_runbook_without_a_gate_is_exit_2(tmp_path: Path) -> None:
    write_lab(tmp_path)
    runbook = write_runbook(tmp_path, "good")
    data = yaml.safe_load(runbook.read_text())
    del data["spec"]["gate"]
    runbook.write_text(yaml.safe_dump(data))
    code, output = gate(str(runbook))
    assert code == 2 and "spec.gate: the runbook has no gate section" in output


def test_an_unreachable_endpoint_is_exit_3(tmp_path: Path) -> None:
    write_lab(tmp_path)
    down = {"base_url": f"http://127.0.0.1:{free_port()}"}
    runbook = write_runbook(tmp_path, "good", canary=down, retries=1)
    code, output = gate(str(runbook), "-o", "json")
    assert code == 3, output
    assert "good at http://127.0.0.1:" in output and "answered none of 400 items" in output


def test_live_slos_and_live_cost_join_the_eval(tmp_path: Path) -> None:
    """With `live:` the runbook's SLOs are judged on the backend's window, for the variation
    values the flag holds (metrics are labelled with values, runbooks may use names); live
    cost wins over the eval's."""
    write_lab(tmp_path)
    runbook = write_runbook(tmp_path, "good")
    data = yaml.safe_load(runbook.read_text())
    data["spec"]["gate"]["live"] = {"window": "10m"}
    runbook.write_text(yaml.safe_dump(data))
    rollout = load_document(runbook, expect=Rollout)
    seen: list[float] = []

    def script(since: float, now: float) -> Observation:
        seen.append(now - since)
        return Observation(
            since,
            now,
            {
                "old-value": VariantStats(requests=1000, errors=5, cost_usd=5.0),
                "good-value": VariantStats(requests=1000, errors=40, cost_usd=0.5),
            },
        )

    slept: list[float] = []
    metrics = ScriptedMetricsSource(script, lambda: 1000.0 + sum(slept))
    report = run_gate(
        rollout,
        metrics=metrics,
        flags=MemoryFlagStore("model", "old-value", "good-value"),
        clock=lambda: 1000.0 + sum(slept),
        sleep=slept.append,
    )
    assert slept == [600.0] and seen == [600.0]  # scrape: sample, wait the window, sample
    live = [c for c in report.checks if c.kind == "live"]
    assert [c.check.outcome for c in live] == [Outcome.FAIL]
    assert "error_rate = 0.04 is above the maximum 0.02" in live[0].check.reason
    assert report.outcome is Outcome.FAIL and report.exit_code == 1
    assert report.projection is not None
    assert report.projection.canary_source == "live"
    assert report.projection.canary_monthly == pytest.approx(0.0005 * 10_000_000)


def live_gate(
    tmp_path: Path, slo: dict[str, Any], baseline: VariantStats, canary: VariantStats
) -> tuple[GateReport, dict[str, Check]]:
    """The gate of a runbook judging `slo` live, on one window of these counts: its report and
    its live checks by metric."""
    write_lab(tmp_path)
    runbook = write_runbook(tmp_path, "good")
    data = yaml.safe_load(runbook.read_text())
    data["spec"]["gate"]["live"] = {"window": "10m"}
    data["spec"]["slos"] = [slo]
    runbook.write_text(yaml.safe_dump(data))

    def script(since: float, now: float) -> Observation:
        return Observation(since, now, {"old-value": baseline, "good-value": canary})

    report = run_gate(
        load_document(runbook, expect=Rollout),
        metrics=ScriptedMetricsSource(script, lambda: 1000.0),
        flags=MemoryFlagStore("model", "old-value", "good-value"),
        clock=lambda: 1000.0,
        sleep=lambda _: None,
    )
    return report, {c.check.metric: c.check for c in report.checks if c.kind == "live"}


def test_a_live_canary_whose_model_failed_every_request_fails_the_gate(tmp_path: Path) -> None:
    """Rescued by its fallback every time, it shows no served error; the built-in check on the
    canary's own model fails it whatever the SLOs."""
    report, live = live_gate(
        tmp_path,
        {"metric": "served_error_rate", "max": 0.02},
        baseline=VariantStats(requests=1000, errors=5),
        canary=VariantStats(requests=1000, fallbacks=1000),
    )
    assert live["served_error_rate"].outcome is Outcome.PASS
    assert live["canary_answers"].outcome is Outcome.FAIL
    assert "model failed every one of its 1000 requests" in live["canary_answers"].reason
    assert report.outcome is Outcome.FAIL and report.exit_code == 1


def test_a_live_canary_refusing_what_the_baseline_takes_does_not_pass_the_gate(
    tmp_path: Path,
) -> None:
    """As in a rollout: refusals (400, 422) are the clients' mistakes and left out of every
    rate, but the canary refusing 60% of what the baseline takes (1% refused) fails them, and
    the gate, like the controller, counts the excess against the canary."""
    report, live = live_gate(
        tmp_path,
        {"metric": "error_rate", "max": 0.02},
        baseline=VariantStats(requests=1000, rejected=10),
        canary=VariantStats(requests=1000, rejected=600),
    )
    assert live["error_rate"].outcome is Outcome.PASS
    assert live["canary_answers"].outcome is not Outcome.PASS
    assert "590 refused beyond the baseline's share" in live["canary_answers"].reason
    assert report.outcome is not Outcome.PASS and report.exit_code != 0


@pytest.mark.e2e
@pytest.mark.parametrize(("canary", "outcome"), [("gpt-4o-mini", "pass"), ("mixtral-8x7b", "fail")])
def test_live_gate_on_the_lab_with_the_scrape_backend(
    tmp_path: Path, canary: str, outcome: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shipped lab with traffic, the canary at 50%: live SLOs judged from /metrics."""
    import functools
    import time
    from importlib import resources

    from canaryctl.flags import FileFlagStore
    from canaryctl.lab import LabStack
    from canaryctl.runbook import Lab, parse_document

    defaults = resources.files("canaryctl") / "defaults"
    flags = tmp_path / "flags.json"
    flags.write_text((defaults / "flags.json").read_text())
    store = FileFlagStore(flags, "support-bot-model", baseline="gpt-4-turbo", canary=canary)
    store.set_canary_weight(50, expect_version=store.snapshot().version, comment="test")
    lab = parse_document((defaults / "lab.yaml").read_text(), "lab.yaml", expect=Lab)
    with LabStack(lab, flags_path=flags) as stack:

        def window(seconds: float) -> None:
            """The gate's live window: its seconds, then on until the lab has answered as many
            requests of each variant as the window holds on a quiet machine (60 a second, half
            each): a loaded machine lengthens the window instead of thinning it."""
            assert stack.traffic is not None
            opened = stack.traffic.snapshot()
            time.sleep(seconds)
            wanted = 30 * seconds * 0.8
            deadline = time.monotonic() + 120  # a bound, not a pace
            while any(
                stack.traffic.snapshot().requests(v) - opened.requests(v) < wanted
                for v in ("gpt-4-turbo", canary)
            ):
                assert time.monotonic() < deadline, "the lab stopped answering"
                time.sleep(0.1)

        monkeypatch.setattr("canaryctl.gate.run_gate", functools.partial(run_gate, sleep=window))
        runbook = {
            "apiVersion": "canaryctl/v1",
            "kind": "Rollout",
            "metadata": {"name": "live"},
            "spec": {
                "flag": {"provider": "file", "path": str(flags), "key": "support-bot-model",
                         "baseline": "gpt-4-turbo", "canary": canary},
                "metrics": {"provider": "scrape", "targets": [stack.metrics_url],
                            "route": "support-bot"},
                "slos": [{"metric": "error_rate", "max": 0.03},
                         {"metric": "latency_p95_seconds", "max": 2.0}],
                "analysis": {"min_requests": 30},
                "steps": [{"set_weight": 100}],
                "gate": {"live": {"window": "4s"}, "cost": {"monthly_queries": 1_000_000}},
            },
        }  # fmt: skip
        path = tmp_path / "live.yaml"
        path.write_text(yaml.safe_dump(runbook))
        code, output = gate(str(path), "-o", "json")
    report = json.loads(output)
    assert report["outcome"] == outcome, output
    assert code == (0 if outcome == "pass" else 1)
    assert {c["kind"] for c in report["checks"]} == {"live"}
    assert all(c["canary_requests"] >= 30 for c in report["checks"])
    start, end = report["live_window"]
    assert end - start >= 4
    projection = report["cost_projection"]
    assert projection["canary"]["source"] == projection["baseline"]["source"] == "live"


def test_a_bad_gate_section_is_exit_2_with_its_path_and_line(tmp_path: Path) -> None:
    write_lab(tmp_path)
    runbook = write_runbook(tmp_path, "good", margin=2)
    code, output = gate(str(runbook))
    assert code == 2, output
    line = next(i for i, text in enumerate(runbook.read_text().splitlines(), 1) if "margin" in text)
    assert (
        f"{runbook}:{line}: spec.gate.eval.margin: Input should be less than or equal to 1"
        in output
    )
    runbook = write_runbook(tmp_path, "good", benchmark="x.jsonl")
    code, output = gate(str(runbook))
    assert code == 2, output
    assert "spec.gate.eval: give exactly one of benchmark (a JSONL file) or builtin" in output
