"""A chaos test world on loopback: a lab primary behind the fault proxy, a lab backup, the gateway
(route `bot`) whose flag serves `primary` (falls back to `backup`) or `primary-direct` (does not),
and traffic. Shared by the scenario and drill tests.

A scenario's windows are seconds of wall time, and a loaded machine's lab sends fewer requests in
them than asked: a 2 s window short of `min_requests` made the steady state "not steady" (and an
"after" window short of them, "violated"). `World.count_windows` gives the scenarios run in this
process a clock whose every sleep also waits for enough answers, so each window holds enough
requests by construction, whatever the machine's pace.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

import canaryctl.metrics.factory
from canaryctl.chaos import BackgroundServer, ChaosClient, create_proxy_app
from canaryctl.lab import LabStack
from canaryctl.lab.provider import SimulatedProvider
from canaryctl.runbook import LabSpec
from canaryctl.runbook.lab import ProviderProfile

TOKEN = "scenario-test-token"
FLAG = "support-bot-model"
EXAMPLE = Path(__file__).parent.parent / "scenarios" / "primary-503.yaml"
MIN_REQUESTS = 20
"""The scenarios' `min_requests`: fewer in a window, no verdict."""
CONCURRENCY = 32
"""The lab traffic's requests in flight at most."""
STALL = 120.0
"""Seconds a counted sleep waits for answers before it calls the lab's traffic stalled."""


class CountedClock:
    """Scenario time that passes only while the scenario sleeps, by the seconds it asks; each
    sleep lasts those seconds of wall time AND until the lab's traffic has `answers` more
    answers. A window starts at a sample taken before a sleep and ends at one after it, so it
    holds at least `answers` less what was in flight when the first was taken. Judging takes no
    scenario time, so a duration holds as many checks as on a quiet machine."""

    def __init__(self, stack: LabStack, answers: int) -> None:
        assert stack.traffic is not None
        self._traffic, self._answers = stack.traffic, answers
        self._now = time.time()

    def now(self) -> float:
        return self._now

    def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        start = self._answered()
        time.sleep(seconds)
        deadline = time.monotonic() + STALL
        while self._answered() - start < self._answers:
            if time.monotonic() > deadline:
                raise AssertionError(f"the lab's traffic stalled for {STALL:g} s")
            time.sleep(0.02)
        self._now += seconds

    def _answered(self) -> int:
        return sum(self._traffic.snapshot().by_outcome.values())


def write_flag(path: Path, serve: int) -> None:
    flag = {
        "key": FLAG,
        "on": True,
        "variations": ["primary", "primary-direct"],
        "fallthrough": {"variation": serve},
        "offVariation": 0,
        "version": serve + int(time.time()),
        "salt": FLAG,
        "targets": [],
        "contextTargets": [],
        "rules": [],
        "prerequisites": [],
        "trackEvents": False,
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"flags": {FLAG: flag}, "segments": {}}))
    tmp.replace(path)


class World:
    def __init__(self, tmp: Path, proxy_url: str, stack: LabStack, token: str = TOKEN) -> None:
        self.tmp, self.proxy_url, self.stack = tmp, proxy_url, stack
        self.flags = tmp / "flags.json"
        self.admin = ChaosClient(proxy_url, token)

    def serve(self, variant: str) -> None:
        """Point the route at `primary` (with fallback) or `primary-direct` (without)."""
        write_flag(self.flags, ["primary", "primary-direct"].index(variant))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.stack.traffic and self.stack.traffic.snapshot().by_variant.get(variant):
                before = sum(self.stack.traffic.snapshot().by_variant[variant].values())
                time.sleep(0.5)
                if sum(self.stack.traffic.snapshot().by_variant[variant].values()) > before:
                    return
            time.sleep(0.1)
        raise AssertionError(f"the gateway never served {variant}")

    def scenario(
        self, name: str = "scenario", *, min_requests: int = MIN_REQUESTS, **spec: Any
    ) -> Path:
        """The shipped example, aimed at this world and shortened to seconds."""
        document = yaml.safe_load(EXAMPLE.read_text())
        document["spec"]["target"]["url"] = self.proxy_url
        document["spec"]["hypothesis"].update(
            metrics={"provider": "scrape", "targets": [self.stack.metrics_url], "route": "bot"},
            window="2s",
            interval="1s",
            min_requests=min_requests,
        )
        document["spec"].update({"duration": "4s", "settle": "1s", "recovery": "1s", **spec})
        path = self.tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump(document))
        return path

    def count_windows(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Scenarios played in this process (`chaos run` through CliRunner, a rollout's chaos
        step) take a CountedClock, and their metrics read it (a source made with a clock of its
        own, a rollout's, keeps it): each window then holds at least MIN_REQUESTS answers (the
        in-flight ones it may miss are added to what is waited for)."""
        clock = CountedClock(self.stack, MIN_REQUESTS + CONCURRENCY)
        monkeypatch.setattr("canaryctl.chaos.scenario.SystemClock", lambda: clock)
        sources = canaryctl.metrics.factory.metrics_source_for

        def on_the_clock(spec: Any, **options: Any) -> Any:
            return sources(spec, **{"clock": clock.now, **options})

        monkeypatch.setattr(canaryctl.metrics.factory, "metrics_source_for", on_the_clock)


@contextmanager
def chaos_world(tmp: Path, token: str = TOKEN) -> Iterator[World]:
    """The world above; `token` is the proxy's admin token."""
    profile = ProviderProfile.model_validate(
        {"name": "primary", "latency": {"median": 0.05, "p95": 0.15}}
    )
    with BackgroundServer(SimulatedProvider(profile).app) as primary:
        proxy = BackgroundServer(create_proxy_app(primary.url, token=token))
        with proxy:
            write_flag(tmp / "flags.json", 0)
            lab = LabSpec.model_validate(
                {
                    "providers": [{"name": "backup", "latency": {"median": 0.05, "p95": 0.15}}],
                    "gateway": {
                        "listen": "127.0.0.1:0",
                        "flags": {
                            "provider": "file",
                            "path": str(tmp / "flags.json"),
                            "poll_interval": 0.1,
                        },
                        "routes": [{"name": "bot", "flag": FLAG, "default_model": "primary"}],
                        "models": [
                            {"name": "primary", "base_url": proxy.url, "fallback": ["backup"]},
                            {
                                "name": "primary-direct",
                                "base_url": proxy.url,
                                "upstream_model": "primary",
                            },
                            {"name": "backup", "base_url": "lab://backup"},
                        ],
                    },
                    "traffic": {
                        "route": "bot",
                        "rate": 40,
                        "users": 100,
                        "concurrency": CONCURRENCY,
                    },
                }
            )
            with LabStack(lab) as stack:
                yield World(tmp, proxy.url, stack, token)
