"""SVG building blocks every report chart draws with: the frame of a panel, its grid, vertical
markers and a time axis. Pure string builders, so each chart stays a list of what it shows.
"""

from __future__ import annotations

from collections.abc import Callable
from html import escape

__all__ = ["format_seconds", "nice_max", "panel_frame", "svg_open", "time_axis", "vertical"]

SVG_STYLE = (
    "<style>text{font:11px sans-serif;fill:#333}.title{font-weight:bold}"
    ".grid{stroke:#e0e0e0}.axis{stroke:#999}</style>"
)


def format_seconds(seconds: float) -> str:
    seconds = round(seconds)
    minutes, rest = divmod(seconds, 60)
    if minutes == 0:
        return f"{rest}s"
    return f"{minutes}m{rest:02d}s" if rest else f"{minutes}m"


def nice_max(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 times a power of ten at or above `value`: a round axis top."""
    if value <= 0:
        return 1.0
    for scale in (10.0**k for k in range(-6, 7)):
        for step in (1.0, 2.0, 2.5, 5.0):
            if step * scale >= value:
                return step * scale
    return value


def svg_open(css_class: str, width: float, height: float, label: str) -> str:
    """The root element (close it with `</svg>`) and the style every chart shares."""
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="{css_class}"'
        f' viewBox="0 0 {width:g} {height:g}" width="{width:g}" height="{height:g}" role="img"'
        f' aria-label="{escape(label)}">{SVG_STYLE}'
    )


def panel_frame(
    title: str,
    *,
    left: float,
    right: float,
    top: float,
    height: float,
    ticks: list[tuple[float, str]],
) -> str:
    """An open `<g class="panel">` (close it with `</g>`): background, title, grid lines at the
    given (y, label) ticks."""
    out = [
        f'<g class="panel" data-panel="{escape(title)}">'
        f'<rect x="{left}" y="{top}" width="{right - left}" height="{height}"'
        ' fill="#fafafa" stroke="#ccc"/>'
        f'<text class="title" x="{left}" y="{top - 8}">{escape(title)}</text>'
    ]
    for y, label in ticks:
        out.append(
            f'<line class="grid" x1="{left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(label)}</text>'
        )
    return "".join(out)


def vertical(
    x: float,
    top: float,
    bottom: float,
    *,
    css_class: str,
    colour: str,
    dash: str = "",
    width: float = 1.0,
    title: str = "",
) -> str:
    """A full-height marker line (a step, a rollback, an injection), with an optional tooltip."""
    dashes = f' stroke-dasharray="{dash}"' if dash else ""
    tooltip = f"<title>{escape(title)}</title>" if title else ""
    return (
        f'<line class="{escape(css_class)}" x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{bottom}"'
        f' stroke="{colour}" stroke-width="{width:g}"{dashes}>{tooltip}</line>'
    )


def time_axis(x: Callable[[float], float], span: float, y: float) -> str:
    """Five labels, from 0 to `span` seconds, under the chart."""
    return "".join(
        f'<text x="{x(span * f):.1f}" y="{y}" text-anchor="middle">'
        f"{escape(format_seconds(span * f))}</text>"
        for f in (0.0, 0.25, 0.5, 0.75, 1.0)
    )
