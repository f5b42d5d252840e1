"""A backtest over Prometheus' history as a page: every replayed rollout on one timeline, the
rollbacks marked where they happened, the incident shaded, and the figures that sum it up.
Pure: the sweep's JSON in, one self-contained HTML page out."""

from __future__ import annotations

from html import escape
from typing import Any

from canaryctl.report.draw import format_seconds, panel_frame, svg_open, vertical
from canaryctl.report.page import facts, page, when

__all__ = ["backtest_html", "backtest_svg"]

WIDTH, LEFT, RIGHT = 960.0, 70.0, 940.0
LANES, LANE = 3, 18.0
TOP = 30.0
COLOURS = {"promoted": "#2e7d32", "rolled_back": "#c62828", "undecided": "#9e9e9e"}


def backtest_svg(data: dict[str, Any], begin: float, end: float) -> str:
    """Rollouts as bars in `LANES` lanes (the n-th start in lane n mod LANES, so overlapping
    rollouts stay apart), from their start to their decision."""
    span = max(end - begin, 1.0)

    def x(at: float) -> float:
        return LEFT + (RIGHT - LEFT) * (at - begin) / span

    height = LANES * LANE + 10
    bottom = TOP + height
    out = [svg_open("backtest", WIDTH, bottom + 48, "rollouts replayed over the history")]
    out.append(panel_frame("rollouts replayed", left=LEFT, right=RIGHT, top=TOP, height=height,
                           ticks=[]))  # fmt: skip
    incident = data.get("incident")
    if incident is not None:
        left, right = x(incident["from"]), x(incident["to"])
        out.append(
            f'<rect class="incident" x="{left:.1f}" y="{TOP}" width="{max(right - left, 2):.1f}"'
            f' height="{height}" fill="#ffcdd2" opacity="0.7"><title>incident '
            f"{escape(when(incident['from']))} to {escape(when(incident['to']))}</title></rect>"
        )
    for index, row in enumerate(data["starts"]):
        finished = row["decided_at"] if row["decided_at"] is not None else row["start"]
        lane = index % LANES
        y = TOP + 5 + lane * LANE
        left, right = x(row["start"]), x(max(finished, row["start"]))
        title = f"{when(row['start'])}: {row['outcome'].replace('_', ' ')}"
        if row["after_seconds"] is not None:
            title += f" after {format_seconds(row['after_seconds'])}"
        if row["reason"]:
            title += f" ({row['reason']})"
        out.append(
            f'<rect class="rollout {escape(row["outcome"])}" x="{left:.1f}" y="{y:.1f}"'
            f' width="{max(right - left, 1.5):.1f}" height="{LANE - 6}"'
            f' fill="{COLOURS.get(row["outcome"], "#616161")}"><title>{escape(title)}</title>'
            "</rect>"
        )
        if row["outcome"] == "rolled_back":
            out.append(vertical(right, TOP, bottom, css_class="rollback", colour="#c62828",
                                dash="3,2", title=title))  # fmt: skip
    for fraction, anchor in ((0.0, "start"), (0.25, "middle"), (0.5, "middle"),
                             (0.75, "middle"), (1.0, "end")):  # fmt: skip
        at = begin + span * fraction
        out.append(
            f'<text x="{x(at):.1f}" y="{bottom + 16}" text-anchor="{anchor}">'
            f"{escape(when(at)[5:16])}</text>"
        )
    out.append(_legend(bottom + 34, incident is not None))
    out.append("</svg>")
    return "".join(out)


_LEGEND = (
    ("promoted", "promoted", "bar from start to promotion"),
    ("rolled_back", "rolled back", "bar to the rollback, red dashed line at it"),
    ("undecided", "undecided", "grey: the history ended before a decision"),
)


def _legend(y: float, incident: bool) -> str:
    """What each colour means: a one-pixel grey tick is an undecided rollout, not a glitch."""
    out, at = ['<g class="legend">'], LEFT
    entries = [(COLOURS[key], label, title) for key, label, title in _LEGEND]
    if incident:
        entries.append(("#ffcdd2", "incident", "the incident window given to the backtest"))
    for colour, label, title in entries:
        out.append(
            f'<rect x="{at:.1f}" y="{y - 9:.1f}" width="12" height="10" fill="{colour}">'
            f"<title>{escape(title)}</title></rect>"
            f'<text x="{at + 16:.1f}" y="{y:.1f}">{escape(label)}</text>'
        )
        at += 16 + 7 * len(label) + 22
    out.append("</g>")
    return "".join(out)


def _summary(data: dict[str, Any]) -> list[tuple[str, str]]:
    counts = data["outcomes"]
    rows = [
        ("rollouts", str(data["rollouts"])),
        ("decisions", ", ".join(f"{n} {o.replace('_', ' ')}" for o, n in counts.items())),
    ]
    false = data.get("false_rollbacks")
    if false is not None and false["rate"] is not None:
        rows.append(
            (
                "false rollbacks (A/A)",
                f"{false['rolled_back']} of {false['decided']} = {false['rate']:.1%} "
                f"(95% Clopper-Pearson {false['lower']:.1%} to {false['upper']:.1%})",
            )
        )
    incident = data.get("incident")
    if incident is not None:
        median = incident["median_delay_seconds"]
        delay = "—" if median is None else format_seconds(median)
        rows.append(
            (
                "incident",
                f"{escape(when(incident['from']))} to {escape(when(incident['to']))}: caught by "
                f"{incident['caught']} of {incident['rollouts']} rollouts running, median "
                f"delay {escape(delay)}",
            )
        )
    return rows


def backtest_html(data: dict[str, Any], *, name: str, begin: float, end: float) -> str:
    """The page for one sweep (`Sweep.to_dict()`) of runbook `name` over [begin, end]."""
    mode = "A/A split" if data["mode"] == "aa" else "baseline vs canary"
    rollbacks = [row for row in data["starts"] if row["outcome"] == "rolled_back"]
    table = "".join(
        f"<tr><td>{escape(when(row['start']))}</td>"
        f"<td class=num>{escape(format_seconds(row['after_seconds']))}</td>"
        f"<td class=num>{row['analyses']}</td><td>{escape(row['reason'])}</td></tr>"
        for row in rollbacks
    )
    body = [
        f"<h1>Backtest: {escape(name)}</h1>",
        f"<p>{escape(mode)}, {escape(when(begin))} to {escape(when(end))}</p>",
        facts(_summary(data)),
        "<h2>Timeline</h2>",
        backtest_svg(data, begin, end),
        "<h2>Rollbacks</h2>",
        (
            "<table><tr><th>start</th><th>after</th><th>analyses</th><th>reason</th></tr>"
            f"{table}</table>"
            if rollbacks
            else "<p>None: every rollout promoted or ended undecided.</p>"
        ),
    ]
    return page(f"Backtest {name}", body)
