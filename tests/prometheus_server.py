"""A real Prometheus server for tests (Debian's `prometheus` binary), on a free loopback port.

It runs with its own storage and a generated config scraping every second; `scrape(urls)` sets
the targets by rewriting the config and reloading. Without the binary, tests using it skip
locally and FAIL in CI (env CI set), where .ci/run installs it.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import yaml
from binaries import require_binary
from loopback import free_port

WAIT = 60.0
"""Seconds to wait for Prometheus to catch up before a test fails: a bound, not an assertion."""


def eventually(what: str, condition: Callable[[], bool]) -> None:
    """Poll until `condition` holds; fail naming `what` if it never does within WAIT."""
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.2)


class PrometheusServer:
    """A running Prometheus; `scrape(urls)` points it at metrics endpoints and waits until up."""

    def __init__(self, binary: str, workdir: Path, *, data: Path | None = None) -> None:
        """`data`: a TSDB directory to serve (backfilled by promtool), kept for 30 days."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._config = workdir / "prometheus.yml"
        self._write_config([])
        self._log = (workdir / "prometheus.log").open("wb")
        self._process = subprocess.Popen(
            [
                binary,
                f"--config.file={self._config}",
                f"--storage.tsdb.path={data if data is not None else workdir / 'data'}",
                "--storage.tsdb.retention.time=30d",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        eventually("Prometheus to be ready", self._ready)

    def _ready(self) -> bool:
        if self._process.poll() is not None:
            pytest.fail(f"prometheus exited with {self._process.returncode}; see {self._log.name}")
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    rule_files: list[str] = []
    """Rule files the config loads (set before `scrape`, which reloads it)."""

    def _write_config(self, urls: list[str], job: str | None = None, every: float = 1.0) -> None:
        jobs = []
        for i, url in enumerate(urls):
            parsed = httpx.URL(url)
            target = {"targets": [f"{parsed.host}:{parsed.port}"]}
            name = job or f"target-{i}"
            jobs.append({"job_name": name, "metrics_path": parsed.path, "static_configs": [target],
                         "scrape_interval": f"{every:g}s", "scrape_timeout": f"{every:g}s"})
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": jobs,
            "rule_files": self.rule_files,
        }
        self._config.write_text(yaml.safe_dump(config))

    def scrape(self, *urls: str, job: str | None = None, every: float = 1.0) -> None:
        """Scrape `urls` (and nothing else) every `every` seconds, each scrape given as long;
        `job` names the scrape job of a single URL (its `job` label, which a runbook's selector
        may name). A slow target (a Python proxy on a loaded machine) needs a longer `every`:
        Prometheus counts a scrape past its timeout as the target down."""
        if job is not None and len(urls) != 1:
            raise ValueError("a job name is for one URL")
        self._write_config(list(urls), job, every)
        httpx.post(f"{self.url}/-/reload", timeout=5).raise_for_status()
        try:
            eventually(f"Prometheus to scrape {urls}", lambda: self.up() >= len(urls))
        except pytest.fail.Exception as failed:  # say why, in Prometheus's words
            raise pytest.fail.Exception(f"{failed}: {self.target_errors()}") from None

    def target_errors(self) -> list[str]:
        """Each active target's health and last scrape error, as Prometheus reports them."""
        answer = httpx.get(f"{self.url}/api/v1/targets", timeout=5).json()
        return [
            f"{t['scrapeUrl']}: {t['health']} ({t.get('lastError') or 'no error'}, "
            f"{t.get('lastScrapeDuration', 0):.2f} s)"
            for t in answer["data"]["activeTargets"]
        ]

    def up(self) -> int:
        """How many targets are up now, per Prometheus."""
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": "sum(up)"}, timeout=5)
        result = answer.json()["data"]["result"]
        return int(float(result[0]["value"][1])) if result else 0

    def value(self, query: str) -> float | None:
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": query}, timeout=5)
        result = answer.json()["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    def sample_times(self, series: str, seconds: int, at: float | None = None) -> list[float]:
        """When Prometheus sampled `series` (a selector; its first series, as every series of
        one target is sampled at once) in the `seconds` before `at` (now when None): the samples
        an increase() over that range reads."""
        params: dict[str, str] = {"query": f"{series}[{seconds}s]"}
        if at is not None:
            params["time"] = f"{at:.3f}"
        answer = httpx.get(f"{self.url}/api/v1/query", params=params, timeout=5)
        result = answer.json()["data"]["result"]
        return [float(t) for t, _ in result[0]["values"]] if result else []

    def scraped_after(self, series: str, since: float, scrapes: int = 1) -> None:
        """Wait until Prometheus holds `scrapes` samples of `series` taken after `since` (wall
        clock), however slowly a loaded machine lets it scrape: each read what was there then."""
        eventually(
            f"{scrapes} scrape(s) of {series} after {since:.3f}",
            lambda: sum(t > since for t in self.sample_times(series, 60)) >= scrapes,
        )

    def has_traffic(self, model_group: str) -> None:
        """Wait until Prometheus has seen a LiteLLM model group's requests grow, as a route with
        traffic has before a rollout starts (preflight asks for that)."""
        query = (
            'sum(increase({__name__=~"litellm_proxy_total_requests(_metric)?_total", '
            f'requested_model="{model_group}"}}[1m]))'
        )
        eventually(
            f"Prometheus to see {model_group}'s requests", lambda: (self.value(query) or 0) > 0
        )

    def kill(self) -> None:
        """SIGKILL, as a crashed or OOM-killed Prometheus goes: no goodbye on open sockets."""
        self._process.kill()
        self._process.wait()

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._log.close()


@contextmanager
def running_prometheus(workdir: Path, *, data: Path | None = None) -> Iterator[PrometheusServer]:
    binary = require_binary("prometheus", package="prometheus")
    server = PrometheusServer(binary, workdir, data=data)
    try:
        yield server
    finally:
        server.stop()
