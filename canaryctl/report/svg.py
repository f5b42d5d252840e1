"""The report's chart as inline SVG: canary weight, error rate and p95 on one time axis. Pure.

Three stacked panels share the x axis (time since the run started). Dashed vertical lines mark
where each step began, labelled as a person reads them ("5% · 5m", "25% · approval"); a red
line marks a rollback, a green one a promotion; a shaded band marks a shadow step, where the
candidate is judged on mirrored traffic while its live weight stays 0. Analysis points are dots
coloured by their verdict; an absolute SLO bound is a dashed red horizontal line. The canary and
the baseline are drawn in every metric panel, the legend right-aligned so a long name never
runs off the chart.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

from canaryctl.report.draw import (
    format_seconds,
    nice_max,
    panel_frame,
    svg_open,
    time_axis,
    vertical,
)
from canaryctl.report.timeline import Analysis, Point, Timeline

__all__ = ["chart_svg", "step_label"]

WIDTH, LEFT, RIGHT, TOP, PANEL, GAP, BOTTOM = 960, 78, 24, 34, 150, 46, 40
_NEAR = 36.0
"""Pixels within which marker labels would collide: they share one label instead."""
_OUTCOME_COLOUR = {"pass": "#2e7d32", "fail": "#c62828", "inconclusive": "#f9a825"}
_ENDING_COLOUR = {
    "rolling_back": "#c62828",
    "rolled_back": "#c62828",
    "promoting": "#2e7d32",
    "promoted": "#2e7d32",
}


@dataclass(frozen=True)
class _Panel:
    title: str
    series: dict[str, Sequence[Point]]
    y_max: float
    label: Callable[[float], str]
    bound: float | None = None


def _absolute_bound(timeline: Timeline, metric: str) -> float | None:
    last = timeline.last_analysis
    if last is None:
        return None
    for check in last.checks:
        if check["metric"] == metric and check.get("baseline_value") is None:
            return check.get("bound")
    return None


def _panels(timeline: Timeline) -> list[_Panel]:
    panels = [_Panel("canary weight", {"weight": timeline.weight}, 100.0, lambda v: f"{v:g}%")]
    for metric, title, label in (
        ("error_rate", "error rate", lambda v: f"{v * 100:.3g}%"),
        ("latency_p95_seconds", "p95 latency", lambda v: f"{v:.3g}s"),
    ):
        series = timeline.metrics.get(metric, {})
        bound = _absolute_bound(timeline, metric)
        values = [v for points in series.values() for _, v in points]
        top = max([*values, bound or 0.0, 0.0]) * 1.15
        panels.append(_Panel(title, series, nice_max(top), label, bound))
    return panels


def chart_svg(timeline: Timeline) -> str:
    panels = _panels(timeline)
    height = TOP + len(panels) * PANEL + (len(panels) - 1) * GAP + BOTTOM
    span = max(timeline.duration, 1e-9)
    plot_right = WIDTH - RIGHT

    def x(t: float) -> float:
        return LEFT + (plot_right - LEFT) * max(0.0, min(t, span)) / span

    out = [
        svg_open("timeline", WIDTH, height, "canary weight, error rate and p95 over time"),
    ]
    analyses = timeline.analyses
    for index, panel in enumerate(panels):
        top = TOP + index * (PANEL + GAP)

        def y(value: float, top: float = top, panel: _Panel = panel) -> float:
            return top + PANEL - PANEL * max(0.0, min(value, panel.y_max)) / panel.y_max

        ticks = [(y(panel.y_max * f), panel.label(panel.y_max * f)) for f in (0.0, 0.5, 1.0)]
        out.append(
            panel_frame(
                panel.title, left=LEFT, right=plot_right, top=top, height=PANEL, ticks=ticks
            )
        )
        if panel.bound is not None:
            out.append(
                f'<line class="bound" x1="{LEFT}" x2="{plot_right}" y1="{y(panel.bound):.1f}"'
                f' y2="{y(panel.bound):.1f}" stroke="#c62828" stroke-dasharray="6 3"/>'
                f'<text x="{plot_right - 4}" y="{y(panel.bound) - 4:.1f}" text-anchor="end"'
                f' fill="#c62828">SLO {escape(panel.label(panel.bound))}</text>'
            )
        if not any(panel.series.values()):
            out.append(
                f'<text x="{(LEFT + plot_right) / 2}" y="{top + PANEL / 2}" text-anchor="middle"'
                ' fill="#888">not measured by this runbook\'s SLOs</text>'
            )
        for start, end in timeline.shadows:
            out.append(
                f'<rect class="shadow-step" x="{x(start):.1f}" y="{top}"'
                f' width="{max(x(end) - x(start), 1.0):.1f}" height="{PANEL}" fill="#7e57c2"'
                ' fill-opacity="0.08"><title>shadow step: the candidate judged on mirrored'
                " traffic, no live weight</title></rect>"
            )
            if index == 0:
                out.append(
                    f'<text class="shadow-label" x="{x(start) + 4:.1f}" y="{top + 14}"'
                    ' fill="#5e35b1">shadow (mirrored)</text>'
                )
        colours = {"weight": "#1565c0", "canary": "#ef6c00", "baseline": "#757575"}
        for role, points in panel.series.items():
            if not points:
                continue
            coords = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in points)
            dash = ' stroke-dasharray="4 3"' if role == "baseline" else ""
            out.append(
                f'<polyline class="series {role}" points="{coords}" fill="none"'
                f' stroke="{colours[role]}" stroke-width="2"{dash}/>'
            )
            if role == "canary":
                for (t, v), analysis in zip(points, _at_times(analyses, points), strict=True):
                    colour = _OUTCOME_COLOUR.get(analysis, "#888")
                    out.append(
                        f'<circle class="analysis {analysis}" cx="{x(t):.1f}" cy="{y(v):.1f}"'
                        f' r="3.5" fill="{colour}"/>'
                    )
        out.append("</g>")
        if index > 0 and any(panel.series.values()):
            out.append(
                f'<text class="legend" x="{plot_right}" y="{top - 8}" text-anchor="end">'
                f'<tspan fill="#ef6c00">━ canary {escape(_short(timeline.canary))}</tspan>'
                f'  <tspan fill="#757575">┅ baseline {escape(_short(timeline.baseline))}</tspan>'
                "</text>"
            )
    chart_bottom = TOP + len(panels) * PANEL + (len(panels) - 1) * GAP
    labelled: list[tuple[float, list[str]]] = []
    for number, step in enumerate(timeline.steps, 1):
        at = x(step.at)
        out.append(
            vertical(at, TOP, chart_bottom, css_class="step-boundary", colour="#9e9e9e",
                     dash="3 3", title=f"step {number}: {step.label}")
        )  # fmt: skip
        if labelled and at - labelled[-1][0] < _NEAR:
            labelled[-1][1].append(step_label(step.label))
        else:
            labelled.append((at, [step_label(step.label)]))
    for i, (at, labels) in enumerate(labelled):
        room = (labelled[i + 1][0] if i + 1 < len(labelled) else plot_right) - at - 4
        text = " · ".join(labels)
        fits = max(int(room / _CHAR), 1)
        shown = text if len(text) <= fits else text[: max(fits - 1, 0)] + "…"
        out.append(
            f'<text class="step-label" x="{at + 2:.1f}" y="{TOP - 22}" fill="#777">'
            f"<title>{escape(text)}</title>{escape(shown)}</text>"
        )
    endings: list[tuple[float, str, str]] = []
    for ending in timeline.endings:
        at = x(ending.at)
        colour = _ENDING_COLOUR.get(ending.kind, "#6a1b9a")
        out.append(
            vertical(at, TOP, chart_bottom, css_class=f"ending {ending.kind}", colour=colour,
                     width=2)
        )  # fmt: skip
        if endings and at - endings[-1][0] < _NEAR:
            endings[-1] = (at, ending.label, colour)  # the later state says more
        else:
            endings.append((at, ending.label, colour))
    for at, label, colour in endings:
        out.append(
            f'<text class="title" x="{at - 4:.1f}" y="{TOP + 14}" text-anchor="end"'
            f' fill="{colour}">{escape(label)}</text>'
        )
    out.append(time_axis(x, span, chart_bottom + 18))
    out.append("</svg>")
    return "".join(out)


_CHAR = 6.2
"""Pixels per character of the 11px sans-serif labels, to cut a label before it overlaps."""
_NAME_CHARS = 40
"""A model name longer than this is cut in the legend (the page's header shows it whole)."""


def _short(name: str) -> str:
    return name if len(name) <= _NAME_CHARS else name[: _NAME_CHARS - 1] + "…"


_STEP_WORDS = (
    (re.compile(r"set_weight ([\d.]+)%"), lambda m: f"{m[1]}%"),
    (re.compile(r"pause ([\d.]+)s"), lambda m: format_seconds(float(m[1]))),
    (re.compile(r"pause until approved"), lambda m: "approval"),
    (re.compile(r"hold for one analysis"), lambda m: "1 analysis"),
    (re.compile(r"shadow ([\d.]+)%.*"), lambda m: f"shadow {m[1]}%"),
)


def step_label(describe: str) -> str:
    """A step as a person reads it on the chart: `set_weight 5%` → 5%, `pause 300s` → 5m,
    `pause until approved` → approval; anything else as journaled."""
    for pattern, word in _STEP_WORDS:
        match = pattern.fullmatch(describe)
        if match:
            return word(match)
    return describe


def _at_times(analyses: Sequence[Analysis], points: Sequence[Point]) -> list[str]:
    """Each point's analysis outcome (points are drawn from analyses at the same instants)."""
    by_time = {a.at: a.outcome for a in analyses}
    return [by_time.get(t, "") for t, _ in points]
