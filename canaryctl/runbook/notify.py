"""The `notify:` section of a Rollout: who hears about a run's start, steps, rollback, promotion.

Unlike `on_rollback`/`on_promote` hooks (called once, after the flag is safe), notifications
follow the whole run and are sent from a background queue: a slow or dead endpoint never holds up
a weight change or a rollback.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from canaryctl.runbook.common import Duration, Strict

__all__ = ["NotifyEvent", "NotifySpec", "NotifyWebhookSpec", "WebhookSpec"]

NotifyEvent = Literal["start", "step", "paused", "rollback", "promotion", "finish"]


class WebhookSpec(Strict):
    """Where a hook POSTs: `url`, or `url_env` naming the environment variable that holds it.

    A Slack webhook's secret is its path, and runbooks are committed and stored with each run:
    the state database and every message show a webhook URL as its origin only, and `url_env`
    keeps the secret out of the runbook altogether. Header values may be tokens; they are never
    stored or shown.
    """

    url: str | None = Field(default=None, pattern=r"^https?://")
    url_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    timeout: Duration = Field(default=5.0, gt=0)
    headers: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_url(self) -> WebhookSpec:
        if (self.url is None) == (self.url_env is None):
            raise ValueError("give exactly one of url or url_env")
        return self


class NotifyWebhookSpec(WebhookSpec):
    format: Literal["json", "slack"] = "json"
    timeout: Duration = Field(default=5.0, gt=0, le=60)
    events: list[NotifyEvent] = Field(
        default_factory=lambda: ["start", "step", "paused", "rollback", "promotion", "finish"],
        min_length=1,
    )


class NotifySpec(Strict):
    webhook: NotifyWebhookSpec
