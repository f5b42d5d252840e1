"""What SREs import from deploy/: the Prometheus rules pass `promtool check rules` and their unit
tests, the Alertmanager example passes `amtool check-config`, and every PromQL expression of the
rules and the Grafana dashboards returns series on a real Prometheus scraping the lab's gateway,
a rollout's controller metrics and a guard's: an expression naming a metric or label the
gateway does not export fails here, not on a team's dashboard."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from api_world import TOKENS
from binaries import require_binary
from prometheus_server import eventually, running_prometheus
from rollout_world import World
from test_guard_watch import Watched

from canaryctl.chaos.server import BackgroundServer
from canaryctl.controller import run_rollout
from canaryctl.controller.exporter import RolloutExporter
from canaryctl.guard.server import guard_app
from canaryctl.lab import LabStack
from canaryctl.runbook import Lab, parse_document

pytestmark = pytest.mark.e2e

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
RULES = DEPLOY / "prometheus" / "canaryctl.rules.yml"
DASHBOARDS = sorted((DEPLOY / "grafana").glob("*.json"))
DEFAULTS = resources.files("canaryctl") / "defaults"
METRIC_NAME = r"\b(?:llm|canaryctl|route_variant)[a-z_:0-9]*"
DASHBOARD_VARIABLES = {"$route": ".*", "$rollout": ".*", "$__rate_interval": "1m"}


def test_the_rules_pass_promtool_and_their_unit_tests() -> None:
    promtool = require_binary("promtool", package="prometheus")
    for args in (["check", "rules", RULES.name], ["test", "rules", "canaryctl.rules.test.yml"]):
        done = subprocess.run([promtool, *args], cwd=RULES.parent, capture_output=True,
                              text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr


def test_the_alertmanager_example_passes_amtool() -> None:
    amtool = require_binary("amtool", package="prometheus-alertmanager")
    config = DEPLOY / "alertmanager" / "alertmanager.yml"
    done = subprocess.run([amtool, "check-config", str(config)], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 receivers" in done.stdout


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, expression) of every panel target, with Grafana's variables as a test sets them."""
    found = []
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                expr = target["expr"]
                for variable, value in DASHBOARD_VARIABLES.items():
                    expr = expr.replace(variable, value)
                found.append((f"{path.name}: {panel['title']}", expr))
    return found


def test_every_dashboard_panel_queries_prometheus_through_the_chosen_data_source() -> None:
    assert [p.name for p in DASHBOARDS] == ["canaryctl-gateway.json", "canaryctl-rollouts.json"]
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        names = {v["name"] for v in dashboard["templating"]["list"]}
        assert "datasource" in names
        for panel in dashboard["panels"]:
            assert panel["datasource"]["uid"] == "${datasource}", (path.name, panel["title"])
            assert panel["targets"], (path.name, panel["title"])
            leftover = re.findall(r"\$\w+", " ".join(t["expr"] for t in panel["targets"]))
            assert set(leftover) <= set(DASHBOARD_VARIABLES), (path.name, leftover)


@pytest.fixture
def lab_flags(tmp_path: Path) -> Path:
    """The lab's flag, split 50/50 between GPT-4-turbo and GPT-4o-mini: two variants to chart."""
    document = json.loads((DEFAULTS / "flags.json").read_text())
    document["flags"]["support-bot-model"]["fallthrough"] = {"rollout": {"variations": [
        {"variation": 0, "weight": 50_000}, {"variation": 1, "weight": 50_000}]}}  # fmt: skip
    path = tmp_path / "flags.json"
    path.write_text(json.dumps(document))
    return path


@pytest.fixture
def controller_metrics(tmp_path: Path) -> Iterator[str]:
    """A finished rollout's controller metrics, served as `rollout run --metrics-port` does."""
    world = World(tmp_path)
    exporter = RolloutExporter(0)
    try:
        result = run_rollout(world.rollout, state_path=world.state, observers=[exporter],
                             clock=world.clock, flags=world.flags,
                             metrics=world.metrics)  # fmt: skip
        assert result.outcome == "promoted"
        yield exporter.url
    finally:
        exporter.close()


@pytest.fixture
def guard_metrics(tmp_path: Path) -> Iterator[str]:
    watched = Watched(tmp_path)
    watched.run_for(5)
    with BackgroundServer(guard_app(watched.watch, TOKENS)) as server:
        yield f"{server.url}/metrics"


def query(prometheus_url: str, expr: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": expr}, timeout=10)
    assert answer.status_code == 200, f"{expr}: {answer.text}"
    return answer.json()["data"]["result"]


def test_every_rule_and_panel_returns_series_on_lab_data(
    tmp_path: Path, lab_flags: Path, controller_metrics: str, guard_metrics: str
) -> None:
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        group["interval"] = "1s"  # the test's pace, not the expressions', changes
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    lab = parse_document((DEFAULTS / "lab.yaml").read_text(), "lab.yaml", expect=Lab)
    traffic = lab.spec.traffic.model_copy(update={"stream": 0.3})  # first-token histograms too
    lab = lab.model_copy(update={"spec": lab.spec.model_copy(update={"traffic": traffic})})
    with LabStack(lab, flags_path=lab_flags) as stack, running_prometheus(tmp_path) as prometheus:
        prometheus.rule_files = [str(tmp_path / "rules.yml")]
        prometheus.scrape(stack.metrics_url, controller_metrics, guard_metrics)
        both = 'count(sum by (variant) (increase(llm_requests_total{route="support-bot"}[1m])) > 0)'
        eventually("both variants' requests", lambda: len(query(prometheus.url, both)) == 1
                   and float(query(prometheus.url, both)[0]["value"][1]) == 2)  # fmt: skip
        recorded = [r for g in rules["groups"] for r in g["rules"] if "record" in r]
        for rule in recorded:
            eventually(f"{rule['record']} to be recorded",
                       lambda rule=rule: bool(query(prometheus.url, rule["record"])))  # fmt: skip
            assert query(prometheus.url, rule["expr"]), rule["expr"]
        shares = {r["metric"]["variant"]: float(r["value"][1])
                  for r in query(prometheus.url, "route_variant:llm_traffic_share:ratio_rate5m")}
        assert set(shares) == {"gpt-4-turbo", "gpt-4o-mini"}
        assert sum(shares.values()) == pytest.approx(1.0)
        # An alert's condition holds only in trouble (promtool's unit tests prove each fires):
        # here every series it reads must exist.
        alerts = [r for g in rules["groups"] for r in g["rules"] if "alert" in r]
        for rule in alerts:
            for name in set(re.findall(METRIC_NAME, rule["expr"])):
                assert query(prometheus.url, f'count({{__name__="{name}"}})'), (rule["alert"], name)
        for where, expr in dashboard_queries():
            eventually(f"{where}: {expr}", lambda expr=expr: bool(query(prometheus.url, expr)))
