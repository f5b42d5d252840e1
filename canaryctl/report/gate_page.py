"""A gate result (`gate --json-file`, or `gate -o json`'s line) as a self-contained page: every
check with its values, bound and verdict; each model's eval score with its confidence interval
and the canary - baseline difference drawn against their bounds; the monthly cost projection.

It draws from the gate's JSON document (docs/gate.md), the contract CI keeps as an artifact.
"""

from __future__ import annotations

from collections.abc import Callable
from html import escape
from typing import Any

from canaryctl.report.draw import format_seconds, panel_frame, svg_open
from canaryctl.report.page import badge, facts, num, page, when

__all__ = ["gate_html", "intervals_svg"]

WIDTH, LEFT, RIGHT, TOP, ROW, GAP = 960, 220, 40, 34, 34, 50
_ROLE_COLOUR = {"baseline": "#757575", "canary": "#ef6c00", "difference": "#1565c0"}


def _bound(report: dict[str, Any], metric: str) -> float | None:
    return next(
        (c["bound"] for c in report["checks"] if c["kind"] == "eval" and c["metric"] == metric),
        None,
    )


def _row(
    role: str,
    label: str,
    value: float,
    interval: list[float],
    y: float,
    x: Callable[[float], float],
    text: str,
) -> str:
    low, high = interval
    colour = _ROLE_COLOUR[role]
    return (
        f'<g class="interval {role}"><text x="{LEFT - 8}" y="{y + 4:.1f}" text-anchor="end">'
        f"{escape(label)}</text>"
        f'<line x1="{x(low):.1f}" x2="{x(high):.1f}" y1="{y:.1f}" y2="{y:.1f}"'
        f' stroke="{colour}" stroke-width="3"/>'
        f'<line x1="{x(low):.1f}" x2="{x(low):.1f}" y1="{y - 7:.1f}" y2="{y + 7:.1f}"'
        f' stroke="{colour}" stroke-width="2"/>'
        f'<line x1="{x(high):.1f}" x2="{x(high):.1f}" y1="{y - 7:.1f}" y2="{y + 7:.1f}"'
        f' stroke="{colour}" stroke-width="2"/>'
        f'<circle cx="{x(value):.1f}" cy="{y:.1f}" r="5" fill="{colour}"/>'
        f'<text x="{x(high) + 8:.1f}" y="{y + 4:.1f}">{escape(text)}</text></g>'
    )


def _bound_line(css: str, at: float, top: float, bottom: float, label: str) -> str:
    return (
        f'<line class="bound {css}" x1="{at:.1f}" x2="{at:.1f}" y1="{top}" y2="{bottom}"'
        ' stroke="#c62828" stroke-dasharray="6 3"/>'
        f'<text x="{at + 3:.1f}" y="{bottom - 4}" fill="#c62828">{escape(label)}</text>'
    )


def intervals_svg(report: dict[str, Any]) -> str:
    """Two panels: each model's score with its interval on a shared scale against min_score,
    then canary - baseline with its interval against -margin."""
    evaluated = report["eval"]
    level = f"{evaluated['confidence']:.0%}"
    scores = [evaluated["baseline"], evaluated["canary"]]
    floor = _bound(report, "eval_score")
    right = WIDTH - RIGHT - 130  # room for the interval's label
    lows = [s["interval"][0] for s in scores] + ([floor] if floor is not None else [])
    low = max(0.0, (int(min(lows) * 10) - 1) / 10)
    score_height = 2 * ROW + ROW / 2
    diff_top = TOP + score_height + GAP
    height = diff_top + ROW * 1.5 + 30

    def xs(v: float) -> float:
        return LEFT + (right - LEFT) * (min(max(v, low), 1.0) - low) / (1.0 - low)

    ticks_at = [low + (1.0 - low) * f for f in (0.0, 0.5, 1.0)]
    out = [svg_open("intervals", WIDTH, height, f"eval scores with {level} intervals")]
    title = f"eval score, {level} interval ({evaluated['benchmark']})"
    out.append(panel_frame(title, left=LEFT, right=right, top=TOP, height=score_height, ticks=[]))
    for v in ticks_at:
        out.append(
            f'<text x="{xs(v):.1f}" y="{TOP + score_height + 14}" text-anchor="middle">'
            f"{v:.0%}</text>"
        )
    for i, score in enumerate(scores):
        role = "baseline" if i == 0 else "canary"
        y = TOP + ROW * (i + 0.75)
        lo, hi = score["interval"]
        text = f"{score['score']:.1%} [{lo:.1%}, {hi:.1%}]"
        label = f"{role}: {score['model']}"
        out.append(_row(role, label, score["score"], score["interval"], y, xs, text))
    if floor is not None:
        out.append(_bound_line("min-score", xs(floor), TOP, TOP + score_height,
                               f"min {floor:g}"))  # fmt: skip
    out.append("</g>")

    difference = evaluated["difference"]
    d_low, d_high = evaluated["difference_interval"]
    versus = _bound(report, "eval_score_vs_baseline")
    margin = None if versus is None else evaluated["baseline"]["score"] - versus
    reach = max(abs(d_low), abs(d_high), margin or 0.0) * 1.2 or 0.1

    def xd(v: float) -> float:
        return LEFT + (right - LEFT) * (min(max(v, -reach), reach) + reach) / (2 * reach)

    out.append(panel_frame("canary - baseline", left=LEFT, right=right, top=diff_top,
                           height=ROW * 1.5, ticks=[]))  # fmt: skip
    for v in (-reach, 0.0, reach):
        out.append(
            f'<text x="{xd(v):.1f}" y="{diff_top + ROW * 1.5 + 14}" text-anchor="middle">'
            f"{v:+.1%}</text>"
        )
    out.append(
        f'<line class="axis" x1="{xd(0):.1f}" x2="{xd(0):.1f}" y1="{diff_top}"'
        f' y2="{diff_top + ROW * 1.5}"/>'
    )
    text = f"{difference:+.1%} [{d_low:+.1%}, {d_high:+.1%}]"
    y = diff_top + ROW * 0.75
    out.append(_row("difference", "canary - baseline", difference, [d_low, d_high], y, xd, text))
    if margin is not None:
        out.append(_bound_line("margin", xd(-margin), diff_top, diff_top + ROW * 1.5,
                               f"-margin {margin:g}"))  # fmt: skip
    out += ["</g>", "</svg>"]
    return "".join(out)


