"""The record of one chaos run, written like chaostoolkit's journal: opened before anything acts,
each action written before it happens and completed after, and the whole file rewritten
atomically at every step, so a run killed with SIGKILL still leaves an honest trail.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from canaryctl.redact import redact_document
from canaryctl.runbook.scenario import PHASES, ChaosScenario
from canaryctl.version import installed_version

__all__ = ["Journal", "junit_xml"]


class Journal:
    """`data` is the journal; `path` (optional) receives a fresh copy after every change."""

    def __init__(
        self,
        scenario: ChaosScenario,
        path: Path | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self._clock = clock
        self.data: dict[str, Any] = {
            "name": scenario.metadata.name,
            "scenario": redact_document(scenario.model_dump(mode="json", by_alias=True)),
            "canaryctl": installed_version(),
            "host": socket.gethostname(),
            "platform": platform.platform(),
            "pid": os.getpid(),
            "started_at": clock(),
            "ended_at": None,
            "status": "running",
            "outcome": None,
            "reason": "",
            "exit_code": None,
            "injections": [],
            "removals": [],
            "checks": [],
        }
        self._save()

    def begin(self, kind: str, data: dict[str, Any]) -> dict[str, Any]:
        """Record the intent (kind: injections or removals); fill in its result with `end`."""
        entry = {**data, "at": self._clock(), "ended_at": None, "result": None}
        self.data[kind].append(entry)
        self._save()
        return entry

    def end(self, entry: dict[str, Any], result: dict[str, Any]) -> None:
        entry.update(ended_at=self._clock(), result=result)
        self._save()

    def check(self, record: dict[str, Any]) -> None:
        self.data["checks"].append(record)
        self._save()

    def finish(self, outcome: str, exit_code: int, reason: str) -> None:
        self.data.update(
            ended_at=self._clock(),
            status="finished",
            outcome=outcome,
            exit_code=exit_code,
            reason=reason,
        )
        self._save()

    def _save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=2), encoding="utf-8")
        tmp.replace(self.path)


def junit_xml(journal: dict[str, Any]) -> str:
    """One test case per phase and check: failed if any judgement of it was violated, skipped if
    none of them could be judged."""
    suite = ElementTree.Element("testsuite", name=f"chaos.{journal['name']}")
    cases = failures = skipped = 0
    checks = list(journal["checks"])
    names = dict.fromkeys(r["check"] for c in checks for r in c["checks"])
    for phase in PHASES:
        for name in names:
            results = [
                r for c in checks if c["phase"] == phase for r in c["checks"] if r["check"] == name
            ]
            if not results:
                continue
            cases += 1
            case = ElementTree.SubElement(
                suite, "testcase", classname=f"chaos.{journal['name']}.{phase}", name=name
            )
            values = ", ".join("-" if r["value"] is None else f"{r['value']:.4g}" for r in results)
            if any(r["outcome"] == "violated" for r in results):
                failures += 1
                failure = ElementTree.SubElement(case, "failure", message=f"{name} violated")
                failure.text = f"values in the {phase} phase: {values}"
            elif all(r["outcome"] == "inconclusive" for r in results):
                skipped += 1
                ElementTree.SubElement(case, "skipped", message="too little traffic to judge")
            else:
                ElementTree.SubElement(case, "system-out").text = f"values: {values}"
    ended = journal.get("ended_at") or journal["started_at"]
    suite.set("tests", str(cases))
    suite.set("failures", str(failures))
    suite.set("skipped", str(skipped))
    suite.set("errors", "1" if journal.get("outcome") in ("error", "interrupted") else "0")
    suite.set("time", f"{ended - journal['started_at']:.3f}")
    return ElementTree.tostring(suite, encoding="unicode", xml_declaration=True)
