"""The `notify:` section of a Rollout: who hears about a run's start, steps, rollback, promotion.

Unlike `on_rollback`/`on_promote` hooks (called once, after the flag is safe), notifications
follow the whole run and are sent from a background queue: a slow or dead endpoint never holds up
a weight change or a rollback.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from canaryctl.runbook.common import Duration, Strict

__all__ = ["NotifyEvent", "NotifySpec", "NotifyWebhookSpec"]

NotifyEvent = Literal["start", "step", "rollback", "promotion", "finish"]


class NotifyWebhookSpec(Strict):
    url: str = Field(pattern=r"^https?://")
    format: Literal["json", "slack"] = "json"
    timeout: Duration = Field(default=5.0, gt=0, le=60)
    headers: dict[str, str] = Field(default_factory=dict)
    events: list[NotifyEvent] = Field(
        default_factory=lambda: ["start", "step", "rollback", "promotion", "finish"],
        min_length=1,
    )


class NotifySpec(Strict):
    webhook: NotifyWebhookSpec
