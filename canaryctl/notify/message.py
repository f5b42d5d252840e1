"""What a notification says: one JSON document per event, or its Slack rendering. Pure.

The generic JSON body (a contract, see docs/notifications.md):

    {"event": "start|step|paused|rollback|promotion|finish", "run_id": 3, "rollout": "support-bot",
     "baseline": "gpt-4-turbo", "canary": "gpt-4o-mini", "text": "one sentence", "at": 1.7e9,
     ...event fields}

`finish` (and `promotion`, which is the finish of a promoted run) carries the run's summary:
outcome, reason, exit_code, final_split, weight, steps_started, duration_seconds, last_verdict.
"""

from __future__ import annotations

from typing import Any

__all__ = ["slack_message", "summary_text"]

_ICON = {
    "start": ":rocket:",
    "step": ":arrow_forward:",
    "paused": ":hourglass:",
    "rollback": ":rotating_light:",
    "promotion": ":white_check_mark:",
    "finish": ":checkered_flag:",
}


def summary_text(body: dict[str, Any]) -> str:
    """The one-line sentence every format leads with."""
    head = f"canaryctl rollout {body['rollout']} (run {body['run_id']})"
    match body["event"]:
        case "start":
            return f"{head} started: {body['canary']} replaces {body['baseline']}"
        case "step":
            return f"{head} step {body['index'] + 1}/{body['total']}: {body['step']}"
        case "paused":
            return (
                f"{head} is paused at {body['weight']:g}% waiting for approve or abort: "
                f"{body['reason']}"
            )
        case "rollback":
            return f"{head} is rolling back {body['canary']}: {body['reason'] or 'no reason given'}"
        case _:
            outcome = body["outcome"].replace("_", " ")
            reason = f": {body['reason']}" if body.get("reason") else ""
            return f"{head} {outcome} (exit {body['exit_code']}){reason}"


def slack_message(body: dict[str, Any]) -> dict[str, Any]:
    """Slack's incoming-webhook shape: `text` for notifications, `blocks` for the message."""
    text = body["text"]
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"{_ICON[body['event']]} {text}"}}
    ]
    verdict = body.get("last_verdict")
    if verdict and verdict.get("checks"):
        lines = [f"• {c['outcome']}: {c['reason']}" for c in verdict["checks"]]
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}})
    facts = [f"{body['baseline']} → {body['canary']}"]
    if body.get("weight") is not None:
        facts.append(f"canary at {body['weight']:g}%")
    if body.get("duration_seconds") is not None:
        facts.append(f"{body['duration_seconds']:.0f}s")
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(facts)}]})
    return {"text": text, "blocks": blocks}
