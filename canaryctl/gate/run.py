"""Run a gate: the eval, the live SLOs, the cost projection; then one report.

The imperative shell around pure judges (evals.judge, analysis.judge, gate.cost). Backends are
the runbook's own unless given, so tests and CI on the lab use real HTTP end to end.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from canaryctl.analysis import judge
from canaryctl.analysis.guard import guard_canary
from canaryctl.errors import BackendError, CanaryError, InvalidInput
from canaryctl.evals.benchmark import builtin_benchmark, load_benchmark
from canaryctl.evals.judge import judge_eval, summarize
from canaryctl.evals.runner import Endpoint, EvalProgress, chat_url, run_benchmark
from canaryctl.evals.stats import newcombe_interval
from canaryctl.flags.base import FlagStore
from canaryctl.gate.cost import judge_cost, project
from canaryctl.gate.result import EvalReport, GateCheck, GateReport
from canaryctl.metrics.base import MetricsSource, Observation
from canaryctl.metrics.measures import measure
from canaryctl.runbook.gate import EndpointSpec, EvalSpec
from canaryctl.runbook.lab import Lab
from canaryctl.runbook.price import PriceSpec
from canaryctl.runbook.rollout import Rollout

__all__ = ["run_gate"]


def run_gate(
    rollout: Rollout,
    *,
    progress: EvalProgress | None = None,
    metrics: MetricsSource | None = None,
    flags: FlagStore | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> GateReport:
    """Judge `rollout`'s gate. Bad input raises InvalidInput (exit 2) before any request;
    unreachable endpoints, flag or metrics backends raise BackendError (exit 3). The flag is
    only read (for the variation values live metrics are labelled with), never written."""
    spec = rollout.spec
    gate = spec.gate
    if gate is None:
        raise InvalidInput(f"{rollout.metadata.name}: spec.gate: the runbook has no gate section")
    baseline, canary = spec.flag.baseline, spec.flag.canary
    checks: list[GateCheck] = []

    evaluated = None
    if gate.eval is not None:
        evaluated = _evaluate(gate.eval, baseline, canary, progress)
        for check in judge_eval(gate.eval, evaluated.canary, evaluated.baseline):
            checks.append(GateCheck("eval", check))

    observation = None
    labels = (baseline, canary)
    if gate.live is not None:
        labels = _variation_values(rollout, flags)
        observation = _observe(rollout, gate.live.window, metrics, clock, sleep)
        verdict = judge(spec.slos, spec.analysis, observation, baseline=labels[0], canary=labels[1])
        # As in a rollout: a canary whose model answered nothing, failed half the window's
        # requests or refused more than the baseline refused never passes.
        verdict, _ = guard_canary(verdict, observation, {}, canary=labels[1], baseline=labels[0])
        checks.extend(GateCheck("live", check) for check in verdict.checks)

    projection = None
    if gate.cost is not None:
        live_costs = (None, None)
        if observation is not None:
            live_costs = (
                measure("cost_per_query_usd", observation.of(labels[0])),
                measure("cost_per_query_usd", observation.of(labels[1])),
            )
        eval_costs = (None, None)
        if evaluated is not None:
            eval_costs = (evaluated.baseline.cost_per_query, evaluated.canary.cost_per_query)
        projection = project(gate.cost, live=live_costs, evaluated=eval_costs)
        if (cost_check := judge_cost(gate.cost, projection)) is not None:
            checks.append(GateCheck("cost", cost_check))

    return GateReport(
        name=rollout.metadata.name,
        baseline=baseline,
        canary=canary,
        checks=tuple(checks),
        eval=evaluated,
        projection=projection,
        live_window=None if observation is None else (observation.start, observation.end),
    )


def _evaluate(
    spec: EvalSpec, baseline: str, canary: str, progress: EvalProgress | None
) -> EvalReport:
    if spec.builtin is not None:
        path, name = builtin_benchmark(spec.builtin), f"builtin:{spec.builtin}"
    else:
        assert spec.benchmark is not None
        path, name = spec.benchmark, str(spec.benchmark)
    items = load_benchmark(path, source=name)
    with _lab_urls(spec.lab) as (urls, prices):
        endpoints = [
            _endpoint(baseline, spec.baseline, urls, prices, "baseline"),
            _endpoint(canary, spec.canary, urls, prices, "canary"),
        ]
        started = time.perf_counter()
        results = run_benchmark(
            endpoints,
            items,
            concurrency=spec.concurrency,
            timeout=spec.timeout,
            retries=spec.retries,
            max_tokens=spec.max_tokens,
            progress=progress,
        )
        duration = time.perf_counter() - started
    scores = [
        summarize(e.variant, e.model, results[e.variant], e.price, spec.confidence)
        for e in endpoints
    ]
    base_score, canary_score = scores
    interval = newcombe_interval(
        canary_score.right,
        canary_score.items,
        base_score.right,
        base_score.items,
        spec.confidence,
    )
    return EvalReport(name, spec.confidence, base_score, canary_score, interval, duration)


@contextmanager
def _lab_urls(lab_path: Path | None) -> Iterator[tuple[dict[str, str], dict[str, PriceSpec]]]:
    """With a `lab:` document, its providers running (no traffic) and its gateway's prices."""
    if lab_path is None:
        yield {}, {}
        return
    from canaryctl.lab import LabStack
    from canaryctl.runbook.loader import load_document

    lab = load_document(lab_path, expect=Lab)
    prices = {m.name: m.price for m in lab.spec.gateway.models if m.price is not None}
    stack = LabStack(lab, traffic=False)
    try:
        stack.start()
    except InvalidInput:
        raise
    except CanaryError as exc:  # exit 1 means "do not promote", not "the lab would not start"
        raise BackendError(f"spec.gate.eval.lab: {exc}") from exc
    try:
        yield stack.provider_urls, prices
    finally:
        stack.stop()


