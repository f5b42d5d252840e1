"""A cost report as a self-contained page: the bill, its drivers with the change that would cut
each, and the share of the bill by route, model, tier, team, job and user as inline SVG bars."""

from __future__ import annotations

from html import escape

from canaryctl.cost.report import CostReport
from canaryctl.cost.text import DIMENSION_TITLES, usd
from canaryctl.report.draw import svg_open
from canaryctl.report.page import facts, page, when

__all__ = ["bars_svg", "cost_html"]

WIDTH, LEFT, RIGHT, TOP, ROW = 960, 200, 190, 26, 24
_MAX_BARS = 12
_AXIS = 18
"""Room under the bars for the 0-100% ticks."""
_COLOURS = ("#1565c0", "#ef6c00", "#2e7d32", "#6a1b9a", "#c62828", "#00838f")


def bars_svg(dimension: str, rows: list[tuple[str, float, float]]) -> str:
    """One horizontal bar per (name, cost, share), largest first, on the whole bill's axis
    (0 to 100%) with its share printed: every chart reads on the same scale, so a user with
    1.7% of the bill draws a short bar, not one as long as the largest slice's."""
    rows = rows[:_MAX_BARS]
    height = TOP + ROW * max(1, len(rows)) + 10 + _AXIS
    right = WIDTH - RIGHT
    bottom = TOP + ROW * max(1, len(rows))
    out = [
        svg_open(f"bars {escape(dimension)}", WIDTH, height, f"share of the bill by {dimension}"),
        f'<text class="title" x="{LEFT}" y="16">share of the bill by {escape(dimension)}</text>',
    ]
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        at = LEFT + (right - LEFT) * tick
        out.append(
            f'<line class="grid" x1="{at:.1f}" x2="{at:.1f}" y1="{TOP}" y2="{bottom}"/>'
            f'<text class="tick" x="{at:.1f}" y="{bottom + 14}" text-anchor="middle"'
            f' fill="#777">{tick:.0%}</text>'
        )
    if not rows:
        out.append(f'<text x="{LEFT}" y="{TOP + 14}" fill="#888">no spend in the window</text>')
    for i, (name, cost, share) in enumerate(rows):
        y = TOP + i * ROW
        length = (right - LEFT) * min(max(share, 0.0), 1.0)
        colour = _COLOURS[i % len(_COLOURS)]
        out.append(
            f'<g class="bar" data-name="{escape(name)}" data-share="{share:.6f}">'
            f'<text x="{LEFT - 8}" y="{y + 15}" text-anchor="end">{escape(name or "—")}</text>'
            f'<rect x="{LEFT}" y="{y + 3}" width="{max(length, 1.0):.1f}" height="{ROW - 6}"'
            f' fill="{colour}"/>'
            f'<text x="{LEFT + length + 6:.1f}" y="{y + 15}">'
            f"{escape(usd(cost))} · {share:.1%}</text></g>"
        )
    out.append("</svg>")
    return "".join(out)


