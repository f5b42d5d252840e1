"""Alertmanager's webhook, read and judged: which running rollouts a payload aborts. Pure.

Alertmanager (payload `version: "4"`) and Grafana's webhook contact point (same shape, with
`orgId` and a few more fields) post a group of alerts; each has a `status` (firing, resolved),
its `labels` and, from both, a `fingerprint` that names the alert across notifications. Only
firing alerts count. An alert aborts a run at most once: the abort request is filed with the
alert's fingerprint in its requester, and a later notification of the same alert (Alertmanager
repeats a firing group every `repeat_interval`) finds it there and changes nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from canaryctl.runbook.alerts import matches

__all__ = ["Alert", "BadPayload", "Decision", "decide", "read_alerts", "requester"]

_MAX_SHOWN = 80


class BadPayload(ValueError):
    """Not a webhook payload; the message names the field and quotes no value."""


class _AlertModel(BaseModel):
    """As the API's AlertmanagerPayload schema says: a field may be left out, never null."""

    model_config = ConfigDict(extra="allow")
    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    fingerprint: str = Field(default="", max_length=128)
    """Left out: made from the labels (`_fingerprint`)."""


class _PayloadModel(BaseModel):
    model_config = ConfigDict(extra="allow")
    version: str = ""
    status: Literal["firing", "resolved"] = "firing"
    alerts: list[_AlertModel]


@dataclass(frozen=True)
class Alert:
    status: str
    labels: Mapping[str, str]
    fingerprint: str

    @property
    def name(self) -> str:
        return _shown(self.labels.get("alertname", "(no alertname)"))


@dataclass(frozen=True)
class Decision:
    """What one firing alert does to one run: `abort`, or `repeat` (already acted on)."""

    run_id: int
    alert: Alert
    action: Literal["abort", "repeat"]


def _shown(text: str) -> str:
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 1] + "…"


def _fingerprint(labels: Mapping[str, str]) -> str:
    """Alertmanager's own is a hash of the label set; one that was left out is made alike."""
    text = "\x00".join(f"{k}\x01{v}" for k, v in sorted(labels.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_alerts(payload: Any) -> list[Alert]:
    try:
        model = _PayloadModel.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "the body"
        raise BadPayload(f"not an Alertmanager webhook payload: {where}: {first['msg']}") from None
    return [
        Alert(a.status, a.labels, a.fingerprint or _fingerprint(a.labels)) for a in model.alerts
    ]


def requester(alert: Alert) -> str:
    """Who the journal says asked for the abort: the alert, by name and fingerprint."""
    return f"alertmanager: {alert.name} (fingerprint {_shown(alert.fingerprint)})"


@dataclass(frozen=True)
class Watched:
    """A running rollout as the webhook sees it: its matchers and who already asked it what."""

    run_id: int
    abort_on: Sequence[Mapping[str, str]]
    requesters: Iterable[str]


def decide(alerts: Sequence[Alert], runs: Sequence[Watched]) -> tuple[list[Decision], list[Alert]]:
    """(what each firing alert does to each run it matches, the firing alerts matching none)."""
    decisions: list[Decision] = []
    unmatched: list[Alert] = []
    asked = {run.run_id: set(run.requesters) for run in runs}
    for alert in (a for a in alerts if a.status == "firing"):
        hit = [run for run in runs if matches(run.abort_on, alert.labels)]
        if not hit:
            unmatched.append(alert)
        for run in hit:
            by = requester(alert)
            action: Literal["abort", "repeat"] = "repeat" if by in asked[run.run_id] else "abort"
            asked[run.run_id].add(by)
            decisions.append(Decision(run.run_id, alert, action))
    return decisions, unmatched
