"""`canaryctl report RUN_ID --html FILE`: the page is self-contained, holds the chart, and
renders in headless Chromium (the screenshot is kept as a test artifact in the tmp dir).

Without chromium this test skips locally and FAILS in CI (env CI set), where it must be installed.
"""

from __future__ import annotations

import json
import re
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from binaries import require_binary
from click.testing import CliRunner

from canaryctl.cli import main
from canaryctl.controller import StateStore, run_rollout
from tests.rollout_world import World


def rolled_back_run(tmp_path: Path) -> World:
    """10% holds for three analyses; at 50% the canary's errors and latency climb."""
    world = World(tmp_path)

    def degrade() -> None:
        high = world.canary() >= 50
        world.canary_error_rate = 0.05 if high else 0.004
        world.canary_latency = 1.5 if high else 0.8

    world.on_observe = degrade
    result = run_rollout(
        world.rollout,
        state_path=world.state,
        clock=world.clock,
        flags=world.flags,
        metrics=world.metrics,
    )
    assert result.outcome == "rolled_back"
    return world


def report(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["report", *args])
    return result.exit_code, result.output


def test_report_json_tells_the_runs_story(tmp_path: Path) -> None:
    world = rolled_back_run(tmp_path)
    code, output = report("1", "--state", str(world.state), "-o", "json")
    assert code == 0, output
    story = json.loads(output)
    assert story["outcome"] == "rolled_back" and story["html"] is None
    weights = [w for _, w in story["weight"]]
    assert weights[0] == 0 and 10 in weights and 50 in weights and weights[-1] == 0
    canary_errors = [v for _, v in story["metrics"]["error_rate"]["canary"]]
    assert canary_errors[-1] == pytest.approx(0.05) and canary_errors[0] == pytest.approx(0.004)
    assert [e["kind"] for e in story["endings"]] == ["rolling_back", "rolled_back"]
    assert [a["outcome"] for a in story["analyses"]][-1] == "fail"
    assert "error_rate = 0.05 is above the maximum 0.02" in story["reason"]


def test_report_of_an_unknown_run_is_exit_2(tmp_path: Path) -> None:
    world = rolled_back_run(tmp_path)
    code, output = report("7", "--state", str(world.state))
    assert code == 2 and f"no run 7 in {world.state}" in output


