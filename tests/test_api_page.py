"""The live page at `GET /` in headless Chromium: it reads the JSON API with the token from the
address's fragment, draws the report's chart for the chosen run with its SLO verdicts and the
reason of each decision, and keeps refreshing without reloading: a run written to the store
after the page loaded appears on it, and the page was fetched once."""

from __future__ import annotations

import re
import subprocess
import threading
from pathlib import Path

from binaries import require_binary

from canaryctl.controller import StateStore
from canaryctl.flags.base import FlagSnapshot
from tests.api_world import VIEWER, api_server, rolled_back


class CountingStore:
    """Opens the real store; after the page's first refresh, another controller starts run 2."""

    def __init__(self, path: Path, runbook: dict[str, object], verdict: dict[str, object]) -> None:
        self.path, self.runbook, self.verdict = path, runbook, verdict
        self.opened = 0
        self._lock = threading.Lock()

    def __call__(self) -> StateStore:
        with self._lock:
            self.opened += 1
            if self.opened == 3:  # the first refresh read the list and run 1
                with StateStore(self.path) as store:
                    run = store.create_run(
                        name="late-arrival",
                        runbook=self.runbook,
                        host="other",
                        pid=1,
                        version="test",
                        started_at=1.7e9,
                        prior_flag=FlagSnapshot("support-bot-model", 1, {}),
                        phase="progressing",
                        state={"weight": 25, "item": 0},
                    )
                    store.record_event(
                        run,
                        "phase",
                        {"from": "pending", "to": "paused", "reason": "holding 25% for review"},
                        at=1.7e9 + 5,
                    )
                    store.record_event(run, "analysis", self.verdict, at=1.7e9 + 10)  # fmt: skip
        return StateStore(self.path)


def test_the_live_page_draws_the_runs_and_refreshes_without_reloading(tmp_path: Path) -> None:
    chromium = require_binary("chromium", "chromium-browser", package="chromium")
    world = rolled_back(tmp_path)
    with StateStore(world.state) as store:
        runbook = store.run(1).runbook  # type: ignore[union-attr]
        verdict = {**store.events(1, "analysis")[-1].data, "weight": 25}
    opener = CountingStore(world.state, runbook, verdict)
    with api_server(world.state, opener) as server:
        done = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
             "--virtual-time-budget=15000", f"{server.url}/#token={VIEWER}"],
            capture_output=True, text=True, timeout=120, cwd=tmp_path,
        )  # fmt: skip
    dom = done.stdout
    assert '<table id="runs">' in dom or 'id="runs"' in dom, done.stderr[-2000:]
    refreshes = int(re.search(r'data-refreshes="(\d+)"', dom).group(1))  # type: ignore[union-attr]
    assert refreshes >= 2
    # Run 2 arrived after the first refresh: shown, and chosen because it is still running.
    rows = re.findall(r'<tr data-run-id="(\d+)"', dom)
    assert rows == ["2", "1"], rows
    assert "late-arrival" in dom and "Run 2 · late-arrival · progressing" in dom
    assert opener.opened >= 3 + 2  # more refreshes after the run arrived
    # The chart is the report's drawing of run 2.
    assert dom.count('<svg xmlns="http://www.w3.org/2000/svg" class="timeline"') == 1
    # Both roles in both panels, as the report draws them: the baseline beside the canary.
    assert dom.count('class="series baseline"') == 2 and dom.count('class="series canary"') == 2
    # Its verdicts and the reason of its decision, as text.
    slos = re.search(r'<table id="slos">(.*?)</table>', dom, re.S).group(1)  # type: ignore[union-attr]
    assert slos.count("<tr>") == 1 + 2 and '<span class="fail">fail</span>' in slos
    assert "error_rate = 0.05 is above the maximum 0.02" in slos
    decisions = re.findall(r'<tr class="decision"><td>[^<]*</td><td>([^<]*)</td><td>([^<]*)</td>',
                           dom)  # fmt: skip
    assert decisions == [("pending → paused", "holding 25% for review")]
    assert re.search(r'<p id="status">updated \d\d:\d\d:\d\dZ</p>', dom)


def test_without_a_token_the_page_says_the_api_refused_it(tmp_path: Path) -> None:
    chromium = require_binary("chromium", "chromium-browser", package="chromium")
    world = rolled_back(tmp_path)
    with api_server(world.state) as server:
        dom = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
             "--virtual-time-budget=5000", f"{server.url}/"],
            capture_output=True, text=True, timeout=120, cwd=tmp_path,
        ).stdout  # fmt: skip
    assert '<p id="status">cannot read the API: 401: a bearer token is needed' in dom
    assert "data-run-id" not in dom