def _money(value: float | None) -> str:
    return "—" if value is None else f"${value:,.2f}"


def gate_html(report: dict[str, Any]) -> str:
    r = report
    window = r.get("live_window")
    parts = [
        f"<h1>Gate {escape(r['name'])}</h1>",
        f"<p>{badge(r['outcome'])} <b>{escape(r['canary'])}</b> against"
        f" <b>{escape(r['baseline'])}</b></p>",
        facts(
            [
                ("exit code", str(r["exit_code"])),
                ("decision", escape(r["reason"]) or "every check passed"),
                (
                    "live window",
                    "none"
                    if not window
                    else f"{when(window[0])} for {format_seconds(window[1] - window[0])}",
                ),
            ]
        ),
        "<h2>Checks</h2>",
        "<table><tr><th>check</th><th>canary</th><th>baseline</th><th>bound</th>"
        "<th>verdict</th><th>evidence</th></tr>",
    ]
    for check in r["checks"]:
        parts.append(
            f"<tr><td>{escape(check['name'])}</td>"
            f'<td class="num">{num(check["canary_value"])}</td>'
            f'<td class="num">{num(check["baseline_value"])}</td>'
            f'<td class="num">{num(check["bound"])}</td>'
            f'<td class="{escape(check["outcome"])}">{escape(check["outcome"])}</td>'
            f"<td>{escape(check['reason'])}</td></tr>"
        )
    parts.append("</table>")
    evaluated = r.get("eval")
    parts.append("<h2>Eval</h2>")
    if evaluated is None:
        parts.append("<p>This gate ran no eval.</p>")
    else:
        parts += [
            intervals_svg(r),
            "<table><tr><th>variant</th><th>model</th><th>right / items</th><th>errors</th>"
            f"<th>score</th><th>{evaluated['confidence']:.0%} interval</th><th>p50</th>"
            "<th>p95</th><th>eval cost</th></tr>",
        ]
        for score in (evaluated["baseline"], evaluated["canary"]):
            low, high = score["interval"]
            parts.append(
                f"<tr><td>{escape(score['variant'])}</td><td>{escape(score['model'])}</td>"
                f'<td class="num">{score["right"]}/{score["items"]}</td>'
                f'<td class="num">{score["errors"]}</td>'
                f'<td class="num">{score["score"]:.1%}</td>'
                f'<td class="num">{low:.1%} .. {high:.1%}</td>'
                f'<td class="num">{num(score["latency_p50_seconds"])}s</td>'
                f'<td class="num">{num(score["latency_p95_seconds"])}s</td>'
                f'<td class="num">{_eval_cost(score["cost_usd"])}</td></tr>'
            )
        parts.append(
            f"</table><p>Eval took {format_seconds(evaluated['duration_seconds'])} and cost"
            f" {_eval_cost(evaluated['cost_usd'])}.</p>"
        )
    projection = r.get("cost_projection")
    parts.append("<h2>Monthly cost projection</h2>")
    if projection is None:
        parts.append("<p>This gate projected no cost.</p>")
    else:
        parts.append(
            f"<p>At {projection['monthly_queries']:,} queries a month:</p>"
            '<table class="cost"><tr><th>variant</th><th>cost per query</th>'
            "<th>monthly</th><th>measured on</th></tr>"
        )
        for role in ("baseline", "canary"):
            side = projection[role]
            per_query = side["cost_per_query_usd"]
            parts.append(
                f"<tr><td>{role}: {escape(r[role])}</td>"
                f'<td class="num">{"—" if per_query is None else f"${per_query:.6f}"}</td>'
                f'<td class="num">{_money(side["monthly_usd"])}</td>'
                f"<td>{escape(side['source'])}</td></tr>"
            )
        difference = projection["monthly_difference_usd"]
        shown = "—" if difference is None else f"{'+' if difference >= 0 else '-'}"
        shown += "" if difference is None else _money(abs(difference))
        parts.append(
            f'<tr><td>canary - baseline</td><td></td><td class="num">{shown}</td><td></td></tr>'
            "</table>"
        )
    return page(f"canaryctl gate {r['name']}", parts)


def _eval_cost(usd: float | None) -> str:
    """An eval's cost; none when a model had no price (unknown, not $0)."""
    return "no price" if usd is None else f"${usd:.4f}"
