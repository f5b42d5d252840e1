"""The examples in runbooks/ come with what they need: each Rollout that reads a lab's gateway
names a lab document beside it whose gateway listens where the runbook looks, serves the routes
and flags it moves, and exports the families its SLOs read. Each runs end to end here: the
rollouts and the experiment on their labs, the guard on runbooks/guard/lab.yaml, the LiteLLM
rollout on the LiteLLM stand-in through a real Prometheus, the chaos scenario of scenarios/ on
its lab through the fault proxy; the Gateway examples are started by
tests/test_examples_gateways.py, and examples/*.py are run by tests/test_otel_genai_e2e.py and
tests/test_litellm_e2e.py.

Where a lab listens and where its runbooks look is one place, `CANARYCTL_GATEWAY` (and, for the
chaos lab, the proxy's and its upstream's variables): the runs here set them to free ports, as a
person whose 8080 is taken would, and never rewrite an address."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from click.testing import CliRunner
from litellm_exporter import Group, LiteLLMExporter, Traffic
from loopback import free_port
from prometheus_client.parser import text_string_to_metric_families
from prometheus_server import running_prometheus

from canaryctl.cli.main import main
from canaryctl.controller import StateStore
from canaryctl.guard import GuardJournal
from canaryctl.lab import LabStack
from canaryctl.runbook import Lab, Rollout, load_document, parse_document
from canaryctl.runbook.loader import parse_yaml
from tests.test_guard_e2e import guard_process, wait_for
from tests.test_notify import Webhook

ROOT = Path(__file__).resolve().parent.parent
RUNBOOKS = ROOT / "runbooks"
SHADOW = RUNBOOKS / "shadow"
EXAMPLES = sorted([*RUNBOOKS.rglob("*.yaml"), *(ROOT / "scenarios").glob("*.yaml")])


@pytest.fixture
def gateway(monkeypatch: pytest.MonkeyPatch) -> str:
    """A free port for the example lab's gateway, given where every example reads it."""
    address = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("CANARYCTL_GATEWAY", address)
    return address


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_example_takes_the_gateways_address_from_one_place(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each lab and Gateway example listens, and each runbook looks, where CANARYCTL_GATEWAY
    says, and at 127.0.0.1:8080 when it is unset: moving the lab moves every example."""
    _, data = parse_yaml(path.read_text(), str(path))
    monkeypatch.setenv("CANARYCTL_GATEWAY", "127.0.0.1:18080")
    moved = load_document(path)
    monkeypatch.delenv("CANARYCTL_GATEWAY")
    shipped = load_document(path)
    for document, address in ((moved, "127.0.0.1:18080"), (shipped, "127.0.0.1:8080")):
        spec: Any = document.spec  # type: ignore[attr-defined]
        gateway = getattr(spec, "gateway", None) or (spec if data["kind"] == "Gateway" else None)
        metrics = getattr(spec, "metrics", None) or getattr(
            getattr(spec, "hypothesis", None), "metrics", None
        )
        if gateway is not None:
            assert gateway.listen == address
        elif metrics is not None and metrics.provider == "scrape":
            assert metrics.targets == [f"http://{address}/metrics"]
        else:  # the LiteLLM rollout reads a Prometheus, not a lab
            assert data["spec"]["metrics"]["provider"] == "prometheus"


def test_the_shadow_example_has_a_lab_that_serves_what_it_reads() -> None:
    lab = load_document(SHADOW / "lab.yaml", expect=Lab)
    rollout = load_document(SHADOW / "rollout-gpt4o-mini.yaml", expect=Rollout)
    spec = rollout.spec
    assert spec.metrics.targets == [f"http://{lab.spec.gateway.listen}/metrics"]
    (route,) = [r for r in lab.spec.gateway.routes if r.name == spec.metrics.route]
    assert route.flag == spec.flag.key
    assert route.shadow is not None and route.shadow.flag == spec.shadow_flag.key
    assert route.judge is not None
    flags = json.loads((SHADOW / "flags.json").read_text())["flags"]
    models = {m.name for m in lab.spec.gateway.models}
    for flag in (spec.flag, spec.shadow_flag):
        variations = flags[flag.key]["variations"]
        assert {flag.baseline, flag.canary} <= set(variations)
        assert set(variations) - {"off"} <= models


def test_the_shadow_lab_mirrors_and_judges_when_the_shadow_flag_names_a_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flags = tmp_path / "flags.json"
    shutil.copy(SHADOW / "flags.json", flags)
    document = json.loads(flags.read_text())
    shadow = document["flags"]["support-bot-shadow"]
    shadow["fallthrough"] = {"variation": shadow["variations"].index("gpt-4o-mini")}
    flags.write_text(json.dumps(document))
    monkeypatch.setenv("CANARYCTL_GATEWAY", "127.0.0.1:0")  # the example's port may be taken
    lab = load_document(SHADOW / "lab.yaml", expect=Lab)
    with LabStack(lab, flags_path=flags) as stack:
        deadline = time.monotonic() + 60
        while True:
            seen = _totals(httpx.get(stack.metrics_url, timeout=10).text)
            if seen["llm_shadow_requests_total"] > 0 and seen["llm_judge_pairwise_total"] > 0:
                break
            assert time.monotonic() < deadline, seen
            time.sleep(0.2)


def _totals(exposition: str) -> dict[str, float]:
    totals = {"llm_shadow_requests_total": 0.0, "llm_judge_pairwise_total": 0.0}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name in totals:
                totals[sample.name] += sample.value
    return totals


# -- each example run end to end on its lab, with the lab's fast settings ----------------------

FAST = {"median": 0.005, "p95": 0.02}
"""Every provider answers in milliseconds: the example's SLOs, flags and routes are kept, only
its clock runs faster (analyses every second, pauses of seconds, a max of seconds)."""


def _fast_lab(lab_path: Path, flags: Path) -> Lab:
    data = yaml.safe_load(lab_path.read_text())
    spec = data["spec"]
    for provider in spec["providers"]:
        provider["latency"] = FAST
    spec["traffic"] = {**spec["traffic"], "rate": 120, "concurrency": 16}
    shutil.copy(lab_path.parent / "flags.json", flags)
    return parse_document(yaml.safe_dump(data), str(lab_path), expect=Lab)


def _fast_document(path: Path, flags: Path, tmp_path: Path) -> Path:
    """The example as shipped, its flag file a copy, its clock fast."""
    data = yaml.safe_load(path.read_text())
    spec = data["spec"]
    for key in ("flag", "shadow_flag"):
        if key in spec:
            spec[key]["path"] = str(flags)
    if data["kind"] == "Rollout":
        analysis = spec.setdefault("analysis", {})
        analysis.update(interval="1s", min_requests=20)
        if "max_wait" in analysis:
            analysis.update(max_wait="3s", inconclusive_limit=2)
        for step in spec["steps"]:
            if "pause" in step and step["pause"] != "approval":
                step["pause"] = "2s"
            if "shadow" in step:
                step["shadow"].update(max="15s")
    else:  # an Experiment
        spec.update(interval="1s", max="15s", min_samples=5)
    out = tmp_path / path.name
    out.write_text(yaml.safe_dump(data))
    return out


def _prior(flags: Path, key: str) -> dict[str, Any]:
    return dict(json.loads(flags.read_text())["flags"][key]["fallthrough"])


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("lab", "example"),
    [
        ("lab.yaml", "support-bot-gpt4o-mini.yaml"),
        ("shadow/lab.yaml", "shadow/rollout-gpt4o-mini.yaml"),
        ("tiered/lab.yaml", "tiered/rollout-free-tier.yaml"),
        ("lab.yaml", "support-bot-experiment.yaml"),
    ],
)
def test_the_example_runs_end_to_end_on_its_lab(
    tmp_path: Path, gateway: str, lab: str, example: str
) -> None:
    """Each example, as shipped but for its clock, runs on the lab beside it to a verdict (exit
    0, or 1 for a negative one; never 2 or 3) and leaves the flag promoted or as it was; the
    lab and the run found each other through CANARYCTL_GATEWAY alone."""
    flags = tmp_path / "flags.json"
    with LabStack(_fast_lab(RUNBOOKS / lab, flags), flags_path=flags) as stack:
        assert stack.metrics_url == f"http://{gateway}/metrics"
        document = _fast_document(RUNBOOKS / example, flags, tmp_path)
        kind = yaml.safe_load(document.read_text())["kind"]
        key = yaml.safe_load(document.read_text())["spec"]["flag"]["key"]
        before = _prior(flags, key)
        command = "rollout" if kind == "Rollout" else "experiment"
        state = str(tmp_path / "state.db")
        args = [command, "run", str(document), "--state", state, "-o", "json"]
        result = CliRunner().invoke(main, args)
    assert result.exit_code in (0, 1), result.output[-3000:]
    lines = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    assert lines, result.output[-3000:]
    # It judged what the lab served: an analysis (or an experiment's interval) with counts.
    if kind == "Rollout":
        with StateStore(Path(state)) as store:
            analyses = store.events(1, "analysis")
            run = store.run(1)
        assert run is not None and run.runbook["spec"]["metrics"]["targets"] == [
            f"http://{gateway}/metrics"  # what it watched, stored: a resume watches the same
        ]
        served = [c["canary_requests"] for a in analyses for c in a.data["checks"]]
        assert served and max(served) > 0, analyses[-1:]
    else:
        status = CliRunner().invoke(main, ["experiment", "status", "--state", state, "-o", "json"])
        assert json.loads(status.output)["summary"]["intervals"] > 0, status.output
    after = _prior(flags, key)
    if result.exit_code == 1 or kind == "Experiment":
        assert after == before  # a negative verdict, or no --promote-winner: the flag as it was
    else:  # promoted: the canary serves everyone the default rule serves
        assert "rollout" not in after and after != before


@pytest.mark.e2e
def test_the_guard_example_trips_on_its_lab_and_tells_the_on_call_webhook(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gateway: str
) -> None:
    """runbooks/guard/: the promoted GPT-4o-mini fails 8% on the lab beside the guard, over its
    5%; `canaryctl guard run` (its own process, the example's SLOs and failure limit, a 1 s
    window) sends everyone back to GPT-4-turbo and posts `guard_tripped` to ONCALL_WEBHOOK_URL."""
    flags = tmp_path / "flags.json"
    hook = Webhook()
    monkeypatch.setenv("ONCALL_WEBHOOK_URL", hook.url)
    journal = GuardJournal(tmp_path / "guard.jsonl")
    try:
        with LabStack(_fast_lab(RUNBOOKS / "guard" / "lab.yaml", flags), flags_path=flags) as stack:
            assert stack.metrics_url == f"http://{gateway}/metrics"
            assert _prior(flags, "support-bot-model") == {"variation": 1}  # GPT-4o-mini
            data = yaml.safe_load((RUNBOOKS / "guard" / "support-bot-guard.yaml").read_text())
            data["spec"]["flag"]["path"] = str(flags)
            data["spec"]["analysis"].update(interval="1s", min_requests=20)
            guard = tmp_path / "support-bot-guard.yaml"
            guard.write_text(yaml.safe_dump(data))
            with guard_process(guard, tmp_path) as process:
                entries = wait_for(journal, "flag_safe", process)
                assert hook.received.wait(30), "no on_trip webhook"
    finally:
        hook.close()
    trip = next(e for e in entries if e["event"] == "tripped")
    assert trip["reason"].startswith("SLO failed: error_rate = "), trip
    served = json.loads(flags.read_text())["flags"]["support-bot-model"]["fallthrough"]
    weights = {v["variation"]: v["weight"] for v in served["rollout"]["variations"]}
    assert weights == {0: 100_000, 1: 0}  # GPT-4-turbo serves everyone
    (body,) = hook.bodies
    assert (body["event"], body["safe"], body["watched"]) == (
        "guard_tripped",
        "gpt-4-turbo",
        "gpt-4o-mini",
    )


@pytest.mark.e2e
def test_the_litellm_example_runs_on_the_litellm_stand_in(tmp_path: Path) -> None:
    """runbooks/litellm-gpt4o-mini.yaml as shipped (its variants mapping, `job: litellm`
    selector, relative SLO and custom 429 query) but for its clock, read by a real Prometheus
    from tests/litellm_exporter.py: LiteLLM's metric names and labels (tests/test_litellm_e2e.py
    checks them against the real proxy, which takes ~40 s to start), fed by an app that asks the
    flag per request and sends GPT-4-turbo's users to model group support-large and
    GPT-4o-mini's to support-small. Both groups are healthy: the rollout promotes."""
    flags = tmp_path / "flags.json"
    shutil.copy(RUNBOOKS / "flags.json", flags)
    before = _prior(flags, "support-bot-model")
    document = yaml.safe_load((RUNBOOKS / "litellm-gpt4o-mini.yaml").read_text())
    aliases = {v: m["requested_model"] for v, m in document["spec"]["metrics"]["variants"].items()}
    assert set(aliases.values()) == {"support-large", "support-small"}
    groups = {variant: Group(name, variant, seconds=0.2) for variant, name in aliases.items()}
    exporter = LiteLLMExporter()
    try:
        with running_prometheus(tmp_path) as prometheus:
            prometheus.scrape(exporter.url, job="litellm")  # the example's selector
            runbook = _fast_document(RUNBOOKS / "litellm-gpt4o-mini.yaml", flags, tmp_path)
            data = yaml.safe_load(runbook.read_text())
            data["spec"]["metrics"]["url"] = prometheus.url
            # Prometheus scrapes every second: a window holds a few scrapes at 3 s.
            data["spec"]["analysis"].update(interval="3s", min_requests=10)
            runbook.write_text(yaml.safe_dump(data))
            with Traffic(exporter, str(flags), "support-bot-model", groups, rate=200):
                prometheus.has_traffic("support-large")
                state = str(tmp_path / "state.db")
                args = ["rollout", "run", str(runbook), "--state", state, "-o", "json"]
                result = CliRunner().invoke(main, args)
    finally:
        exporter.close()
    assert result.exit_code == 0, result.output[-3000:]
    events = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    checks = [c for e in events if e["event"] == "analysis" for c in e["checks"]]
    assert {c["slo"].split()[0] for c in checks} >= {"error_rate", "rate_limited_ratio"}
    assert max(c["canary_requests"] or 0 for c in checks) > 0, checks[-3:]
    after = _prior(flags, "support-bot-model")
    assert after != before and after == {"variation": 1}  # GPT-4o-mini serves everyone