def cost_html(report: CostReport) -> str:
    r = report
    per_query = usd(r.cost_per_query)
    tokens = "—" if r.tokens_per_query is None else f"{r.tokens_per_query:,.0f}"
    parts = [
        f"<h1>Cost report {when(r.start)} to {when(r.end)}</h1>",
        facts(
            [
                ("cost", f'<span class="total">{escape(usd(r.cost_usd))}</span>'),
                ("queries", f"{r.queries:,.0f}"),
                ("cost per query", escape(per_query)),
                ("tokens per query", tokens),
                ("projected month", escape(usd(r.projected_month_usd))),
                (
                    "fallback cost",
                    f"{escape(usd(r.fallback['cost_usd']))} "
                    f"({r.fallback['requests']:,.0f} answers)",
                ),
                (
                    "retry cost",
                    f"{escape(usd(r.retries['cost_usd']))} ({r.retries['requests']:,.0f} retries)",
                ),
                (
                    "cache",
                    f"{r.cache['hits']:,.0f} hits ({r.cache['hit_rate']:.1%}), saved "
                    f"{escape(usd(r.cache['saved_usd']))}",
                ),
            ]
        ),
        "<h2>Drivers, largest first</h2>",
        "<p>Each saving is what that one change would save on this window's traffic, projected "
        "to a month; savings of different drivers overlap and do not add up.</p>",
        "<table class=drivers><tr><th>driver</th><th>cost</th><th>share</th><th>change</th>"
        "<th>saves / month</th><th>how</th></tr>",
    ]
    for d in r.drivers:
        actions = d.actions or ()
        first = actions[0] if actions else None
        parts.append(
            f'<tr class="driver" data-kind="{escape(d.kind)}" data-name="{escape(d.name)}">'
            f"<td>{escape(d.kind)} <b>{escape(d.name)}</b></td>"
            f'<td class="num">{escape(usd(d.cost_usd))}</td>'
            f'<td class="num">{d.share:.1%}</td>'
            f'<td class="change">{escape(first.change) if first else "—"}</td>'
            f'<td class="num">{escape(usd(first.saving_month_usd)) if first else "—"}</td>'
            f"<td>{escape(first.how) if first else ''}"
            + "".join(
                f"<br><small>or {escape(a.change)}: {escape(usd(a.saving_month_usd))} a month"
                "</small>"
                for a in actions[1:]
            )
            + "</td></tr>"
        )
    parts.append("</table><h2>Share of the bill</h2>")
    for dim, slices in r.breakdown.items():
        parts.append(
            bars_svg(DIMENSION_TITLES[dim], [(s.name, s.cost_usd, s.share) for s in slices])
        )
    parts.append(
        bars_svg(
            "user",
            [(str(u["user"]), float(u["cost_usd"]), float(u["share"])) for u in r.users],
        )
    )
    parts += [
        "<h2>Repeated calls by route and job</h2>",
        "<table class=repeats><tr><th>route</th><th>job</th><th>queries</th><th>redundant</th>"
        "<th>share</th><th>redundant cost</th><th>retries</th><th>retry cost</th></tr>",
    ]
    for x in r.repeats:
        parts.append(
            f'<tr class="repeat" data-route="{escape(x.route)}" data-job="{escape(x.job)}">'
            f"<td>{escape(x.route)}</td><td>{escape(x.job)}</td>"
            f'<td class="num">{x.queries:,.0f}</td><td class="num">{x.redundant:,.0f}</td>'
            f'<td class="num">{x.share:.1%}</td>'
            f'<td class="num">{escape(usd(x.redundant_cost_usd))}</td>'
            f'<td class="num">{x.retries:,.0f}</td>'
            f'<td class="num">{escape(usd(x.retry_cost_usd))}</td></tr>'
        )
    parts.append("</table>")
    if r.downgrades:
        parts += [
            "<h2>Downgrades</h2>",
            "<p>Low-criticality work the gateway served with a cheaper model; saved is the moves "
            "times the difference of the two models' cost per query on the route.</p>",
            "<table class=downgrades><tr><th>route</th><th>from</th><th>to</th><th>reason</th>"
            "<th>requests</th><th>saved</th></tr>",
        ]
        for d in r.downgrades:
            parts.append(
                f'<tr class="downgrade" data-route="{escape(d.route)}">'
                f"<td>{escape(d.route)}</td><td>{escape(d.from_model)}</td>"
                f"<td>{escape(d.to_model)}</td><td>{escape(d.reason)}</td>"
                f'<td class="num">{d.requests:,.0f}</td>'
                f'<td class="num">{escape(usd(d.saving_usd))}</td></tr>'
            )
        parts.append("</table>")
    parts += [
        "<h2>Not user spend: shadow and judge calls</h2>",
        "<p>Mirrored (shadow) and grading (judge) calls are in none of the figures above.</p>",
        "<table class=evaluation><tr><th>calls</th><th>cost</th><th>requests</th>"
        "<th>projected month</th></tr>",
    ]
    for kind, e in r.evaluation.items():
        parts.append(
            f'<tr class="evaluation" data-kind="{escape(kind)}"><td>{escape(kind)}</td>'
            f'<td class="num">{escape(usd(e["cost_usd"]))}</td>'
            f'<td class="num">{e["requests"]:,.0f}</td>'
            f'<td class="num">{escape(usd(e["projected_month_usd"]))}</td></tr>'
        )
    parts.append("</table>")
    parts += [f"<p><b>note:</b> {escape(n)}</p>" for n in r.notes]
    return page("canaryctl cost report", parts)
