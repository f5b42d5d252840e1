"""A self-contained HTML page for one rollout: no script, no external asset, opens anywhere.

Header (outcome, models, times), the chart (inline SVG), the SLO table from the last analysis,
the decision's evidence (the reason and every analysis), and the journal's events.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from html import escape

from canaryctl.report.svg import chart_svg, format_seconds
from canaryctl.report.timeline import Timeline

__all__ = ["report_html"]

_BADGE = {
    "promoted": "#2e7d32",
    "rolled_back": "#c62828",
    "aborted": "#f9a825",
    "error": "#c62828",
    "interrupted": "#f9a825",
}
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;
max-width:1000px;color:#222;padding:0 12px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.badge{display:inline-block;color:#fff;border-radius:4px;padding:2px 10px;font-weight:bold}
table{border-collapse:collapse;width:100%;margin:6px 0}
th,td{border-bottom:1px solid #e0e0e0;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f5f5f5}td.num{text-align:right;font-variant-numeric:tabular-nums}
.pass{color:#2e7d32;font-weight:bold}.fail{color:#c62828;font-weight:bold}
.inconclusive{color:#b28704;font-weight:bold}.facts td:first-child{color:#666;width:160px}
code{font-size:12px;color:#555}
"""


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "—"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _num(value: object) -> str:
    return "—" if not isinstance(value, int | float) else f"{value:.4g}"


def report_html(timeline: Timeline) -> str:
    t = timeline
    outcome = t.outcome or t.phase
    colour = _BADGE.get(outcome, "#616161")
    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        f"<title>canaryctl run {t.run_id}: {escape(t.name)}</title><style>{_CSS}</style>",
        "</head><body>",
        f"<h1>Rollout {escape(t.name)} · run {t.run_id}</h1>",
        f'<p><span class="badge" style="background:{colour}">'
        f"{escape(outcome.replace('_', ' '))}</span> "
        f"<b>{escape(t.canary)}</b> replacing <b>{escape(t.baseline)}</b></p>",
        '<table class="facts">',
        f"<tr><td>started</td><td>{_when(t.started_at)}</td></tr>",
        f"<tr><td>ended</td><td>{_when(t.ended_at)} ({format_seconds(t.duration)})</td></tr>",
        f"<tr><td>exit code</td><td>{'—' if t.exit_code is None else t.exit_code}</td></tr>",
        f"<tr><td>decision</td><td>{escape(t.reason) or 'every step held'}</td></tr>",
        "</table>",
        "<h2>Timeline</h2>",
        chart_svg(t),
        "<h2>SLOs at the last analysis</h2>",
    ]
    last = t.last_analysis
    if last is None:
        parts.append("<p>No analysis ran.</p>")
    else:
        parts.append(
            f"<p>At {format_seconds(last.at)}, canary at {last.weight:g}%: "
            f'<span class="{escape(last.outcome)}">{escape(last.outcome)}</span></p>'
            "<table><tr><th>SLO</th><th>canary</th><th>baseline</th><th>bound</th>"
            "<th>requests (canary/baseline)</th><th>verdict</th><th>evidence</th></tr>"
        )
        for check in last.checks:
            parts.append(
                f"<tr><td>{escape(check['slo'])}</td>"
                f'<td class="num">{_num(check.get("canary_value"))}</td>'
                f'<td class="num">{_num(check.get("baseline_value"))}</td>'
                f'<td class="num">{_num(check.get("bound"))}</td>'
                f'<td class="num">{check.get("canary_requests", 0):g}/'
                f"{check.get('baseline_requests', 0):g}</td>"
                f'<td class="{escape(check["outcome"])}">{escape(check["outcome"])}</td>'
                f"<td>{escape(check.get('reason', ''))}</td></tr>"
            )
        parts.append("</table>")
    parts += [
        "<h2>Evidence: every analysis</h2>",
        "<table><tr><th>at</th><th>canary weight</th><th>verdict</th><th>why</th></tr>",
    ]
    for analysis in t.analyses:
        parts.append(
            f'<tr><td class="num">{format_seconds(analysis.at)}</td>'
            f'<td class="num">{analysis.weight:g}%</td>'
            f'<td class="{escape(analysis.outcome)}">{escape(analysis.outcome)}</td>'
            f"<td>{escape(analysis.reason) or 'every SLO held'}</td></tr>"
        )
    parts += ["</table>", "<h2>Journal</h2>", "<table><tr><th>at</th><th>event</th>"]
    parts.append("<th>details</th></tr>")
    for event in t.events:
        if event.type == "analysis":
            continue
        details = json.dumps(event.data if event.result is None else {**event.data,
                             "result": event.result})  # fmt: skip
        parts.append(
            f'<tr><td class="num">{format_seconds(event.at - t.started_at)}</td>'
            f"<td>{escape(event.type)}</td><td><code>{escape(details)}</code></td></tr>"
        )
    parts += ["</table>", "</body></html>"]
    return "\n".join(parts) + "\n"
