"""Webhook notifications as a rollout observer, sent from a queue by a background thread.

The runner calls observers inline, between writing the flag and the next action. A notifier that
POSTed there would make a slow endpoint slow down a rollback, so `on_*` only enqueue; one
daemon thread sends, each request bounded by the webhook's timeout and retried on a network
error, 5xx or 429 (canaryctl/retry.py). `close(grace)` gives what is
still queued at most `grace` seconds once the run is over and the flag already safe, then gives
up on it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from canaryctl import retry
from canaryctl.analysis import Verdict
from canaryctl.controller.events import RolloutObserver, RunInfo
from canaryctl.controller.hooks import webhook_url
from canaryctl.controller.phases import Phase
from canaryctl.controller.result import RunResult
from canaryctl.controller.step import PlanItem
from canaryctl.flags.base import Split
from canaryctl.notify.message import slack_message, summary_text
from canaryctl.redact import redact_webhook_url
from canaryctl.retry import BACKEND, Retryable, RetryPolicy
from canaryctl.runbook.notify import NotifySpec, NotifyWebhookSpec

__all__ = ["WebhookNotifier", "notifiers_for"]

log = logging.getLogger(__name__)

_STOP = object()


class WebhookNotifier(RolloutObserver):
    """Notifies one webhook; `sent` and `failed` count deliveries (for tests and the log)."""

    def __init__(
        self,
        spec: NotifyWebhookSpec,
        client: httpx.Client | None = None,
        *,
        where: str = "notify",
        retry: RetryPolicy = BACKEND,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.spec = spec
        self._retry, self._sleep = retry, sleep
        self._url = webhook_url(spec, where)
        self.target = redact_webhook_url(self._url)
        self.sent = 0
        self.failed = 0
        self._client = client if client is not None else httpx.Client()
        self._owned = client is None
        self._queue: queue.Queue[object] = queue.Queue()
        self._run: RunInfo | None = None
        self._weight: float | None = None
        self._steps = 0
        self._started = time.monotonic()
        self._verdict: Verdict | None = None
        self._thread = threading.Thread(target=self._send_all, name="canaryctl-notify", daemon=True)
        self._thread.start()

    # -- observer: enqueue only --

    def on_start(self, run: RunInfo) -> None:
        self._run, self._weight, self._started = run, run.split.canary, time.monotonic()
        self._post("start", split={"baseline": run.split.baseline, "canary": run.split.canary},
                   plan=[item.describe() for item in run.plan], resumed=run.resumed)  # fmt: skip

    def on_step(self, run_id: int, index: int, total: int, item: PlanItem) -> None:
        self._steps += 1
        self._post("step", index=index, total=total, step=item.describe(), weight=self._weight)

    def on_weight(self, run_id: int, before: Split, after: Split) -> None:
        self._weight = after.canary

    def on_analysis(self, run_id: int, verdict: Verdict) -> None:
        self._verdict = verdict

    def on_phase(self, run_id: int, phase: Phase, reason: str) -> None:
        if phase is Phase.AWAITING_APPROVAL and reason:  # undecided: a human is asked
            self._post("paused", reason=reason, weight=self._weight, **self._evidence())
        if phase is Phase.ROLLING_BACK:
            self._post("rollback", reason=reason, weight=self._weight, **self._evidence())

    def on_finish(self, result: RunResult) -> None:
        split = result.final_split
        summary = {
            **{k: v for k, v in result.to_dict().items() if k not in ("run_id", "name")},
            "final_split": None if split is None else {"baseline": split.baseline,
                                                       "canary": split.canary},
            "weight": self._weight,
            "steps_started": self._steps,
            "duration_seconds": time.monotonic() - self._started,
            **self._evidence(),
        }  # fmt: skip
        event = "promotion" if result.outcome == "promoted" else "finish"
        self._post(event, **summary)

    # -- delivery --

    def close(self, grace: float | None = None) -> None:
        """Let the queue drain for at most `grace` seconds (default: the webhook's timeout)."""
        self._queue.put(_STOP)
        self._thread.join(self.spec.timeout if grace is None else grace)
        if self._thread.is_alive():
            log.warning("notify %s: gave up on notifications still queued", self.target)
        elif self._owned:
            self._client.close()

    def _evidence(self) -> dict[str, Any]:
        return {"last_verdict": None if self._verdict is None else self._verdict.to_dict()}

    def _post(self, event: str, **fields: Any) -> None:
        if event not in self.spec.events or self._run is None:
            return
        run = self._run
        body: dict[str, Any] = {
            "event": event,
            "run_id": run.run_id,
            "rollout": run.name,
            "baseline": run.baseline,
            "canary": run.canary,
            "at": time.time(),
            **fields,
        }
        body["text"] = summary_text(body)
        self._queue.put(slack_message(body) if self.spec.format == "slack" else body)

    def _send_all(self) -> None:
        while (body := self._queue.get()) is not _STOP:
            try:
                response = retry.call(lambda: self._send(body), self._retry, sleep=self._sleep)
            except Retryable as failure:
                self.failed += 1
                log.warning("notify %s failed: %s", self.target, failure)
                continue
            if response.is_success:
                self.sent += 1
            else:
                self.failed += 1
                log.warning("notify %s answered HTTP %s", self.target, response.status_code)

    def _send(self, body: object) -> httpx.Response:
        """One POST; a network error, a 5xx or a 429 is worth another (in this thread only)."""
        try:
            response = self._client.post(
                self._url, json=body, headers=self.spec.headers, timeout=self.spec.timeout
            )
        except httpx.HTTPError as exc:  # its text may echo the URL: the class name only
            raise Retryable(type(exc).__name__) from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise Retryable(f"HTTP {response.status_code}")
        return response


def notifiers_for(specs: Sequence[NotifySpec]) -> list[WebhookNotifier]:
    """Every notifier, or none: a missing URL variable raises before any thread starts."""
    wheres = [f"spec.notify[{index}].webhook" for index in range(len(specs))]
    pairs = list(zip(specs, wheres, strict=True))
    for spec, where in pairs:
        webhook_url(spec.webhook, where)
    return [WebhookNotifier(spec.webhook, where=where) for spec, where in pairs]
