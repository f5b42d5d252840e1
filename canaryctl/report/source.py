"""What `canaryctl report SOURCE` was given, told by content: a chaos journal, a gate result or
a backtest.

A file is recognised by the keys its writer always puts in it, not by its name, so a journal
renamed by CI or a gate line saved with `> gate.json` still reads. Anything else is an
InvalidInput naming the file and what was expected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from canaryctl.errors import InvalidDocument, InvalidInput
from canaryctl.report.chaos import ChaosStory, chaos_story
from canaryctl.runbook.reading import parse_json, read_text
from canaryctl.runbook.scenario import ChaosScenario

__all__ = ["EXPECTED", "read_source", "read_story"]

CHAOS_KEYS = frozenset({"scenario", "started_at", "status", "injections", "removals", "checks"})
GATE_KEYS = frozenset(
    {"name", "baseline", "canary", "outcome", "checks", "eval", "cost_projection"}
)
BACKTEST_KEYS = frozenset({"kind", "mode", "rollouts", "outcomes", "starts", "from", "to"})
EXPECTED = (
    "a run id, a chaos journal (chaos run --journal, or a drill's under "
    ".canaryctl/drills/journals/), a gate result (gate --json-file, or gate -o json's line) "
    "or a backtest (backtest --prometheus -o json)"
)


def read_source(path: Path) -> tuple[str, dict[str, Any]]:
    """(`chaos`, `gate` or `backtest`, the document)."""
    try:
        document = parse_json(read_text(path), str(path))
    except InvalidDocument as exc:
        raise InvalidInput(f"{exc}; expected {EXPECTED}") from None
    if isinstance(document, dict):
        if document.keys() >= CHAOS_KEYS:
            return "chaos", document
        if document.keys() >= GATE_KEYS:
            return "gate", document
        if document.keys() >= BACKTEST_KEYS and document["kind"] == "backtest":
            return "backtest", document
    raise InvalidInput(
        f"{path}: JSON, but neither a chaos journal (keys {', '.join(sorted(CHAOS_KEYS))}) nor"
        f" a gate result (keys {', '.join(sorted(GATE_KEYS))}); expected {EXPECTED}"
    )


def read_story(path: Path, journal: dict[str, Any]) -> tuple[ChaosStory, ChaosScenario]:
    """The journal's story and its scenario; a damaged journal is an InvalidInput, not a crash."""
    try:
        scenario = ChaosScenario.model_validate(journal["scenario"])
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidInput(f"{path}: the journal's scenario.{where}: {first['msg']}") from None
    try:
        return chaos_story(journal, scenario), scenario
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise InvalidInput(
            f"{path}: a damaged chaos journal ({type(exc).__name__}: {exc})"
        ) from None
