"""A gate as Markdown for a CI step summary ($GITHUB_STEP_SUMMARY): verdict, checks, eval, cost."""

from __future__ import annotations

from canaryctl.analysis import Outcome
from canaryctl.gate.result import GateReport

__all__ = ["markdown_summary"]

_MARK = {Outcome.PASS: "✅ pass", Outcome.FAIL: "❌ fail", Outcome.INCONCLUSIVE: "⚠️ inconclusive"}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _num(value: float | None, fmt: str = ".4g") -> str:
    return "—" if value is None else format(value, fmt)


def _usd(value: float | None) -> str:
    return "—" if value is None else f"${value:,.2f}"


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f} s"


def markdown_summary(report: GateReport) -> str:
    lines = [
        f"## canaryctl gate `{report.name}`: {_MARK[report.outcome]}",
        "",
        f"Canary **{report.canary}** against baseline **{report.baseline}**"
        f" (exit {report.exit_code}).",
        "",
    ]
    if report.reason:
        lines += [f"> {_cell(report.reason)}", ""]
    lines += [
        "| check | canary | baseline | bound | verdict | evidence |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for gate_check in report.checks:
        c = gate_check.check
        lines.append(
            f"| {_cell(gate_check.name)} | {_num(c.canary_value)} | {_num(c.baseline_value)} "
            f"| {_num(c.bound)} | {_MARK[c.outcome]} | {_cell(c.reason)} |"
        )
    if report.eval is not None:
        ev = report.eval
        level = f"{ev.confidence:.0%}"
        lines += [
            "",
            f"### Eval on `{ev.benchmark}` ({ev.duration_seconds:.1f} s)",
            "",
            f"| variant | model | score | {level} interval | items | errors | p50 | p95 | cost |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for role, score in (("baseline", ev.baseline), ("canary", ev.canary)):
            low, high = score.interval
            lines.append(
                f"| {role} {_cell(score.variant)} | {_cell(score.model)} | {score.score:.1%} "
                f"| {low:.1%} .. {high:.1%} | {score.items} | {score.errors} "
                f"| {_seconds(score.latency_p50)} | {_seconds(score.latency_p95)} "
                f"| {'no price' if score.cost_usd is None else f'${score.cost_usd:.4f}'} |"
            )
        low, high = ev.difference_interval
        lines += [
            "",
            f"Difference canary - baseline: {ev.difference:+.1%} ({low:+.1%} .. {high:+.1%}).",
        ]
    if report.projection is not None:
        p = report.projection
        lines += [
            "",
            f"### Cost at {p.monthly_queries:,} queries a month",
            "",
            "| variant | cost per query | monthly | measured on |",
            "| --- | --- | --- | --- |",
            f"| baseline {_cell(report.baseline)} | {_num(p.baseline_per_query, '.6f')} "
            f"| {_usd(p.baseline_monthly)} | {p.baseline_source} |",
            f"| canary {_cell(report.canary)} | {_num(p.canary_per_query, '.6f')} "
            f"| {_usd(p.canary_monthly)} | {p.canary_source} |",
        ]
        if p.monthly_difference is not None:
            change = p.monthly_difference
            sign = "+" if change >= 0 else "-"
            lines += ["", f"The canary changes the monthly bill by {sign}{_usd(abs(change))}."]
    return "\n".join(lines) + "\n"
