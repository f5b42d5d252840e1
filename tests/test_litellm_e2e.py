"""canaryctl judging a rollout from a real LiteLLM proxy's own `/metrics`, through the shipped
`litellm` profile, with no canaryctl gateway in the path.

The app (examples/openai_otel_app.py) asks the flag for a model per request and calls LiteLLM's
model group of that name with the official OpenAI client; LiteLLM (the release pinned in
benchmarks/litellm_env.py, no database, `callbacks: [prometheus]`) calls the lab's providers; a
real Prometheus scrapes LiteLLM. A canary group failing half its calls is rolled back and a
healthy one promoted. tests/litellm_exporter.py stays the fast stand-in for the other profile
tests; this file is the check that the stand-in's names are LiteLLM's.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from binaries import require_pip_program
from click.testing import CliRunner
from loopback import free_port
from prometheus_server import PrometheusServer, running_prometheus

from canaryctl.cli import main
from canaryctl.lab import LabStack

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "examples" / "openai_otel_app.py"
FAST = {"median": 0.01, "p95": 0.03}
FLAG = "model-flag"
START_BOUND = 180.0
MIN_CALLS = 20
"""The runbook's min_requests: the fewest calls the decided window holds."""
GROUPS = ("base", "good", "bad")
"""LiteLLM's model groups, named as the flag's variations, so its `requested_model` label is
the variant with no `metrics.variants` mapping."""


def litellm_program() -> str:
    spec = importlib.util.spec_from_file_location(
        "litellm_env", ROOT / "benchmarks" / "litellm_env.py"
    )
    assert spec is not None and spec.loader is not None
    env = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(env)
    return require_pip_program(
        "litellm", env.LITELLM_VENV / "bin", install="python benchmarks/litellm_env.py"
    )


