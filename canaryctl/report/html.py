"""A self-contained HTML page for one rollout: no script, no external asset, opens anywhere.

Header (outcome, models, times), the chart (inline SVG), the SLO table from the last analysis,
the decision's evidence (the reason and every analysis), and the journal's events.
"""

from __future__ import annotations

import json
from html import escape

from canaryctl.report.draw import format_seconds
from canaryctl.report.page import badge, facts, num, page, when
from canaryctl.report.svg import chart_svg
from canaryctl.report.timeline import Timeline

__all__ = ["report_html"]


def report_html(timeline: Timeline) -> str:
    t = timeline
    outcome = t.outcome or t.phase
    parts = [
        f"<h1>Rollout {escape(t.name)} · run {t.run_id}</h1>",
        f"<p>{badge(outcome)} <b>{escape(t.canary)}</b> replacing <b>{escape(t.baseline)}</b></p>",
        facts(
            [
                ("started", when(t.started_at)),
                ("ended", f"{when(t.ended_at)} ({format_seconds(t.duration)})"),
                ("exit code", "—" if t.exit_code is None else str(t.exit_code)),
                ("decision", escape(t.reason) or "every step held"),
            ]
        ),
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
                f'<td class="num">{num(check.get("canary_value"))}</td>'
                f'<td class="num">{num(check.get("baseline_value"))}</td>'
                f'<td class="num">{num(check.get("bound"))}</td>'
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
    parts.append("</table>")
    return page(f"canaryctl run {t.run_id}: {t.name}", parts)
