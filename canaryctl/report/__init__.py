"""Reports people read: a rollout's journal as a self-contained HTML page with its chart."""

from canaryctl.report.html import report_html
from canaryctl.report.svg import chart_svg
from canaryctl.report.timeline import Timeline, timeline

__all__ = ["Timeline", "chart_svg", "report_html", "timeline"]
