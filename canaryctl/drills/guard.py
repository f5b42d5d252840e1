"""When a drill may start: pure checks of the scenario's window and of running rollouts, and the
fire time a run belongs to. A drill never starts during a rollout: two experiments at once prove
nothing, and a fault during a canary step would roll back a healthy canary.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from apscheduler.triggers.base import BaseTrigger

from canaryctl.controller.store import StateStore
from canaryctl.runbook.scenario import ChaosScenarioSpec

__all__ = ["blocked_by", "latest_fire_time", "unfinished_rollouts"]


def unfinished_rollouts(state_path: str | Path) -> list[str]:
    """Rollouts in the state database that have not ended (a crashed one awaiting `resume`
    counts: its flag is not at a known state yet). No SQLite file: no rollout ever ran here."""
    if "://" not in str(state_path) and not Path(state_path).exists():
        return []
    with StateStore(state_path) as store:
        return [f"{r.id} ({r.name}, {r.phase})" for r in store.runs(10_000) if not r.finished]


def blocked_by(spec: ChaosScenarioSpec, now: datetime, rollouts: list[str]) -> str | None:
    """Why the drill must not start now, or None."""
    if rollouts:
        return f"rollout {', '.join(rollouts)} is running"
    if spec.window is not None and not spec.window.contains(now):
        window = spec.window
        return (
            f"outside the allowed window ({','.join(window.days)} "
            f"{window.start}-{window.end} {window.timezone})"
        )
    return None


def latest_fire_time(trigger: BaseTrigger, now: datetime, lookback: float) -> datetime | None:
    """The trigger's last fire time at or before `now` (within `lookback` seconds): the slot a
    run started now belongs to, with misfires coalesced into the latest one."""
    fire = trigger.get_next_fire_time(None, now - timedelta(seconds=lookback))
    latest = None
    while fire is not None and fire <= now:
        latest = fire
        fire = trigger.get_next_fire_time(fire, fire + timedelta(microseconds=1))
    return latest
