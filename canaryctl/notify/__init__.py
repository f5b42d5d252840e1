"""Notifications: webhooks (generic JSON or Slack) told about a rollout as it runs."""

from canaryctl.notify.message import slack_message, summary_text
from canaryctl.notify.webhook import WebhookNotifier, notifiers_for

__all__ = ["WebhookNotifier", "notifiers_for", "slack_message", "summary_text"]
