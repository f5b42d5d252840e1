"""A gate as JUnit XML: one test suite, one test case per check, so CI shows each check.

A failed check is a <failure>; an inconclusive one is a <failure type="inconclusive"> too,
because an unproven check blocks promotion just as a failed one does and the gate exits 1.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from canaryctl.analysis import Outcome
from canaryctl.gate.result import GateReport

__all__ = ["junit_xml"]


def _number(value: float | None) -> str:
    return "none" if value is None else f"{value:.6g}"


def junit_xml(report: GateReport) -> str:
    failed = [c for c in report.checks if c.check.outcome is not Outcome.PASS]
    duration = report.eval.duration_seconds if report.eval is not None else 0.0
    suites = ET.Element("testsuites", name="canaryctl gate")
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=f"gate {report.name}",
        tests=str(len(report.checks)),
        failures=str(len(failed)),
        errors="0",
        skipped="0",
        time=f"{duration:.3f}",
    )
    properties = ET.SubElement(suite, "properties")
    for name, value in (
        ("baseline", report.baseline),
        ("canary", report.canary),
        ("outcome", report.outcome.value),
    ):
        ET.SubElement(properties, "property", name=name, value=value)
    for gate_check in report.checks:
        check = gate_check.check
        case = ET.SubElement(
            suite, "testcase", classname=f"canaryctl.gate.{gate_check.kind}", name=check.slo
        )
        details = (
            f"canary={_number(check.canary_value)} baseline={_number(check.baseline_value)} "
            f"bound={_number(check.bound)}"
        )
        if check.outcome is Outcome.PASS:
            ET.SubElement(case, "system-out").text = f"{check.reason}\n{details}"
        else:
            failure = ET.SubElement(case, "failure", message=check.reason, type=check.outcome.value)
            failure.text = details
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"
