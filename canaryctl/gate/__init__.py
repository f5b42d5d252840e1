"""The CI gate: an eval of the canary against the baseline, live SLOs, a cost projection."""

from canaryctl.gate.cost import CostProjection
from canaryctl.gate.junit import junit_xml
from canaryctl.gate.markdown import markdown_summary
from canaryctl.gate.result import EvalReport, GateCheck, GateReport
from canaryctl.gate.run import run_gate

__all__ = [
    "CostProjection",
    "EvalReport",
    "GateCheck",
    "GateReport",
    "junit_xml",
    "markdown_summary",
    "run_gate",
]
