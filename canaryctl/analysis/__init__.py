"""Analysis: turn one observation of both variants into a verdict with its evidence. Pure."""

from canaryctl.analysis.judge import judge
from canaryctl.analysis.verdict import Check, Outcome, Verdict

__all__ = ["Check", "Outcome", "Verdict", "judge"]
