"""A chaos run (or drill) as a self-contained page: the hypothesis checks over time against their
bounds with the before/during/after phases shaded and the injection and removal marked, the
faults with their TTLs, every judgement, and the outcome with its reason.
"""

from __future__ import annotations

from html import escape

from canaryctl.report.chaos import ChaosStory, CheckSeries
from canaryctl.report.draw import (
    format_seconds,
    nice_max,
    panel_frame,
    svg_open,
    time_axis,
    vertical,
)
from canaryctl.report.page import badge, facts, num, page, when

__all__ = ["chaos_html", "chaos_svg"]

WIDTH, LEFT, RIGHT, TOP, PANEL, GAP, BOTTOM = 960, 78, 24, 40, 120, 46, 40
_PHASE_FILL = {"before": "#e3f2fd", "during": "#ffebee", "after": "#e8f5e9"}
_OUTCOME_COLOUR = {"held": "#2e7d32", "violated": "#c62828", "inconclusive": "#f9a825"}


def _is_latency(metric: str) -> bool:
    return metric.startswith("latency_")


def _label(metric: str, value: float) -> str:
    return f"{value:.3g}s" if _is_latency(metric) else f"{value * 100:.4g}%"


def _y_range(series: CheckSeries) -> tuple[float, float]:
    """Latency from zero; a rate zoomed on its values and bounds (99% vs 100% must show)."""
    values = [p.value for p in series.points if p.value is not None]
    values += [b for b in (series.min, series.max) if b is not None]
    if _is_latency(series.metric):
        return 0.0, nice_max(max(values) * 1.15)
    low, high = min(values), max(values)
    pad = max((high - low) * 0.15, 0.005)
    return max(0.0, low - pad), min(1.0, high + pad)


def chaos_svg(story: ChaosStory) -> str:
    panels = story.series
    height = TOP + len(panels) * PANEL + (len(panels) - 1) * GAP + BOTTOM
    span = max(story.duration, 1e-9)
    right = WIDTH - RIGHT
    bottom = TOP + len(panels) * PANEL + (len(panels) - 1) * GAP

    def x(t: float) -> float:
        return LEFT + (right - LEFT) * max(0.0, min(t, span)) / span

    out = [svg_open("chaos-timeline", WIDTH, height, "hypothesis checks over the chaos run")]
    for index, series in enumerate(panels):
        top = TOP + index * (PANEL + GAP)
        low, high = _y_range(series)

        def y(v: float, top: float = top, low: float = low, high: float = high) -> float:
            return top + PANEL - PANEL * (min(max(v, low), high) - low) / ((high - low) or 1.0)

        ticks = [(y(v), _label(series.metric, v)) for v in (low, (low + high) / 2, high)]
        out.append(panel_frame(series.check, left=LEFT, right=right, top=top, height=PANEL,
                               ticks=ticks))  # fmt: skip
        for phase, start, end in story.phases:
            out.append(
                f'<rect class="phase {phase}" x="{x(start):.1f}" y="{top}"'
                f' width="{max(x(end) - x(start), 0):.1f}" height="{PANEL}"'
                f' fill="{_PHASE_FILL[phase]}" opacity="0.8"><title>{phase}</title></rect>'
            )
        for name, bound in (("min", series.min), ("max", series.max)):
            if bound is None:
                continue
            out.append(
                f'<line class="bound {name}" x1="{LEFT}" x2="{right}" y1="{y(bound):.1f}"'
                f' y2="{y(bound):.1f}" stroke="#c62828" stroke-dasharray="6 3"/>'
                f'<text x="{right - 4}" y="{y(bound) - 4:.1f}" text-anchor="end" fill="#c62828">'
                f"{name} {escape(_label(series.metric, bound))}</text>"
            )
        measured = [p for p in series.points if p.value is not None]
        if len(measured) > 1:
            coords = " ".join(f"{x(p.at):.1f},{y(p.value or 0.0):.1f}" for p in measured)
            out.append(
                f'<polyline class="series" points="{coords}" fill="none" stroke="#1565c0"'
                ' stroke-width="2"/>'
            )
        for p in series.points:
            colour = _OUTCOME_COLOUR.get(p.outcome, "#888")
            shown = "no value" if p.value is None else _label(series.metric, p.value)
            cy = top + PANEL if p.value is None else y(p.value)
            fill = "none" if p.value is None else colour
            out.append(
                f'<circle class="check {escape(p.outcome)}" cx="{x(p.at):.1f}" cy="{cy:.1f}"'
                f' r="4" fill="{fill}" stroke="{colour}"><title>{p.phase} at'
                f" {format_seconds(p.at)}: {escape(shown)}, {escape(p.outcome)}</title></circle>"
            )
        if not series.points:
            out.append(
                f'<text x="{(LEFT + right) / 2}" y="{top + PANEL / 2}" text-anchor="middle"'
                ' fill="#888">not judged in this run</text>'
            )
        out.append("</g>")
    for fault in story.faults:
        injected = f"injected {fault.describe}"
        out.append(vertical(x(fault.injected_at), TOP, bottom, css_class="injection",
                            colour="#c62828", width=2, title=injected))  # fmt: skip
        if fault.removed_at is not None:
            removed = f"removed {fault.id}"
            out.append(vertical(x(fault.removed_at), TOP, bottom, css_class="removal",
                                colour="#2e7d32", width=2, title=removed))  # fmt: skip
    if story.faults:
        first = story.faults[0]
        out.append(
            f'<text class="title" x="{x(first.injected_at) + 3:.1f}" y="{TOP - 24}"'
            ' fill="#c62828">inject</text>'
        )
        removals = [f.removed_at for f in story.faults if f.removed_at is not None]
        if removals:
            out.append(
                f'<text class="title" x="{x(max(removals)) + 3:.1f}" y="{TOP - 24}"'
                ' fill="#2e7d32">remove</text>'
            )
    out.append(time_axis(x, span, bottom + 18))
    out.append("</svg>")
    return "".join(out)


