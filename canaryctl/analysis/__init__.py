"""Analysis: turn observations of both variants into a verdict with its evidence. Pure."""

from canaryctl.analysis.assess import assess
from canaryctl.analysis.judge import judge
from canaryctl.analysis.verdict import Check, Evidence, Outcome, Verdict

__all__ = ["Check", "Evidence", "Outcome", "Verdict", "assess", "judge"]