def _endpoint(
    variant: str,
    spec: EndpointSpec,
    lab_urls: dict[str, str],
    lab_prices: dict[str, PriceSpec],
    role: str,
) -> Endpoint:
    base_url = spec.base_url
    if base_url.startswith("lab://"):
        name = base_url.removeprefix("lab://")
        if name not in lab_urls:
            raise InvalidInput(f"spec.gate.eval.{role}.base_url: the lab has no provider '{name}'")
        base_url = lab_urls[name]
    api_key = None
    if spec.api_key_env is not None:
        api_key = os.environ.get(spec.api_key_env)
        if not api_key:
            raise InvalidInput(
                f"spec.gate.eval.{role}.api_key_env: environment variable {spec.api_key_env} "
                "is not set or empty"
            )
    price = spec.price or lab_prices.get(variant)  # none: the eval's cost is unknown, not $0
    return Endpoint(variant, chat_url(base_url), spec.model or variant, price, api_key)


def _variation_values(rollout: Rollout, flags: FlagStore | None) -> tuple[str, str]:
    """A runbook may name variations by name; the gateway labels metrics with their values."""
    if flags is None:
        from canaryctl.flags.factory import flag_store_for

        flags = flag_store_for(rollout.spec.flag)
    return flags.variants(flags.snapshot())


def _observe(
    rollout: Rollout,
    window: float,
    metrics: MetricsSource | None,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> Observation:
    """The last `window` of live traffic. A scrape source only sees counters, so it samples,
    waits out the window, and samples again; Prometheus keeps history and answers at once."""
    if metrics is None:
        from canaryctl.metrics.factory import metrics_source_for
        from canaryctl.metrics.measures import NEEDS

        spec = rollout.spec
        metrics = metrics_source_for(
            spec.metrics,
            clock=clock,
            slos=spec.slos,
            baseline=spec.flag.baseline,
            canary=spec.flag.canary,
            # the cost projection reads live cost per query, whatever the SLOs read
            needs=NEEDS["cost_per_query_usd"] if spec.gate and spec.gate.cost else (),
        )
    if rollout.spec.metrics.provider == "scrape":
        metrics.check()
        since = clock()
        sleep(window)
        return metrics.observe(since)
    metrics.check()
    return metrics.observe(clock() - window)
