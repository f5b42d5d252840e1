"""The examples in runbooks/ come with what they need: each Rollout that reads a lab's gateway
names a lab document beside it whose gateway listens where the runbook looks, serves the routes
and flags it moves, and exports the families its SLOs read."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from canaryctl.lab import LabStack
from canaryctl.runbook import Lab, Rollout, load_document

RUNBOOKS = Path(__file__).resolve().parent.parent / "runbooks"
SHADOW = RUNBOOKS / "shadow"


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
    tmp_path: Path,
) -> None:
    flags = tmp_path / "flags.json"
    shutil.copy(SHADOW / "flags.json", flags)
    document = json.loads(flags.read_text())
    shadow = document["flags"]["support-bot-shadow"]
    shadow["fallthrough"] = {"variation": shadow["variations"].index("gpt-4o-mini")}
    flags.write_text(json.dumps(document))
    data = yaml.safe_load((SHADOW / "lab.yaml").read_text())
    data["spec"]["gateway"]["listen"] = "127.0.0.1:0"  # the example's port may be taken here
    lab = Lab.model_validate(data)
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
