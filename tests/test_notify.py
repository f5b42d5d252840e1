"""Notifications: webhooks hear start, steps, rollback and the end, and never slow a rollback."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from loopback import free_port

from canaryctl.controller import Phase, RolloutObserver, RunResult, StateStore, run_rollout
from canaryctl.errors import InvalidInput
from canaryctl.flags.base import Split
from canaryctl.notify import WebhookNotifier
from canaryctl.runbook.notify import NotifyWebhookSpec
from tests.rollout_world import World

WAIT = 30.0
"""A bound on waiting for another thread, never an assertion about speed."""


class Webhook:
    """A loopback endpoint that records bodies; with `hang`, holds each until `release`."""

    def __init__(self, *, hang: bool = False) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.timeline: list[str] = []
        self.received = threading.Event()
        self.release = threading.Event()
        if not hang:
            self.release.set()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                hook.bodies.append(body)
                hook.timeline.append(f"webhook received {body.get('event', 'slack')}")
                hook.received.set()
                hook.release.wait(WAIT)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook?token=s3cret"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook(hang=True)
    yield hook
    hook.close()


class Referee(RolloutObserver):
    """Holds the rollback until the webhook is stuck, then notes when the flag is safe."""

    def __init__(self, hook: Webhook, world: World) -> None:
        self.hook, self.world = hook, world

    def on_phase(self, run_id: int, phase: Phase, reason: str) -> None:
        if phase is Phase.ROLLING_BACK:
            assert self.hook.received.wait(WAIT), "the notifier never reached the webhook"

    def on_weight(self, run_id: int, before: Split, after: Split) -> None:
        if after.canary == 0 and before.canary > 0:
            self.hook.timeline.append("flag restored")

    def on_finish(self, result: RunResult) -> None:
        assert not self.hook.release.is_set()
        self.hook.timeline.append("webhook released")
        self.hook.release.set()


def test_a_hanging_webhook_does_not_delay_a_rollback(tmp_path: Path, webhook: Webhook) -> None:
    world = World(tmp_path, notify=[{"webhook": {"url": webhook.url, "timeout": "30s"}}])
    world.canary_error_rate = 0.1
    result = run_rollout(
        world.rollout,
        state_path=world.state,
        observers=[Referee(webhook, world)],
        clock=world.clock,
        flags=world.flags,
        metrics=world.metrics,
    )
    assert result.outcome == "rolled_back"
    assert world.flags.snapshot().raw == world.prior
    # The flag went back while the webhook still held the very first notification.
    assert webhook.timeline[:3] == ["webhook received start", "flag restored", "webhook released"]
    # Once released, the queue drained in order (run_rollout closes the notifier).
    events = [b["event"] for b in webhook.bodies]
    assert events == ["start", "step", "step", "rollback", "finish"]  # 10%, then its pause
    rollback, finish = webhook.bodies[-2:]
    assert "error_rate = 0.1 is above the maximum 0.02" in rollback["reason"]
    assert rollback["weight"] == 10
    assert finish["outcome"] == "rolled_back" and finish["exit_code"] == 1
    assert finish["final_split"] == {"baseline": 100.0, "canary": 0.0}
    assert finish["last_verdict"]["outcome"] == "fail"
    assert finish["text"].startswith("canaryctl rollout support-bot (run 1) rolled back (exit 1)")


def test_a_webhook_that_is_down_costs_the_rollout_nothing(tmp_path: Path) -> None:
    world = World(tmp_path)
    slept: list[float] = []
    notifier = WebhookNotifier(
        NotifyWebhookSpec(url=f"http://127.0.0.1:{free_port()}/"), sleep=slept.append
    )
    steps: list[int] = []

    class Steps(RolloutObserver):
        def on_step(self, run_id: int, index: int, total: int, item: object) -> None:
            steps.append(index)

    result = run_rollout(
        world.rollout,
        state_path=world.state,
        observers=[notifier, Steps()],
        clock=world.clock,
        flags=world.flags,
        metrics=world.metrics,
    )
    notifier.close(WAIT)
    assert result.outcome == "promoted" and world.canary() == 100
    assert (notifier.sent, notifier.failed) == (0, 1 + len(steps) + 1)  # start, steps, promotion
    assert len(slept) == 3 * notifier.failed  # each retried, from the sending thread only


def test_a_notification_is_retried_through_a_5xx_but_not_a_4xx(tmp_path: Path) -> None:
    answers = [503, 502, 200, 404]
    posted: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        posted.append(answers[len(posted)])
        return httpx.Response(posted[-1])

    spec = NotifyWebhookSpec(url="http://hooks.test/x", events=["start", "promotion"])
    client = httpx.Client(transport=httpx.MockTransport(handler))
    notifier = WebhookNotifier(spec, client, sleep=lambda _: None)
    world = World(tmp_path)
    run_rollout(
        world.rollout,
        state_path=world.state,
        observers=[notifier],
        clock=world.clock,
        flags=world.flags,
        metrics=world.metrics,
    )
    notifier.close(WAIT)
    assert posted == [503, 502, 200, 404]  # start: third attempt; promotion: refused, once
    assert (notifier.sent, notifier.failed) == (1, 1)


def test_slack_format_and_event_filter(tmp_path: Path) -> None:
    hook = Webhook()
    try:
        world = World(tmp_path)
        spec = NotifyWebhookSpec(url=hook.url, format="slack", events=["promotion"])
        notifier = WebhookNotifier(spec)
        run_rollout(
            world.rollout,
            state_path=world.state,
            observers=[notifier],
            clock=world.clock,
            flags=world.flags,
            metrics=world.metrics,
        )
        notifier.close(WAIT)
    finally:
        hook.close()
    assert notifier.sent == 1
    (message,) = hook.bodies
    assert set(message) == {"text", "blocks"}
    assert message["text"] == "canaryctl rollout support-bot (run 1) promoted (exit 0)"
    assert message["blocks"][0]["type"] == "section"
    assert message["blocks"][0]["text"]["text"].startswith(":white_check_mark: canaryctl")
    assert message["blocks"][-1]["type"] == "context"


def test_notify_urls_and_headers_are_redacted_in_the_journal(tmp_path: Path) -> None:
    hook = Webhook()
    try:
        webhook = {"url": hook.url, "headers": {"Authorization": "Bearer s3cret"}}
        world = World(tmp_path, notify=[{"webhook": webhook}])
        run_rollout(
            world.rollout,
            state_path=world.state,
            clock=world.clock,
            flags=world.flags,
            metrics=world.metrics,
        )
    finally:
        hook.close()
    with StateStore(world.state) as store:
        record = store.run(1)
    assert record is not None
    assert "s3cret" not in json.dumps(record.runbook)
    assert hook.bodies[0]["event"] == "start"


def test_a_url_from_the_environment_is_used_and_never_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = Webhook()
    monkeypatch.setenv("ROLLOUT_HOOK_URL", hook.url)
    try:
        world = World(tmp_path, notify=[{"webhook": {"url_env": "ROLLOUT_HOOK_URL"}}])
        run_rollout(
            world.rollout,
            state_path=world.state,
            clock=world.clock,
            flags=world.flags,
            metrics=world.metrics,
        )
    finally:
        hook.close()
    assert [b["event"] for b in hook.bodies][-1] == "promotion"
    with StateStore(world.state) as store:
        record = store.run(1)
    assert record is not None
    assert str(hook.server.server_address[1]) not in json.dumps(record.runbook)


def test_a_missing_url_variable_stops_the_run_before_anything_moves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ROLLOUT_HOOK_URL", raising=False)
    world = World(tmp_path, notify=[{"webhook": {"url_env": "ROLLOUT_HOOK_URL"}}])
    with pytest.raises(InvalidInput, match="environment variable ROLLOUT_HOOK_URL is not set"):
        run_rollout(
            world.rollout,
            state_path=world.state,
            clock=world.clock,
            flags=world.flags,
            metrics=world.metrics,
        )
    assert world.flags.snapshot().raw == world.prior