def png_colours(path: Path) -> tuple[int, int, int]:
    """(width, height, distinct pixel values) of an 8-bit RGB/RGBA PNG, decoded by hand."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour_type = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and colour_type in (2, 6), (depth, colour_type)
    bpp = 3 if colour_type == 2 else 4
    raw, stride = zlib.decompress(idat), width * bpp
    previous, colours = bytearray(stride), set()
    for row in range(height):
        kind, line = (
            raw[row * (stride + 1)],
            bytearray(raw[row * (stride + 1) + 1 : (row + 1) * (stride + 1)]),
        )
        for i in range(stride):
            left = line[i - bpp] if i >= bpp else 0
            up, corner = previous[i], previous[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                pred = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[i] = (line[i] + pred) & 0xFF
        colours.update(bytes(line[i : i + bpp]) for i in range(0, stride, bpp * 7))
        previous = line
    return width, height, len(colours)


def chromium() -> str:
    return require_binary("chromium", "chromium-browser", package="chromium")


def test_html_report_is_self_contained_and_renders_in_chromium(tmp_path: Path) -> None:
    world = rolled_back_run(tmp_path)
    page = tmp_path / "report.html"
    code, output = report("1", "--state", str(world.state), "--html", str(page), "-o", "text")
    assert code == 0, output
    html = page.read_text()

    # The chart is there, with what it must show.
    assert html.count("<svg") == 1 and "</svg>" in html
    assert 'class="series weight"' in html and 'class="series canary"' in html
    with StateStore(world.state) as store:
        steps = len(store.events(1, "step_started"))
    assert html.count('class="step-boundary"') == steps >= 3
    assert 'class="ending rolled_back"' in html and 'class="ending rolling_back"' in html
    assert html.count('class="analysis fail"') == 2  # error rate and p95 panels, last analysis
    assert "error_rate = 0.05 is above the maximum 0.02" in html
    # Nothing to fetch: no script, stylesheet link, image, font or remote URL.
    assert not re.search(r"<script|<link|<img|\bsrc=|\bhref=|url\(|@import", html)
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", html)

    screenshot(tmp_path, page)


def screenshot(tmp_path: Path, page: Path) -> None:
    """Render `page` in headless Chromium beside it (PAGE.png, kept as the test's artifact) and
    check the picture is not blank."""
    shot = page.with_suffix(".png")
    done = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--window-size=1100,1400", f"--screenshot={shot}", page.as_uri()],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert shot.exists(), done.stderr[-2000:]
    width, height, colours = png_colours(shot)
    assert (width, height) == (1100, 1400)
    assert colours > 20, f"the screenshot looks blank ({colours} colours): {shot}"


def rendered(tmp_path: Path, page: Path) -> str:
    """The page's DOM as headless Chromium built it (--dump-dom): what a browser draws."""
    done = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert "<svg" in done.stdout, done.stderr[-2000:]
    return done.stdout


def test_a_promoted_run_is_marked_promoted(tmp_path: Path) -> None:
    world = World(tmp_path)
    result = run_rollout(
        world.rollout,
        state_path=world.state,
        clock=world.clock,
        flags=world.flags,
        metrics=world.metrics,
    )
    assert result.outcome == "promoted"
    page = tmp_path / "report.html"
    code, output = report("1", "--state", str(world.state), "--html", str(page), "-o", "json")
    assert code == 0, output
    story = json.loads(output)
    assert story["endings"][-1]["kind"] == "promoted" and story["weight"][-1][1] == 100
    html = page.read_text()
    assert 'class="ending promoted"' in html and "rolled_back" not in html
    assert "every step held" in html


def test_the_baseline_is_drawn_beside_the_canary_under_absolute_slos(tmp_path: Path) -> None:
    # The runbook's SLOs are absolute, so no check carries a baseline value: the report measures
    # the baseline from the counts each analysis journaled (0 errors; every request under 0.5 s,
    # so Prometheus' interpolation puts its p95 at 0.95 of the first bucket, 0.475 s).
    world = rolled_back_run(tmp_path)
    code, output = report("1", "--state", str(world.state), "-o", "json")
    assert code == 0, output
    story = json.loads(output)
    analyses = len(story["analyses"])
    errors = story["metrics"]["error_rate"]["baseline"]
    p95 = story["metrics"]["latency_p95_seconds"]["baseline"]
    assert len(errors) == len(p95) == analyses  # the baseline served at every weight here
    assert {v for _, v in errors} == {0.0}
    assert [v for _, v in p95] == pytest.approx([0.95 * 0.5] * analyses)

    page = tmp_path / "report.html"
    assert report("1", "--state", str(world.state), "--html", str(page))[0] == 0
    html = page.read_text()
    dom = rendered(tmp_path, page)  # what Chromium draws: both roles in both panels
    assert dom.count('class="series baseline"') == 2  # the error-rate and p95 panels
    assert dom.count('class="series canary"') == 2
    assert dom.count('class="series weight"') == 1
    # The legend ends at the plot's right edge, so a long model name cannot run off it.
    assert html.count('class="legend" x="936" y=') == 2 and 'text-anchor="end"' in html


def test_step_labels_read_as_weights_and_holds() -> None:
    from canaryctl.report.svg import step_label

    assert step_label("set_weight 5%") == "5%"
    assert step_label("set_weight 12.5%") == "12.5%"
    assert step_label("pause 300s") == "5m"
    assert step_label("pause 90s") == "1m30s"
    assert step_label("pause until approved") == "approval"
    assert step_label("hold for one analysis") == "1 analysis"
    assert step_label("shadow 20% until decided (max 600s)") == "shadow 20%"
    assert step_label("chaos primary-down.yaml") == "chaos primary-down.yaml"


def test_the_chart_labels_each_step_by_what_it_does(tmp_path: Path) -> None:
    world = rolled_back_run(tmp_path)
    page = tmp_path / "report.html"
    assert report("1", "--state", str(world.state), "--html", str(page))[0] == 0
    labels = re.findall(r'class="step-label"[^>]*><title>([^<]*)</title>', page.read_text())
    # Each set_weight and the pause after it begin at the same instant: one label.
    assert labels[:2] == ["10% · 30s", "50% · 30s"]


def test_a_shadow_step_is_marked_where_the_live_weight_stays_zero() -> None:
    from canaryctl.controller.store import EventRecord, RunRecord
    from canaryctl.flags.base import FlagSnapshot
    from canaryctl.report import chart_svg, timeline

    record = RunRecord(id=1, name="r", runbook={"spec": {"flag": {"baseline": "old",
                       "canary": "new"}}}, host="h", pid=1, version="t", started_at=100.0,
                       updated_at=400.0, ended_at=400.0, phase="promoted", outcome="promoted",
                       reason="", exit_code=0, prior_flag=FlagSnapshot("k", 1, ""),
                       flag_version=2, state={}, final_split=None)  # fmt: skip

    def step(event_id: int, at: float, describe: str) -> EventRecord:
        return EventRecord(event_id, 1, at, "step_started", {"describe": describe}, None, None)

    events = [
        step(1, 100.0, "shadow 20% until decided (max 600s)"),
        step(2, 250.0, "set_weight 50%"),
        step(3, 250.0, "pause 60s"),
    ]
    story = timeline(record, events)
    assert story.shadows == ((0.0, 150.0),)
    svg = chart_svg(story)
    assert svg.count('class="shadow-step"') == 3  # one band per panel
    assert "shadow (mirrored)" in svg


def test_an_unbounded_effect_is_drawn_faint_not_as_a_full_width_bar() -> None:
    from canaryctl.report.experiment_page import _effects_svg

    metric = {"name": "quality_score", "margin": 0.02, "higher_is_better": True}
    rows = [
        {"variation": "mini", "tier": None, "estimate": 0.01, "low": -0.01, "high": 0.03,
         "intervals": 40},
        {"variation": "mini", "tier": "free", "estimate": 0.2, "low": None, "high": None,
         "intervals": 6},
    ]  # fmt: skip
    svg = _effects_svg(metric, rows)
    bounded, unbounded = svg.split('<g class="effect')[1:]
    assert 'stroke-width="3"' in bounded and 'stroke-width="3"' not in unbounded
    assert 'stroke-dasharray="2 4"' in unbounded and 'fill="#fff"' in unbounded
    assert "unbounded yet: 6 intervals" in unbounded


def test_the_backtest_page_says_what_each_colour_means() -> None:
    from canaryctl.report.backtest_page import COLOURS, backtest_svg

    data = {
        "starts": [
            {"start": 0.0, "decided_at": 600.0, "outcome": "promoted", "after_seconds": 600.0,
             "reason": ""},
            {"start": 1200.0, "decided_at": None, "outcome": "undecided", "after_seconds": None,
             "reason": "the recording ends first"},
        ],
        "incident": {"from": 300.0, "to": 900.0},
    }  # fmt: skip
    svg = backtest_svg(data, 0.0, 1800.0)
    legend = svg.split('<g class="legend">')[1]
    for label, colour in (
        ("promoted", COLOURS["promoted"]),
        ("undecided", COLOURS["undecided"]),
        ("rolled back", COLOURS["rolled_back"]),
        ("incident", "#ffcdd2"),
    ):
        assert f'fill="{colour}"' in legend and f">{label}</text>" in legend
