"""An experiment's result as a self-contained page: the decision, then for each metric every
variation's effect against the control (variation - control, with its confidence sequence) for
all traffic and per tier, drawn against 0 and against a guard's margin, and the table behind it.

It draws from `experiment report -o json`'s summary (canaryctl/experiment/summary.py).
"""

from __future__ import annotations

from html import escape
from typing import Any

from canaryctl.report.draw import format_seconds, svg_open
from canaryctl.report.page import badge, facts, num, page, when

__all__ = ["experiment_html"]

WIDTH, LEFT, RIGHT, TOP, ROW = 960, 230, 250, 24, 30


def _scope(tier: str | None) -> str:
    return "all traffic" if tier is None else f"tier {tier}"


def _effects_svg(metric: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """One row per (scope, variation): the estimate as a dot, its interval as a bar (a faint
    dashed line and a hollow dot where the interval is still unbounded), 0 and the margin as
    vertical lines."""
    margin = metric["margin"]
    worse_sign = -1.0 if metric["higher_is_better"] else 1.0
    edge = None if margin is None else worse_sign * margin
    finite = [v for r in rows for v in (r["low"], r["high"], r["estimate"]) if v is not None]
    finite += [0.0] + ([edge] if edge is not None else [])
    span = max(max(abs(v) for v in finite), 1e-9) * 1.15
    right = WIDTH - RIGHT
    height = TOP + ROW * len(rows) + 30

    def x(value: float) -> float:
        clipped = min(max(value, -span), span)
        return LEFT + (right - LEFT) * (clipped + span) / (2 * span)

    out = [svg_open("effects", WIDTH, height, f"effects on {metric['name']}")]
    bottom = TOP + ROW * len(rows)
    out.append(f'<line class="zero" x1="{x(0):.1f}" x2="{x(0):.1f}" y1="{TOP - 10}" '
               f'y2="{bottom}" stroke="#616161"/>')  # fmt: skip
    out.append(f'<text x="{x(0) + 3:.1f}" y="{TOP - 12}" fill="#616161">0</text>')
    if edge is not None:
        out.append(f'<line class="bound margin" x1="{x(edge):.1f}" x2="{x(edge):.1f}" '
                   f'y1="{TOP - 10}" y2="{bottom}" stroke="#c62828" stroke-dasharray="6 3"/>'
                   f'<text x="{x(edge) + 3:.1f}" y="{bottom + 16}" fill="#c62828">margin '
                   f"{edge:+.4g}</text>")  # fmt: skip
    for index, row in enumerate(rows):
        y = TOP + ROW * index + ROW / 2
        label = f"{row['variation']} · {_scope(row['tier'])}"
        out.append(f'<text x="{LEFT - 8}" y="{y + 4:.1f}" text-anchor="end">{escape(label)}'
                   "</text>")  # fmt: skip
        estimate = row["estimate"]
        if estimate is None:
            out.append(f'<text x="{x(0) + 8:.1f}" y="{y + 4:.1f}" fill="#757575">no paired '
                       "interval yet</text>")  # fmt: skip
            continue
        colour = "#1565c0" if row["tier"] is None else "#6a1b9a"
        if row["low"] is None or row["high"] is None:
            # Too few intervals for a bounded interval: a faint dashed line and a hollow dot, so
            # a tier with a handful of intervals never looks like a full-width certainty.
            out.append(
                f'<g class="effect open"><line x1="{x(-span):.1f}" x2="{x(span):.1f}"'
                f' y1="{y:.1f}" y2="{y:.1f}" stroke="{colour}" stroke-width="1"'
                ' stroke-opacity="0.35" stroke-dasharray="2 4"/>'
                f'<circle cx="{x(estimate):.1f}" cy="{y:.1f}" r="4" fill="#fff"'
                f' stroke="{colour}" stroke-width="1.5"/>'
                f'<text x="{right + 8}" y="{y + 4:.1f}" fill="#757575">'
                f"{escape(_interval_text(row))}</text></g>"
            )
            continue
        out.append(
            f'<g class="effect"><line x1="{x(row["low"]):.1f}" x2="{x(row["high"]):.1f}"'
            f' y1="{y:.1f}" y2="{y:.1f}" stroke="{colour}" stroke-width="3"/>'
            f'<circle cx="{x(estimate):.1f}" cy="{y:.1f}" r="5" fill="{colour}"/>'
            f'<text x="{right + 8}" y="{y + 4:.1f}">{escape(_interval_text(row))}</text></g>'
        )
    out.append("</svg>")
    return "".join(out)


def _interval_text(row: dict[str, Any]) -> str:
    if row["estimate"] is None:
        return "—"
    if row["low"] is None or row["high"] is None:
        return f"{row['estimate']:+.4g}, unbounded yet: {row['intervals']} intervals"
    return f"{row['estimate']:+.4g} [{row['low']:+.4g}, {row['high']:+.4g}]"


def experiment_html(status: dict[str, Any], summary: dict[str, Any]) -> str:
    outcome = status["outcome"] or status["phase"]
    control = summary["control"]
    ended = status["ended_at"]
    duration = (ended or status["updated_at"]) - status["started_at"]
    parts = [
        f"<h1>Experiment {escape(status['name'])} · {status['experiment_id']}</h1>",
        f'<p>{badge(outcome)} winner: <b class="winner">'
        f"{escape(summary['winner'] or 'none')}</b> · control <b>{escape(control)}</b></p>",
        facts(
            [
                ("started", when(status["started_at"])),
                ("ended", f"{when(ended)} ({format_seconds(duration)})"),
                ("intervals", str(summary["intervals"])),
                ("primary metric", escape(summary["primary"])),
                (
                    "alpha",
                    f"{summary['alpha']:g} for all comparisons together "
                    f"({summary['alpha_each']:.3g} each)",
                ),
                ("decision", escape(status["reason"] or summary["reason"])),
                ("exit code", "—" if status["exit_code"] is None else str(status["exit_code"])),
            ]
        ),
        "<h2>Variations</h2>",
        "<table><tr><th>variation</th><th>requests</th><th>standing</th></tr>",
    ]
    for variation in summary["variations"]:
        role = " (control)" if variation == control else ""
        parts.append(
            f'<tr class="variation"><td>{escape(variation)}{role}</td>'
            f'<td class="num">{summary["requests"].get(variation, 0):g}</td>'
            f"<td>{escape(summary['standing'].get(variation, ''))}</td></tr>"
        )
    parts.append("</table>")
    for metric in summary["metrics"]:
        name = metric["name"]
        better = "higher is better" if metric["higher_is_better"] else "lower is better"
        role = metric["role"]
        if metric["margin"] is not None:
            role += f", margin {metric['margin']:g}"
        parts.append(f'<h2 class="metric">{escape(name)} <small>({escape(role)}; '
                     f"{better}; variation - {escape(control)})</small></h2>")  # fmt: skip
        rows = [e for e in summary["effects"] if e["metric"] == name]
        parts.append(_effects_svg(metric, rows))
        parts.append(
            "<table><tr><th>scope</th><th>variation</th><th>variation mean</th>"
            "<th>control mean</th><th>effect</th><th>interval</th><th>intervals</th></tr>"
        )
        for row in rows:
            levels = summary["levels"][name][row["tier"] or "all"]
            interval = "—"
            if row["low"] is not None and row["high"] is not None:
                interval = f"[{row['low']:+.4g}, {row['high']:+.4g}]"
            parts.append(
                f'<tr class="effect-row"><td>{escape(_scope(row["tier"]))}</td>'
                f"<td>{escape(row['variation'])}</td>"
                f'<td class="num">{num(levels.get(row["variation"]))}</td>'
                f'<td class="num">{num(levels.get(control))}</td>'
                f'<td class="num">{num(row["estimate"])}</td>'
                f'<td class="num">{interval}</td>'
                f'<td class="num">{row["intervals"]}</td></tr>'
            )
        parts.append("</table>")
    parts.append(
        "<p>Each interval is an anytime-valid confidence sequence for the mean per-interval "
        "difference: it may be read at any time. Per-tier rows are for reading; the decision "
        "rests on all traffic.</p>"
    )
    return page(f"canaryctl experiment {status['experiment_id']}: {status['name']}", parts)