@contextlib.contextmanager
def _chaos_proxy(port: int, upstream: int, tmp_path: Path) -> Iterator[None]:
    """`canaryctl chaos proxy` as scenarios/lab.yaml's comment starts it, on free ports, until
    the block ends (SIGTERM, then SIGKILL)."""
    log = (tmp_path / "proxy.log").open("wb")
    command = [sys.executable, "-m", "canaryctl", "chaos", "proxy", "--listen",
               f"127.0.0.1:{port}", "--upstream", f"http://127.0.0.1:{upstream}"]  # fmt: skip
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (tmp_path / "proxy.log").read_text()[-2000:]
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            assert time.monotonic() < deadline, "the fault proxy never listened"
            time.sleep(0.1)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.mark.e2e
def test_the_chaos_example_holds_on_its_lab_through_the_fault_proxy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gateway: str
) -> None:
    """scenarios/: the lab, the fault proxy in front of its GPT-4-turbo and the scenario, started
    as the lab file's comment says, on free ports given through the three variables the files
    read, the scenario's clock in seconds. Its primary answers 503 to everything, its fallback
    answers: users never notice (held, exit 0) and no fault is left behind."""
    proxy, upstream = free_port(), free_port()
    monkeypatch.setenv("CANARYCTL_CHAOS_PROXY", f"http://127.0.0.1:{proxy}")
    monkeypatch.setenv("CANARYCTL_CHAOS_UPSTREAM_PORT", str(upstream))
    monkeypatch.setenv("CANARYCTL_CHAOS_TOKEN", "example-" + "5" * 24)
    scenarios = ROOT / "scenarios"
    data = yaml.safe_load((scenarios / "primary-503.yaml").read_text())
    data["spec"].update(duration="4s", settle="1s", recovery="2s")
    data["spec"]["hypothesis"].update(window="2s", interval="1s", min_requests=20)
    scenario = tmp_path / "primary-503.yaml"
    scenario.write_text(yaml.safe_dump(data))
    journal = tmp_path / "journal.json"
    flags = tmp_path / "flags.json"
    with LabStack(_fast_lab(scenarios / "lab.yaml", flags), flags_path=flags) as stack:
        assert stack.metrics_url == f"http://{gateway}/metrics"
        assert f":{upstream}" in stack.provider_urls["gpt-4-turbo"]
        with _chaos_proxy(proxy, upstream, tmp_path):
            args = ["chaos", "run", str(scenario), "--journal", str(journal), "-o", "json"]
            result = CliRunner().invoke(main, args)
            exposition = httpx.get(f"http://127.0.0.1:{proxy}/_chaos/metrics", timeout=10).text
    injected = sum(
        sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == "chaos_proxy_faults_injected_total"
    )
    assert injected > 0  # the lab's gateway reached its primary through the proxy
    record = json.loads(journal.read_text())
    assert result.exit_code == 0, record.get("reason", result.output[-2000:])
    assert record["outcome"] == "held"
    assert [r["result"]["found"] for r in record["removals"]] == [True]
    during = [c for c in record["checks"] if c["phase"] == "during" and c["outcome"] == "held"]
    fallback = [r["value"] for c in during for r in c["checks"] if "fallback_rate" in r["check"]]
    assert fallback and min(fallback) >= 0.9  # the 503s reached the gateway: the backup answered
