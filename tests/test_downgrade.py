"""Downgrades of low-criticality work: the pure decision (policy, floor, price), then a real
gateway in front of lab providers serving a low route and a listed job the cheapest model that
meets the floor, counted in llm_downgrades_total, past a real budget's share."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from canaryctl.errors import InvalidInput
from canaryctl.gateway.downgrade import decide, floor_for, in_hours, load_quality
from canaryctl.lab import LabStack
from canaryctl.runbook.gateway import DowngradeSpec, GatewaySpec, ModelSpec, RouteSpec
from canaryctl.runbook.lab import LabSpec

FLAGS = Path(__file__).resolve().parent.parent / "canaryctl" / "defaults" / "flags.json"


def _model(name: str, prompt: float = 0.0, completion: float = 0.0) -> ModelSpec:
    price = {"prompt_per_1k": prompt, "completion_per_1k": completion}
    return ModelSpec(name=name, base_url="http://x", price=price)


MODELS = [_model("big", 0.01, 0.03), _model("mini", 0.0002, 0.0006), _model("tiny", 0.0001, 0.0001)]
MODELS.append(_model("free"))
"""`free` costs nothing but has no known quality: it is never chosen."""
QUALITY = {"big": 0.92, "mini": 0.86, "tiny": 0.71}
LOW = RouteSpec(name="digest", flag="f", default_model="big", criticality="low", min_quality=0.8)
NORMAL = RouteSpec(name="chat", flag="f", default_model="big")
NOON = datetime(2026, 12, 2, 12, 0, tzinfo=UTC).timestamp()


def _decide(spec: DowngradeSpec, route: RouteSpec = LOW, **kwargs: Any) -> tuple[str, str] | None:
    options: dict[str, Any] = {"job": None, "now": NOON, "budget_share": 0.0, "tokens": (50, 200)}
    found = decide(spec, QUALITY, MODELS, route, MODELS[0], **{**options, **kwargs})
    return None if found is None else (found.model, found.reason)


def test_the_cheapest_model_meeting_the_floor_serves_low_work() -> None:
    always = DowngradeSpec()
    assert _decide(always) == ("mini", "always"), "tiny is cheaper but below the 0.8 floor"
    assert _decide(always, route=NORMAL) is None, "normal work is never downgraded"
    assert _decide(always, route=NORMAL, job="nightly") is None
    jobs = DowngradeSpec(jobs={"nightly": 0.7})
    assert _decide(jobs, route=NORMAL, job="nightly") == ("tiny", "always")
    assert _decide(jobs, job="nightly") == ("mini", "always"), "the stricter floor of the two"
    cheap = decide(always, QUALITY, MODELS, LOW, MODELS[1], job=None, now=NOON,
                   budget_share=0, tokens=(50, 200))  # fmt: skip
    assert cheap is None, "the flag's choice is already the cheapest that meets the floor"


def test_the_policy_decides_when() -> None:
    budget = DowngradeSpec(when="budget", share=0.8)
    assert _decide(budget, budget_share=0.79) is None
    assert _decide(budget, budget_share=0.8) == ("mini", "budget")
    nights = DowngradeSpec(when="hours", hours=["22:00-06:00"])
    assert _decide(nights) is None
    late = datetime(2026, 12, 2, 23, 30, tzinfo=UTC).timestamp()
    early = datetime(2026, 12, 3, 5, 59, tzinfo=UTC).timestamp()
    assert _decide(nights, now=late) == ("mini", "hours")
    assert _decide(nights, now=early) == ("mini", "hours")
    assert not in_hours(["22:00-06:00"], datetime(2026, 12, 3, 6, 0, tzinfo=UTC).timestamp())
    assert in_hours(["09:00-17:30"], NOON) and not in_hours(["13:00-14:00"], NOON)


def test_floors_and_policies_are_checked_when_the_document_loads() -> None:
    assert floor_for(NORMAL, "x", DowngradeSpec(jobs={"y": 0.5})) is None
    with pytest.raises(ValidationError, match="needs a `share`"):
        DowngradeSpec(when="budget")
    with pytest.raises(ValidationError, match="not a window"):
        DowngradeSpec(when="hours", hours=["25:00-01:00"])
    with pytest.raises(ValidationError, match="between 0 and 1"):
        DowngradeSpec(jobs={"x": 2})
    with pytest.raises(ValidationError, match="min_quality: a low-criticality route needs one"):
        GatewaySpec.model_validate(_gateway({"criticality": "low"}))


def test_quality_comes_from_a_gate_result_file(tmp_path: Path) -> None:
    score = {"variant": "v", "items": 400, "right": 344, "errors": 0, "score": 0.86,
             "interval": [0.82, 0.89]}  # fmt: skip
    gate = {"eval": {"baseline": {**score, "model": "big", "score": 0.9},
                     "canary": {**score, "model": "mini"}}}  # fmt: skip
    path = tmp_path / "gate.json"
    path.write_text(json.dumps(gate))
    spec = DowngradeSpec(quality_file=path, quality={"tiny": 0.7})
    assert load_quality(spec) == {"big": 0.9, "mini": 0.86, "tiny": 0.7}
    path.write_text("[1]")
    with pytest.raises(InvalidInput, match=r"gate\.json"):
        load_quality(spec)


def _gateway(route: dict[str, Any], **extra: Any) -> dict[str, Any]:
    models = [
        {"name": "gpt-4-turbo", "base_url": "lab://gpt-4-turbo",
         "price": {"prompt_per_1k": 0.01, "completion_per_1k": 0.03}},
        {"name": "gpt-4o-mini", "base_url": "lab://gpt-4o-mini",
         "price": {"prompt_per_1k": 0.00015, "completion_per_1k": 0.0006}},
        {"name": "mixtral-8x7b", "base_url": "lab://mixtral-8x7b",
         "price": {"prompt_per_1k": 0.0001, "completion_per_1k": 0.0001}},
    ]  # fmt: skip
    return {
        "listen": "127.0.0.1:0",
        "flags": {"provider": "file", "path": str(FLAGS)},
        "routes": [
            {"name": "support-bot", "flag": "support-bot-model", "default_model": "gpt-4-turbo"},
            {
                "name": "digest",
                "flag": "support-bot-model",
                "default_model": "gpt-4-turbo",
                **route,
            },
        ],
        "models": models,
        **extra,
    }


def _downgrades(stack: LabStack) -> dict[tuple[str, ...], float]:
    found = {}
    for family in text_string_to_metric_families(httpx.get(stack.metrics_url).text):
        for s in family.samples:
            if s.name == "llm_downgrades_total":
                labels = (s.labels["route"], s.labels["from_model"], s.labels["to_model"])
                found[(*labels, s.labels["reason"])] = s.value
    return found


def _ask(stack: LabStack, route: str, **headers: str) -> str:
    response = httpx.post(
        f"{stack.gateway_url}/v1/chat/completions",
        json={"model": route, "messages": [{"role": "user", "content": "What is 2 + 3?"}]},
        headers={"X-User": "u1", **headers},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-canaryctl-variant"] == "gpt-4-turbo", "the flag's variant stays"
    return response.headers["x-canaryctl-model"]


def test_a_real_gateway_downgrades_low_work_past_a_budget_share() -> None:
    fast = {"median": 0.001, "p95": 0.002}
    providers = [
        {"name": "gpt-4-turbo", "latency": fast, "tokens": {"completion_mean": 20}},
        {"name": "gpt-4o-mini", "latency": fast, "tokens": {"completion_mean": 20}},
        {"name": "mixtral-8x7b", "latency": fast, "tokens": {"completion_mean": 20}},
    ]
    downgrade = {
        "when": "budget",
        "share": 0.5,
        "quality": {"gpt-4-turbo": 0.9, "gpt-4o-mini": 0.88, "mixtral-8x7b": 0.75},
        "jobs": {"nightly-digest": 0.7},
    }
    budgets = {"limits": [{"name": "team-day", "per": "team", "tokens": 400}],
               "completion_estimate": 40}  # fmt: skip
    gateway = _gateway(
        {"criticality": "low", "min_quality": 0.85}, downgrade=downgrade, budgets=budgets
    )
    lab = LabSpec.model_validate({"providers": providers, "gateway": gateway})
    with LabStack(lab, traffic=False) as stack:
        team = {"X-Team": "ml"}
        assert _ask(stack, "digest", **team) == "gpt-4-turbo", "under half the budget"
        served = [_ask(stack, "digest", **team) for _ in range(6)]
        assert served[-1] == "gpt-4o-mini", "past half: the cheapest model over 0.85"
        assert _ask(stack, "support-bot", **team) == "gpt-4-turbo", "normal work keeps its model"
        job = {**team, "X-Job": "nightly-digest"}
        assert _ask(stack, "support-bot", **job) == "mixtral-8x7b", "the job's floor is 0.7"
        counted = _downgrades(stack)
    digest = ("digest", "gpt-4-turbo", "gpt-4o-mini", "budget")
    assert counted[digest] == served.count("gpt-4o-mini") >= 1
    assert counted[("support-bot", "gpt-4-turbo", "mixtral-8x7b", "budget")] == 1


def test_a_model_without_a_price_is_never_the_cheaper_one() -> None:
    """No `price` is an unknown cost, not $0: a model meeting the floor but unpriced is not
    chosen as the cheapest; priced at zero on purpose, it is."""
    unpriced = ModelSpec(name="local", base_url="http://x")
    quality = {**QUALITY, "local": 0.9}
    found = decide(DowngradeSpec(), quality, [*MODELS, unpriced], LOW, MODELS[0], job=None,
                   now=NOON, budget_share=0, tokens=(50, 200))  # fmt: skip
    assert found is not None and found.model == "mini"
    free = _model("local")  # price: {prompt_per_1k: 0, completion_per_1k: 0}
    found = decide(DowngradeSpec(), quality, [*MODELS, free], LOW, MODELS[0], job=None,
                   now=NOON, budget_share=0, tokens=(50, 200))  # fmt: skip
    assert found is not None and found.model == "local"