def _removal(removed: bool | None) -> str:
    if removed is None:
        return "never attempted: ended by its TTL"
    return "removed" if removed else "removal failed: ended by its TTL"


def chaos_html(story: ChaosStory, target: str = "") -> str:
    s = story
    outcome = s.outcome or s.status
    parts = [
        f"<h1>Chaos run {escape(s.name)}</h1>",
        f"<p>{badge(outcome)} {escape(target)}</p>",
        facts(
            [
                ("started", when(s.started_at)),
                ("ended", f"{when(s.ended_at)} ({format_seconds(s.duration)})"),
                ("exit code", "—" if s.exit_code is None else str(s.exit_code)),
                ("outcome", escape(s.reason) or "the journal never finished: the run was killed"),
            ]
        ),
        "<h2>Hypothesis checks</h2>",
        '<p>Shaded: <span style="background:#e3f2fd">before</span> '
        '<span style="background:#ffebee">during the faults</span> '
        '<span style="background:#e8f5e9">after recovery</span>; red line: injection, '
        "green line: removal; dashed red: the check's bound.</p>",
        chaos_svg(s),
        "<h2>Faults injected</h2>",
        "<table><tr><th>fault</th><th>id</th><th>TTL</th><th>injected at</th>"
        "<th>removed at</th><th>removal</th></tr>",
    ]
    for f in s.faults:
        parts.append(
            f"<tr><td>{escape(f.describe)}</td><td><code>{escape(f.id or '—')}</code></td>"
            f'<td class="num">{format_seconds(f.ttl)}</td>'
            f'<td class="num">{format_seconds(f.injected_at)}</td>'
            f'<td class="num">{"—" if f.removed_at is None else format_seconds(f.removed_at)}'
            f"</td><td>{escape(_removal(f.removed))}</td></tr>"
        )
    parts.append("</table>")
    if not s.faults:
        parts.append("<p>None: nothing is injected unless the steady state holds first.</p>")
    names = [series.check for series in s.series]
    parts += [
        "<h2>Every judgement</h2>",
        "<table><tr><th>at</th><th>phase</th><th>requests</th>"
        + "".join(f"<th>{escape(n)}</th>" for n in names)
        + "<th>verdict</th><th>why</th></tr>",
    ]
    for record in s.judgements:
        values = {c["check"]: c for c in record["checks"]}
        cells = "".join(
            f'<td class="num {escape(values[n]["outcome"])}">{num(values[n]["value"])}</td>'
            if n in values
            else "<td></td>"
            for n in names
        )
        parts.append(
            f'<tr><td class="num">{format_seconds(record["at"])}</td>'
            f'<td>{escape(record["phase"])}</td><td class="num">{record["requests"]:g}</td>'
            f'{cells}<td class="{escape(record["outcome"])}">{escape(record["outcome"])}</td>'
            f"<td>{escape(record['reason'])}</td></tr>"
        )
    parts.append("</table>")
    return page(f"canaryctl chaos run {s.name}", parts)