def litellm_config(path: Path, providers: dict[str, str]) -> Path:
    """The proxy as a team would run it for this: one model group per flag variation, no
    retries, no cooldowns (a failing deployment keeps being called, so its errors are counted
    as the users see them) and the metrics endpoint open to Prometheus."""
    config = {
        "model_list": [
            {
                "model_name": name,
                "litellm_params": {
                    "model": f"openai/{name}",
                    "api_base": f"{providers[name]}/v1",
                    "api_key": "lab",
                    "input_cost_per_token": 1e-6,
                    "output_cost_per_token": 2e-6,
                },
            }
            for name in GROUPS
        ],
        "router_settings": {"num_retries": 0, "disable_cooldowns": True},
        "litellm_settings": {
            "callbacks": ["prometheus"],
            "require_auth_for_metrics_endpoint": False,
            "num_retries": 0,
            "telemetry": False,
        },
        "general_settings": {},
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def world(
    tmp_path: Path, make_lab: Callable[..., Any], write_flags: Callable[..., Path]
) -> Iterator[tuple[Path, PrometheusServer]]:
    litellm = litellm_program()
    flags = write_flags(list(GROUPS))
    lab = make_lab([
        {"name": "base", "latency": FAST},
        {"name": "good", "latency": FAST},
        {"name": "bad", "latency": FAST, "errors": {"rate": 0.5, "kinds": {"500": 1.0}}},
    ])  # fmt: skip
    key = f"sk-{secrets.token_hex(16)}"
    proxy_port, app_port = free_port(), free_port()
    env = {**os.environ, "LITELLM_MASTER_KEY": key, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False"}  # fmt: skip
    env.pop("DATABASE_URL", None)
    with LabStack(lab, flags_path=flags, traffic=False) as stack:
        config = litellm_config(tmp_path / "litellm.yaml", stack.provider_urls)
        proxy = subprocess.Popen(
            [litellm, "--config", str(config), "--host", "127.0.0.1", "--port", str(proxy_port),
             "--num_workers", "1"],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=(tmp_path / "litellm.log").open("wb"),
        )  # fmt: skip
        app = None
        try:
            proxy_url = f"http://127.0.0.1:{proxy_port}"
            _wait_ready(proxy, proxy_url)
            app = subprocess.Popen(
                [sys.executable, str(APP), "--flags", str(flags), "--flag", FLAG,
                 *(f"--model={name}={proxy_url}/v1" for name in GROUPS),
                 "--metrics-port", str(app_port), "--rate", "12"],
                env={**os.environ, "OPENAI_API_KEY": key}, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=(tmp_path / "app.log").open("wb"),
            )  # fmt: skip
            with running_prometheus(tmp_path) as prometheus:
                # /metrics redirects here; 2 s each, as LiteLLM's single worker answers its
                # metrics behind the app's traffic, past 1 s when the machine is loaded
                prometheus.scrape(f"{proxy_url}/metrics/", every=2.0)
                prometheus.has_traffic("base")
                yield flags, prometheus
        finally:
            for process in (app, proxy):
                if process is not None:
                    stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:  # never leave a proxy behind for the next test
        process.kill()
        process.wait()


def _wait_ready(proxy: subprocess.Popen[bytes], url: str) -> None:
    """Until the proxy answers its liveness probe; LiteLLM imports for tens of seconds on a
    busy machine, so the bound is wide and the test fails at once if the proxy exits."""
    deadline = time.monotonic() + START_BOUND
    while time.monotonic() < deadline:
        if proxy.poll() is not None:
            pytest.fail(f"LiteLLM's proxy exited with {proxy.returncode} (see litellm.log)")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health/liveliness", timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    pytest.fail(f"LiteLLM's proxy did not start within {START_BOUND:g} s")


def rollout(tmp_path: Path, prometheus: PrometheusServer, flags: Path, canary: str) -> Path:
    document = {
        "apiVersion": "canaryctl/v1",
        "kind": "Rollout",
        "metadata": {"name": f"to-{canary}"},
        "spec": {
            "flag": {"provider": "file", "path": str(flags), "key": FLAG, "baseline": "base",
                     "canary": canary},
            "metrics": {"provider": "prometheus", "url": prometheus.url, "profile": "litellm"},
            "slos": [{"metric": "error_rate", "max": 0.05},
                     {"metric": "latency_p95_seconds", "max": 2.0},
                     {"metric": "cost_per_query_usd", "max": 0.01}],
            # min_requests: 20 calls, so the failing canary's window holds both failures and
            # successes but with probability 0.5^20 < 1e-6 (at 10 it was 1e-3)
            "analysis": {"interval": "3s", "min_requests": MIN_CALLS, "method": "threshold",
                         "failure_limit": 0, "inconclusive_limit": 60},
            "steps": [{"set_weight": 50}, {"pause": "9s"}, {"set_weight": 100}, {"pause": "6s"}],
        },
    }  # fmt: skip
    path = tmp_path / f"{canary}.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def run(runbook: Path, state: Path) -> tuple[int, list[dict[str, Any]]]:
    done = CliRunner().invoke(main, ["rollout", "run", str(runbook), "--state", str(state),
                                     "-o", "json"])  # fmt: skip
    events = [json.loads(line) for line in done.output.splitlines() if line.startswith("{")]
    return done.exit_code, events


def last_checks(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    last = next(e for e in reversed(events) if e["event"] == "analysis")
    return {check["metric"]: check for check in last["checks"]}


def test_a_real_litellm_proxy_rolls_a_failing_canary_back_and_promotes_a_healthy_one(
    tmp_path: Path, world: tuple[Path, PrometheusServer]
) -> None:
    flags, prometheus = world
    code, events = run(rollout(tmp_path, prometheus, flags, "bad"), tmp_path / "bad.db")
    assert code == 1, events[-1:]
    assert events[-1]["outcome"] == "rolled_back"
    failed = last_checks(events)["error_rate"]
    assert failed["outcome"] == "fail"
    # The lab fails half its calls. The window the rollback was decided on holds at least
    # MIN_CALLS of them, but as Prometheus's increase() extrapolates each counter over the
    # window (an error series born inside it differently from the total), its share is not a
    # count's: no band around 0.5 holds by law (CI drew 0.197 once). What the names must give
    # is both kinds of answer: failures (the check failed) and successes (the share is below
    # 1; every call of the window failing has probability 0.5 to the power of its calls).
    assert failed["canary_requests"] >= MIN_CALLS
    assert 0.05 < failed["canary_value"] < 1, failed

    code, events = run(rollout(tmp_path, prometheus, flags, "good"), tmp_path / "good.db")
    assert code == 0, events[-1:]
    assert events[-1]["outcome"] == "promoted"
    # Every SLO was measured through LiteLLM's own names: none judged on a missing value.
    judged = last_checks(events)
    for metric in ("error_rate", "latency_p95_seconds", "cost_per_query_usd"):
        assert judged[metric]["outcome"] == "pass", judged[metric]
        assert judged[metric]["canary_value"] is not None, metric
    assert judged["cost_per_query_usd"]["canary_value"] > 0  # priced in the proxy's config
