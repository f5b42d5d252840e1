"""A cost report as text tables, for a terminal: the bill, its drivers, then each breakdown."""

from __future__ import annotations

from canaryctl.cost.report import MONTH_SECONDS, CostReport, Slice
from canaryctl.times import when

__all__ = ["render_text", "usd"]

DIMENSION_TITLES = {
    "route": "route",
    "model": "model",
    "tier": "tier",
    "team": "team",
    "llm_job": "job",
}


def usd(value: float | None) -> str:
    if value is None:
        return "—"
    if value == 0:
        return "$0"
    return f"${value:,.2f}" if abs(value) >= 1 else f"${value:.4g}"




def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]  # fmt: skip
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    for row in rows:
        cells = [row[0].ljust(widths[0])]
        cells += [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        out.append("  ".join(cells))
    return out


def _slice_rows(slices: list[Slice]) -> list[list[str]]:
    return [
        [
            s.name or "—",
            usd(s.cost_usd),
            f"{s.share:.1%}",
            f"{s.queries:,.0f}",
            usd(s.cost_per_query),
            "—" if s.tokens_per_query is None else f"{s.tokens_per_query:,.0f}",
        ]
        for s in slices
    ]


def render_text(report: CostReport) -> str:
    r = report
    out = [
        f"cost report {when(r.start)} .. {when(r.end)} ({r.seconds:,.0f} s)",
        "",
        *_table(
            ["", "value"],
            [
                ["cost", usd(r.cost_usd)],
                ["queries", f"{r.queries:,.0f}"],
                ["cost per query", usd(r.cost_per_query)],
                [
                    "tokens per query",
                    "—" if r.tokens_per_query is None else f"{r.tokens_per_query:,.0f}",
                ],
                ["projected month", usd(r.projected_month_usd)],
                [
                    "fallback cost",
                    f"{usd(r.fallback['cost_usd'])} ({r.fallback['requests']:,.0f} answers)",
                ],
                [
                    "retry cost",
                    f"{usd(r.retries['cost_usd'])} ({r.retries['requests']:,.0f} retries)",
                ],
                [
                    "cache",
                    f"{r.cache['hits']:,.0f} hits ({r.cache['hit_rate']:.1%}), "
                    f"saved {usd(r.cache['saved_usd'])}",
                ],
            ],
        ),
        "",
        "drivers, largest first (savings overlap: do not add them up)",
    ]
    rows = []
    for d in r.drivers:
        best = d.actions[0] if d.actions else None
        rows.append(
            [
                f"{d.kind} {d.name}",
                usd(d.cost_usd),
                f"{d.share:.1%}",
                best.change if best else "—",
                usd(best.saving_month_usd) if best else "—",
                best.how if best else "",
            ]
        )
    out += _table(["driver", "cost", "share", "change", "saves / month", "how"], rows)
    for dim, slices in r.breakdown.items():
        if not slices:
            continue
        out += ["", f"by {DIMENSION_TITLES[dim]}"]
        header = [DIMENSION_TITLES[dim], "cost", "share", "queries", "per query", "tokens/q"]
        out += _table(header, _slice_rows(slices))
    if r.users:
        out += ["", "top users (space-saving estimates: at most the error too high)"]
        out += _table(
            ["user", "cost", "share", "error"],
            [
                [str(u["user"]), usd(float(u["cost_usd"])), f"{float(u['share']):.1%}",
                 usd(float(u["error_usd"]))]
                for u in r.users
            ],
        )  # fmt: skip
    repeated = [x for x in r.repeats if x.redundant or x.retries]
    if repeated:
        out += ["", "repeated calls by route and job"]
        out += _table(
            ["route / job", "queries", "redundant", "share", "cost", "retries", "retry cost"],
            [
                [f"{x.route} / {x.job}", f"{x.queries:,.0f}", f"{x.redundant:,.0f}",
                 f"{x.share:.1%}", usd(x.redundant_cost_usd), f"{x.retries:,.0f}",
                 usd(x.retry_cost_usd)]
                for x in repeated
            ],
        )  # fmt: skip
    if r.downgrades:
        out += ["", "downgrades (low-criticality work served by a cheaper model)"]
        out += _table(
            ["route: from → to", "reason", "requests", "saved"],
            [
                [f"{d.route}: {d.from_model} → {d.to_model}", d.reason, f"{d.requests:,.0f}",
                 usd(d.saving_usd)]
                for d in r.downgrades
            ],
        )  # fmt: skip
    spent = [(kind, e) for kind, e in r.evaluation.items() if e["requests"] or e["cost_usd"]]
    if spent:
        out += ["", "not user spend: shadow and judge calls (in none of the figures above)"]
        out += _table(
            ["calls", "cost", "requests", "projected month"],
            [
                [f"{kind} {row['name']}", usd(row["cost_usd"]), f"{row['requests']:,.0f}",
                 usd(row["cost_usd"] * MONTH_SECONDS / r.seconds) if r.seconds else "—"]
                for kind, e in spent
                for row in e["by"]
            ],
        )  # fmt: skip
    out += [f"note: {n}" for n in r.notes]
    return "\n".join(out) + "\n"
