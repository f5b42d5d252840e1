"""The lab as `canaryctl cost optimize` meets it: every model evaluated on the arithmetic
benchmark, and a plan re-run as traffic through a real gateway, measured per tier.

Shared by tests/test_cost_optimize_e2e.py and benchmarks/cost_optimize.py.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from canaryctl.cost.flagplan import with_plan
from canaryctl.evals import Endpoint, builtin_benchmark, load_benchmark, run_benchmark, summarize
from canaryctl.evals.runner import chat_url
from canaryctl.lab import LabStack
from canaryctl.lab.traffic import TrafficGenerator
from canaryctl.metrics.measures import histogram_quantile
from canaryctl.runbook.lab import Lab

__all__ = ["SCORES", "evaluate", "run_plan", "write_document", "write_plan_flag"]

DEFAULTS = Path(__file__).resolve().parent.parent / "canaryctl" / "defaults"

SCORES = [
    ("gpt-4-turbo", 0.9, [0.87, 0.92], 1.33, 0.0047),
    ("gpt-4o-mini", 0.88, [0.85, 0.9], 1.0, 0.000085),
    ("mixtral-8x7b", 0.74, [0.7, 0.77], 3.03, 0.00012),
    ("llama3-local", 0.7, [0.66, 0.74], 1.2, 0.0),
]


def write_document(tmp_path: Path, **spec: Any) -> Path:
    """A CostOptimization document for the lab in `tmp_path` (with the lab, its flag file and
    eval scores beside it); `spec` replaces fields of its spec."""
    shutil.copy(DEFAULTS / "lab.yaml", tmp_path / "lab.yaml")
    shutil.copy(DEFAULTS / "flags.json", tmp_path / "flags.json")
    scores = [
        {"variant": m, "model": m, "items": 400, "right": round(s * 400), "errors": 0,
         "score": s, "interval": i, "latency_p50_seconds": p / 2, "latency_p95_seconds": p,
         "cost_usd": c * 400, "cost_per_query_usd": c}
        for m, s, i, p, c in SCORES
    ]  # fmt: skip
    (tmp_path / "evals.json").write_text(json.dumps(scores))
    document = {
        "apiVersion": "canaryctl/v1",
        "kind": "CostOptimization",
        "metadata": {"name": "bot"},
        "spec": {
            "gateway": "lab.yaml",
            "monthly_queries": 10_000_000,
            "evals": ["evals.json"],
            "tiers": {
                "free": {"share": 0.6, "p95": "2s", "min_accuracy": 0.6},
                "paid": {"share": 0.3, "p95": "2s", "min_accuracy": 0.8},
                "enterprise": {"share": 0.1, "p95": "1.5s", "min_accuracy": 0.86,
                               "models": ["gpt-4-turbo", "gpt-4o-mini"]},
            },
            "rollout": {
                "flag": {"provider": "launchdarkly", "project": "p", "environment": "e",
                         "key": "support-bot-model"},
                "metrics": {"provider": "prometheus", "url": "http://prometheus:9090",
                            "route": "support-bot"},
            },
            **spec,
        },
    }  # fmt: skip
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def evaluate(lab: Lab, *, items: int, confidence: float = 0.95) -> list[dict[str, Any]]:
    """Each gateway model's ModelScore (as JSON) on the first `items` arithmetic questions,
    sent straight to its lab provider as `canaryctl gate` does, priced with the gateway's price
    (a model with none has no eval cost, as in the gate)."""
    questions = load_benchmark(builtin_benchmark("arithmetic"))[:items]
    with LabStack(lab, traffic=False) as stack:
        endpoints = [
            Endpoint(m.name, chat_url(stack.provider_urls[m.base_url[6:]]), m.name, m.price)
            for m in lab.spec.gateway.models
            if m.base_url.startswith("lab://")
        ]
        results = run_benchmark(endpoints, questions, concurrency=32, timeout=4.0, retries=1)
    return [
        summarize(e.variant, e.variant, results[e.variant], e.price, confidence).to_dict()
        for e in endpoints
    ]


def write_plan_flag(flags: Path, key: str, plan: Mapping[str, Mapping[str, float]]) -> None:
    document = json.loads(flags.read_text())
    document["flags"][key] = with_plan(document["flags"][key], plan)
    flags.write_text(json.dumps(document, indent=2))


async def _traffic(
    url: str, lab: Lab, seconds: float, until: tuple[str, Mapping[str, object], int] | None
) -> None:
    """`seconds` of traffic; with `until` (the metrics URL, the tiers, a count), until the gateway
    has counted that many graded answers in every tier, `seconds` only bounding the wait."""
    assert lab.spec.traffic is not None
    generator = TrafficGenerator(url, lab.spec.traffic, seed=lab.spec.seed)
    task = asyncio.create_task(generator.run())
    try:
        if until is None:
            await asyncio.sleep(seconds)
        else:
            await _until_scored(*until, seconds)
    finally:
        generator.stop()
        await task


async def _until_scored(
    metrics_url: str, tiers: Mapping[str, object], answers: int, bound: float
) -> None:
    """Poll the gateway's counts until every tier has `answers` graded answers: as many as a
    slow machine takes, so a tier's sample never depends on how fast the lab could send."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + bound
    async with httpx.AsyncClient(timeout=10) as client:
        while True:
            counted = _by_tier((await client.get(metrics_url)).text)
            scored = {tier: int(counted.get(tier, {}).get("scored") or 0) for tier in tiers}
            if min(scored.values()) >= answers:
                return
            if loop.time() > deadline:
                raise AssertionError(f"{answers} graded answers per tier not reached: {scored}")
            await asyncio.sleep(0.25)


