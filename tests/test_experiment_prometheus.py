"""An experiment judged on custom PromQL by a real Prometheus: LiteLLM-style metrics from
tests/litellm_exporter.py, traffic routed by the real LaunchDarkly SDK through the flag file the
experiment splits three ways; the primary metric is the runbook's own query, asked of every
variation, and the fastest variation is decided the winner."""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from canaryctl.cli import main
from tests.litellm_exporter import Group, LiteLLMExporter, Traffic
from tests.prometheus_server import PrometheusServer, running_prometheus
from tests.test_e2e import unversioned
from tests.test_prometheus_profiles import MEAN_LATENCY

pytestmark = pytest.mark.e2e

FLAG_KEY = "support-bot-model"
DEFAULT_FLAGS = (resources.files("canaryctl") / "defaults" / "flags.json").read_bytes()


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[PrometheusServer]:
    (tmp_path / "prometheus").mkdir()
    with running_prometheus(tmp_path / "prometheus") as server:
        yield server


def test_a_custom_query_primary_metric_decides_the_fastest_of_three(
    prometheus: PrometheusServer, tmp_path: Path
) -> None:
    flags = tmp_path / "flags.json"
    flags.write_bytes(DEFAULT_FLAGS)
    groups = {
        "gpt-4-turbo": Group("exp-large", "gpt-4-turbo", seconds=1.2),
        "gpt-4o-mini": Group("exp-small", "gpt-4o-mini", seconds=0.3),
        "mixtral-8x7b": Group("exp-mixtral", "mixtral-8x7b", seconds=0.9),
    }
    document = {
        "apiVersion": "canaryctl/v1",
        "kind": "Experiment",
        "metadata": {"name": "custom-latency"},
        "spec": {
            "flag": {"provider": "file", "path": str(flags), "key": FLAG_KEY},
            "variations": [
                {"value": "gpt-4-turbo", "weight": 40, "control": True},
                {"value": "gpt-4o-mini", "weight": 30},
                {"value": "mixtral-8x7b", "weight": 30},
            ],
            "metrics": {"provider": "prometheus", "url": prometheus.url, "profile": "litellm",
                        "variants": {v: g.name for v, g in groups.items()}},
            "primary": {"name": "mean_latency_seconds", "query": MEAN_LATENCY,
                        "higher_is_better": False},
            "guards": [{"metric": "error_rate", "max_increase": 0.05}],
            "until": "decided", "max": "90s", "interval": "2s", "min_samples": 3,
        },
    }  # fmt: skip
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(document))
    exporter = LiteLLMExporter()
    try:
        prometheus.scrape(exporter.url)
        with Traffic(exporter, str(flags), FLAG_KEY, groups):
            prometheus.has_traffic(groups["gpt-4-turbo"].name)
            state = str(tmp_path / "state.db")
            result = CliRunner().invoke(main, ["experiment", "run", str(path), "--state", state,
                                               "-o", "json"])  # fmt: skip
    finally:
        exporter.close()

    assert result.exit_code == 0, result.output
    finish = json.loads(result.output.splitlines()[-1])
    assert finish["winner"] == "gpt-4o-mini" and finish["promoted"] is False
    assert unversioned(flags.read_text()) == unversioned(DEFAULT_FLAGS.decode())  # restored

    status = json.loads(CliRunner().invoke(main, ["experiment", "status", "--state", state,
                                                  "-o", "json"]).output)  # fmt: skip
    summary = status["summary"]
    levels = summary["levels"]["mean_latency_seconds"]["all"]
    assert levels["gpt-4o-mini"] == pytest.approx(0.3, abs=0.05)
    assert levels["gpt-4-turbo"] == pytest.approx(1.2, abs=0.1)
    mini = next(
        e
        for e in summary["effects"]
        if e["metric"] == "mean_latency_seconds" and e["variation"] == "gpt-4o-mini"
    )
    assert mini["estimate"] == pytest.approx(0.3 - 1.2, abs=0.1)
    assert mini["low"] <= mini["estimate"] <= mini["high"] < 0  # shown faster than the control
    assert "better on mean_latency_seconds than every other" in summary["standing"]["gpt-4o-mini"]
