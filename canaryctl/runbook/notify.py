"""The `notify:` section of a Rollout: who hears about a run's start, steps, rollback, promotion.

Unlike `on_rollback`/`on_promote` hooks (called once, after the flag is safe), notifications
follow the whole run and are sent from a background queue: a slow or dead endpoint never holds up
a weight change or a rollback.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from canaryctl.runbook.common import Duration, Strict

__all__ = ["NotifyEvent", "NotifySpec", "NotifyWebhookSpec"]

NotifyEvent = Literal["start", "step", "rollback", "promotion", "finish"]


class NotifyWebhookSpec(Strict):
    """`url`, or `url_env` naming the environment variable that holds it: a Slack webhook's
    secret is its path, and runbooks are committed and stored with each run."""

    url: str | None = Field(default=None, pattern=r"^https?://")
    url_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    format: Literal["json", "slack"] = "json"
    timeout: Duration = Field(default=5.0, gt=0, le=60)
    headers: dict[str, str] = Field(default_factory=dict)
    events: list[NotifyEvent] = Field(
        default_factory=lambda: ["start", "step", "rollback", "promotion", "finish"],
        min_length=1,
    )

    @model_validator(mode="after")
    def _one_url(self) -> NotifyWebhookSpec:
        if (self.url is None) == (self.url_env is None):
            raise ValueError("give exactly one of url or url_env")
        return self


class NotifySpec(Strict):
    webhook: NotifyWebhookSpec