def run_plan(
    lab: Lab,
    folder: Path,
    plan: Mapping[str, Mapping[str, float]],
    *,
    seconds: float,
    rate: float,
    tiers: Mapping[str, float] | None = None,
    answers: int | None = None,
) -> dict[str, dict[str, float | None]]:
    """Serve `plan` (tier -> model -> share) from the lab's flag file copied into `folder`,
    send `seconds` of traffic at `rate` requests/s (every answer graded back to the gateway),
    and measure per tier what the gateway counted: requests, p95, accuracy, cost per query.
    With `answers`, the traffic goes on until every tier of the plan has that many graded
    answers, and `seconds` only bounds the wait (a test's sample, whatever the machine's speed).
    """
    assert lab.spec.traffic is not None
    flags = folder / "flags-planned.json"
    source = lab.spec.gateway.flags
    shutil.copy(source.path, flags)  # type: ignore[union-attr]
    key = lab.spec.gateway.routes[0].flag
    write_plan_flag(flags, key, plan)
    traffic = lab.spec.traffic.model_copy(
        update={"rate": rate, "feedback": 1.0, **({"tiers": dict(tiers)} if tiers else {})}
    )
    replay = lab.model_copy(update={"spec": lab.spec.model_copy(update={"traffic": traffic})})
    with LabStack(replay, flags_path=flags, traffic=False) as stack:
        until = None if answers is None else (stack.metrics_url, plan, answers)
        asyncio.run(_traffic(stack.gateway_url, replay, seconds, until))
        text = httpx.get(stack.metrics_url, timeout=10).text
    return _by_tier(text)


def _by_tier(text: str) -> dict[str, dict[str, float | None]]:
    totals: dict[str, dict[str, Any]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            tier = s.labels.get("tier")
            if tier is None:
                continue
            t = totals.setdefault(
                tier, {"requests": 0.0, "cost": 0.0, "qsum": 0.0, "qcount": 0.0, "buckets": {}}
            )
            if s.name == "llm_requests_total" and s.labels["outcome"] != "rejected":
                t["requests"] += s.value
            elif s.name == "llm_cost_usd_total":
                t["cost"] += s.value
            elif s.name == "llm_quality_score_sum":
                t["qsum"] += s.value
            elif s.name == "llm_quality_score_count":
                t["qcount"] += s.value
            elif s.name == "llm_request_duration_seconds_bucket":
                le = float(s.labels["le"])
                t["buckets"][le] = t["buckets"].get(le, 0.0) + s.value
    return {
        tier: {
            "requests": t["requests"],
            "p95_seconds": histogram_quantile(0.95, tuple(sorted(t["buckets"].items()))),
            "scored": t["qcount"],
            "accuracy": t["qsum"] / t["qcount"] if t["qcount"] else None,
            "cost_per_query_usd": t["cost"] / t["requests"] if t["requests"] else None,
        }
        for tier, t in totals.items()
        if t["requests"] > 0
    }
