"""The HTML every report page shares: one stylesheet inline, the outcome badge, the facts table
and number formatting, so a rollout, a chaos run and a gate read alike."""

from __future__ import annotations

from collections.abc import Iterable
from html import escape

from canaryctl.times import when

__all__ = ["badge", "facts", "num", "page", "when"]

BADGE_COLOURS = {
    "promoted": "#2e7d32",
    "winner": "#2e7d32",
    "no_winner": "#f9a825",
    "held": "#2e7d32",
    "pass": "#2e7d32",
    "rolled_back": "#c62828",
    "violated": "#c62828",
    "fail": "#c62828",
    "error": "#c62828",
    "aborted": "#f9a825",
    "interrupted": "#f9a825",
    "not_steady": "#f9a825",
    "inconclusive": "#f9a825",
}
CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;
max-width:1000px;color:#222;padding:0 12px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.badge{display:inline-block;color:#fff;border-radius:4px;padding:2px 10px;font-weight:bold}
table{border-collapse:collapse;width:100%;margin:6px 0}
th,td{border-bottom:1px solid #e0e0e0;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f5f5f5}td.num{text-align:right;font-variant-numeric:tabular-nums}
.pass,.held{color:#2e7d32;font-weight:bold}.fail,.violated{color:#c62828;font-weight:bold}
.inconclusive{color:#b28704;font-weight:bold}.facts td:first-child{color:#666;width:160px}
code{font-size:12px;color:#555}
"""




def num(value: object) -> str:
    return "—" if not isinstance(value, int | float) else f"{value:.4g}"


def badge(outcome: str) -> str:
    colour = BADGE_COLOURS.get(outcome, "#616161")
    return (
        f'<span class="badge outcome" style="background:{colour}">'
        f"{escape(outcome.replace('_', ' '))}</span>"
    )


def facts(rows: Iterable[tuple[str, str]]) -> str:
    """A two-column table of already-escaped HTML values."""
    body = "".join(f"<tr><td>{escape(k)}</td><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="facts">{body}</table>'


def page(title: str, body: Iterable[str]) -> str:
    head = (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
    )
    return "\n".join([head, *body, "</body></html>"]) + "\n"
