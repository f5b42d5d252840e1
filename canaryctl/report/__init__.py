"""Reports people read: a rollout's journal, a chaos run's (or drill's) journal or a gate's
result as a self-contained HTML page with its chart."""

from canaryctl.report.chaos import ChaosStory, chaos_story
from canaryctl.report.chaos_page import chaos_html
from canaryctl.report.gate_page import gate_html
from canaryctl.report.html import report_html
from canaryctl.report.svg import chart_svg
from canaryctl.report.timeline import Timeline, timeline

__all__ = [
    "ChaosStory",
    "Timeline",
    "chaos_html",
    "chaos_story",
    "chart_svg",
    "gate_html",
    "report_html",
    "timeline",
]
