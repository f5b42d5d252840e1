"""Eval results read back: each model's score on the benchmark, from the JSON `canaryctl gate
--json-file` writes (both variants) or a JSON list of per-model scores (ModelScore.to_dict()).

Light on purpose (no solver, no HTTP): the gateway reads it at start for its downgrade policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from canaryctl.errors import InvalidInput
from canaryctl.runbook.reading import parse_json, read_text

__all__ = ["EvalFacts", "read_evals"]


@dataclass(frozen=True)
class EvalFacts:
    model: str
    score: float
    lower_bound: float
    items: int
    p95_seconds: float | None
    cost_per_query: float | None
    source: str


def _field(data: Any, key: str, source: str, where: str) -> Any:
    if not isinstance(data, dict) or key not in data:
        raise InvalidInput(f"{source}: {where}{key}: missing; is this a gate or eval result?")
    return data[key]


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _score(entry: Any, source: str, where: str) -> EvalFacts:
    model = _field(entry, "model", source, where)
    score, items = _field(entry, "score", source, where), _field(entry, "items", source, where)
    interval = _field(entry, "interval", source, where)
    numbers = _number(score) and _number(items) and isinstance(items, int) and items > 0
    pair = (
        isinstance(interval, list)
        and len(interval) == 2
        and all(_number(v) and 0 <= v <= 1 for v in interval)
    )
    if not (isinstance(model, str) and numbers and pair and 0 <= score <= 1):
        raise InvalidInput(f"{source}: {where}: not an eval score (model, score, items, interval)")
    p95, cost = entry.get("latency_p95_seconds"), entry.get("cost_per_query_usd")
    for name, value in (("latency_p95_seconds", p95), ("cost_per_query_usd", cost)):
        if value is not None and not (_number(value) and value >= 0):
            raise InvalidInput(f"{source}: {where}.{name}: must be a number >= 0 or null")
    return EvalFacts(
        model=model,
        score=float(score),
        lower_bound=float(interval[0]),
        items=items,
        p95_seconds=None if p95 is None else float(p95),
        cost_per_query=None if cost is None else float(cost),
        source=source,
    )


def read_evals(paths: Sequence[Path]) -> dict[str, EvalFacts]:
    """Each model's eval: from `canaryctl gate --json-file` results (both variants) or a JSON
    list of per-model scores (ModelScore.to_dict()). A model evaluated twice keeps the eval
    with more items."""
    found: dict[str, EvalFacts] = {}
    for path in paths:
        data = parse_json(read_text(path), str(path))
        if isinstance(data, list):
            entries = [(_score(e, str(path), f"[{i}]"), i) for i, e in enumerate(data)]
        else:
            report = _field(data, "eval", str(path), "")
            if report is None:
                raise InvalidInput(f"{path}: eval: null, the gate ran no eval")
            entries = [
                (_score(_field(report, side, str(path), "eval."), str(path), f"eval.{side}"), 0)
                for side in ("baseline", "canary")
            ]
        for facts, _ in entries:
            kept = found.get(facts.model)
            if kept is None or facts.items > kept.items:
                found[facts.model] = facts
    return found
