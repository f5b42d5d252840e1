"""A model without a price: its cost is unknown, not $0, so a cost SLO on it is never a pass.

The gateway counts the answers of a model with no `price` in llm_unpriced_requests_total (and
none of their cost in llm_cost_usd_total); a source reads them into the `unpriced` count, and
cost_per_query_usd has no value while a variant has any. A price set to zero on purpose (a local
model) is a price: that variant's cost per query is $0 and is judged like any other."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from canaryctl.analysis import Outcome, assess, judge
from canaryctl.cli import main
from canaryctl.lab import LabStack
from canaryctl.metrics import Observation, ScrapeMetricsSource, VariantStats, measure
from canaryctl.retry import RetryPolicy
from canaryctl.runbook.gateway import GatewaySpec
from canaryctl.runbook.lab import LabSpec
from canaryctl.runbook.rollout import AnalysisSpec, SloSpec

THRESHOLD = AnalysisSpec(interval=10, min_requests=20, method="threshold")
SEQUENTIAL = AnalysisSpec(interval=10, min_requests=20, method="sequential")
COST_MAX = SloSpec(metric="cost_per_query_usd", max=0.01)
COST_RELATIVE = SloSpec(metric="cost_per_query_usd", compare="baseline", max_ratio=1.2)
PRICED = {"prompt_per_1k": 0.01, "completion_per_1k": 0.03}
NAMES = ("big-llm", "local-llm", "free-llm", "flaky-llm")


def _cost_check(verdict: Any) -> Any:
    (check,) = [c for c in verdict.checks if c.metric == "cost_per_query_usd"]
    return check


# -- the pure core, on recorded counts -------------------------------------------------------


def _window(canary: VariantStats, baseline: VariantStats) -> Observation:
    return Observation(0.0, 60.0, {"local-llm": canary, "big-llm": baseline})


PAID = VariantStats(requests=200, prompt_tokens=2e4, completion_tokens=4e4, cost_usd=1.4)
UNPRICED = VariantStats(requests=200, prompt_tokens=2e4, completion_tokens=4e4, unpriced=200)


def test_a_variant_with_unpriced_answers_has_no_cost_per_query() -> None:
    assert measure("cost_per_query_usd", UNPRICED) is None
    assert measure("cost_per_query_usd", PAID) == pytest.approx(1.4 / 200)
    # One unknown answer among many still leaves the sum unknown: no value, not a low one.
    assert (
        measure("cost_per_query_usd", VariantStats(requests=200, cost_usd=1.4, unpriced=1)) is None
    )
    # Tokens per query does not depend on a price.
    assert measure("tokens_per_query", UNPRICED) == pytest.approx(300)


@pytest.mark.parametrize("slo", [COST_MAX, COST_RELATIVE], ids=["max", "relative"])
@pytest.mark.parametrize("analysis", [THRESHOLD, SEQUENTIAL], ids=["threshold", "sequential"])
def test_an_unpriced_canary_is_inconclusive_on_cost_and_says_what_settles_it(
    slo: SloSpec, analysis: AnalysisSpec
) -> None:
    ledger: dict[str, Any] = {}
    for _ in range(3):  # three analyses: a sequential test must not pass it on $0 either
        verdict, ledger = assess(
            [slo], analysis, _window(UNPRICED, PAID), ledger, baseline="big-llm", canary="local-llm"
        )
        check = _cost_check(verdict)
        assert check.outcome is Outcome.INCONCLUSIVE
        assert verdict.outcome is not Outcome.PASS
        assert check.canary_value is None
        assert "'local-llm'" in check.reason and "no price" in check.reason
        assert "price" in check.reason and "200 of 200" in check.reason
        # The sequential tests learned nothing from the $0: no interval was tested.
        assert check.evidence is None or check.evidence.samples == 0


def test_a_fallbacks_unpriced_answers_are_left_out_of_the_variants_cost() -> None:
    """A variant is judged on what its own model did: answers an unpriced fallback gave are
    neither $0 nor unknown for it, they are left out (cost over the other requests)."""
    rescued = VariantStats(
        requests=200, fallbacks=20, cost_usd=1.8, unpriced=20, unpriced_fallbacks=20
    )
    assert measure("cost_per_query_usd", rescued) == pytest.approx(1.8 / 180)
    # The rescued variant as the baseline: its 0.01 is a value to judge the canary against.
    verdict = judge(
        [COST_RELATIVE], THRESHOLD, _window(PAID, rescued), baseline="big-llm", canary="local-llm"
    )
    check = _cost_check(verdict)
    assert check.outcome is Outcome.PASS and check.bound == pytest.approx(0.012)
    # Its own model unpriced too: unknown again, whatever the fallbacks did.
    both = VariantStats(requests=200, cost_usd=0.3, unpriced=190, unpriced_fallbacks=20)
    assert measure("cost_per_query_usd", both) is None


@pytest.mark.parametrize("analysis", [THRESHOLD, SEQUENTIAL], ids=["threshold", "sequential"])
def test_an_unpriced_baseline_leaves_a_relative_cost_bound_undecided(
    analysis: AnalysisSpec,
) -> None:
    ledger: dict[str, Any] = {}
    for _ in range(3):
        verdict, ledger = assess(
            [COST_RELATIVE], analysis, _window(PAID, UNPRICED), ledger,
            baseline="big-llm", canary="local-llm",
        )  # fmt: skip
        check = _cost_check(verdict)
        assert check.outcome is Outcome.INCONCLUSIVE
        assert "baseline 'big-llm'" in check.reason and "no price" in check.reason
        assert check.evidence is None or check.evidence.samples == 0


def test_the_unknown_cost_is_inconclusive_however_few_requests_came() -> None:
    """The missing price is the reason given, before the sample size: more traffic would not
    settle it."""
    few = VariantStats(requests=5, prompt_tokens=50, completion_tokens=50, unpriced=5)
    verdict = judge(
        [COST_MAX], THRESHOLD, _window(few, PAID), baseline="big-llm", canary="local-llm"
    )
    assert "no price" in verdict.reason and "too few" not in verdict.reason


def test_a_price_of_zero_on_purpose_is_a_price() -> None:
    free = VariantStats(requests=200, prompt_tokens=2e4, completion_tokens=4e4, cost_usd=0.0)
    verdict = judge(
        [COST_MAX], THRESHOLD, _window(free, PAID), baseline="big-llm", canary="local-llm"
    )
    assert measure("cost_per_query_usd", free) == 0.0
    assert verdict.outcome is Outcome.PASS


def test_the_unpriced_count_survives_the_journal() -> None:
    window = _window(UNPRICED, PAID)
    assert Observation.from_dict(json.loads(json.dumps(window.to_dict()))) == window


# -- through the gateway, as a rollout reads it ----------------------------------------------


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabStack]:
    """Four models, one route each: priced, unpriced (no `price`), free on purpose, and priced
    but failing half its requests over to the unpriced one."""
    tmp = tmp_path_factory.mktemp("unpriced")
    names = NAMES
    flags = {
        f"f-{name}": {
            "key": f"f-{name}", "on": True, "variations": [name], "fallthrough": {"variation": 0},
            "offVariation": 0, "version": 1, "salt": name, "targets": [], "contextTargets": [],
            "rules": [], "prerequisites": [], "trackEvents": False,
        }
        for name in names
    }  # fmt: skip
    (tmp / "flags.json").write_text(json.dumps({"flags": flags, "segments": {}}))
    fast = {"median": 0.001, "p95": 0.002}
    models: list[dict[str, Any]] = [
        {"name": "big-llm", "base_url": "lab://big-llm", "price": PRICED},
        {"name": "local-llm", "provider": "ollama", "base_url": "lab://local-llm"},
        {"name": "free-llm", "provider": "ollama", "base_url": "lab://free-llm",
         "price": {"prompt_per_1k": 0, "completion_per_1k": 0}},
        {"name": "flaky-llm", "base_url": "lab://flaky-llm", "price": PRICED,
         "fallback": ["local-llm"]},
    ]  # fmt: skip
    spec = LabSpec.model_validate(
        {
            "providers": [
                *({"name": n, "latency": fast} for n in names[:3]),
                {"name": "flaky-llm", "latency": fast, "errors": {"rate": 0.5}},
            ],
            "gateway": {
                "listen": "127.0.0.1:0",
                "flags": {"provider": "file", "path": str(tmp / "flags.json")},
                "routes": [{"name": f"r-{n}", "flag": f"f-{n}", "default_model": n} for n in names],
                "models": models,
            },
        }
    )
    with LabStack(spec, traffic=False) as stack:
        yield stack


def _observe(lab: LabStack, requests: int) -> Observation:
    source = ScrapeMetricsSource([lab.metrics_url], retry=RetryPolicy(attempts=1))
    source.check()
    since = source._history[-1].at
    for _ in range(requests):
        for name in NAMES:
            body = {"model": f"r-{name}", "messages": [{"role": "user", "content": "2 + 3?"}]}
            response = httpx.post(lab.gateway_url + "/v1/chat/completions", json=body, timeout=10)
            assert response.status_code == 200, response.text
    return source.observe(since)


def _count(lab: LabStack, name: str, **labels: str) -> float:
    text = httpx.get(lab.metrics_url).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


@pytest.mark.e2e
def test_a_rollout_to_an_unpriced_model_is_not_passed_on_cost(lab: LabStack) -> None:
    observation = _observe(lab, 25)
    paid, local, free = (observation.of(n) for n in ("big-llm", "local-llm", "free-llm"))
    # The priced model's cost is its tokens at its price (the tokens as the gateway counted them).
    expected = (paid.prompt_tokens * 0.01 + paid.completion_tokens * 0.03) / 1000
    assert paid.cost_usd == pytest.approx(expected) and paid.unpriced == 0
    assert local.requests == 25 and local.completion_tokens > 0
    assert local.unpriced == 25 and local.cost_usd == 0
    assert free.unpriced == 0 and measure("cost_per_query_usd", free) == 0.0

    slos = [COST_MAX, COST_RELATIVE]
    for analysis in (THRESHOLD, SEQUENTIAL):
        verdict, _ = assess(slos, analysis, observation, {}, baseline="big-llm", canary="local-llm")
        assert verdict.outcome is Outcome.INCONCLUSIVE, verdict.reason
        for check in verdict.checks:
            assert check.outcome is Outcome.INCONCLUSIVE
            assert "'local-llm'" in check.reason and "no price" in check.reason
    # A priced model whose failures an unpriced fallback answered: those answers are left out.
    flaky = observation.of("flaky-llm")
    assert flaky.fallbacks > 0 and flaky.unpriced == flaky.unpriced_fallbacks == flaky.fallbacks
    # Its own answers' tokens at its price, per request its own model answered, from the
    # gateway's counters by model (the only traffic this lab served).
    own = {"variant": "flaky-llm", "model": "flaky-llm"}
    prompt = _count(lab, "llm_tokens_total", kind="prompt", **own)
    completion = _count(lab, "llm_tokens_total", kind="completion", **own)
    answered = _count(lab, "llm_requests_total", outcome="ok", **own)
    expected = (prompt * 0.01 + completion * 0.03) / 1000 / answered
    assert measure("cost_per_query_usd", flaky) == pytest.approx(expected)
    # The model free on purpose is judged on its $0.
    verdict, _ = assess(
        [COST_MAX], THRESHOLD, observation, {}, baseline="big-llm", canary="free-llm"
    )
    assert verdict.outcome is Outcome.PASS, verdict.reason


@pytest.mark.e2e
def test_a_shadow_candidate_with_no_price_has_no_cost_per_query(
    make_lab: Callable[..., LabSpec], write_flags: Callable[..., Path]
) -> None:
    """A shadow step judges the candidate on its mirrored calls: unpriced there too."""
    write_flags(["big-llm", "local-llm"])
    fast = {"median": 0.001, "p95": 0.002}
    lab = make_lab(
        [{"name": "big-llm", "latency": fast}, {"name": "local-llm", "latency": fast}],
        [
            {"name": "big-llm", "base_url": "lab://big-llm", "price": PRICED},
            {"name": "local-llm", "provider": "ollama", "base_url": "lab://local-llm"},
        ],
    )
    data = lab.model_dump(mode="json", by_alias=True)
    data["gateway"]["routes"][0]["shadow"] = {"model": "local-llm", "percent": 100}
    with LabStack(LabSpec.model_validate(data), traffic=False) as stack:
        source = ScrapeMetricsSource([stack.metrics_url], retry=RetryPolicy(attempts=1))
        source.check()
        since = source._history[-1].at
        body = {"model": "bot", "messages": [{"role": "user", "content": "2 + 3?"}]}
        for _ in range(10):
            response = httpx.post(stack.gateway_url + "/v1/chat/completions", json=body)
            assert response.status_code == 200
        deadline = time.monotonic() + 10  # shadow calls are counted after the answer is sent
        while (
            _count(stack, "llm_shadow_unpriced_requests_total") < 10 and time.monotonic() < deadline
        ):
            time.sleep(0.02)
        observation = source.observe_shadow(since, baseline="big-llm", candidate="local-llm")
    candidate = observation.of("local-llm")
    assert candidate.unpriced == candidate.requests == 10 and candidate.cost_usd == 0
    assert measure("cost_per_query_usd", candidate) is None
    assert measure("cost_per_query_usd", observation.of("big-llm")) is not None


# -- validate, before anything runs ----------------------------------------------------------


ROLLOUT = """\
apiVersion: canaryctl/v1
kind: Rollout
metadata: {{name: to-local}}
spec:
  flag: {{provider: file, path: flags.json, key: support-bot-model, baseline: big-llm,
         canary: {canary}}}
  metrics: {{provider: scrape, targets: ["http://127.0.0.1:8080/metrics"], route: support-bot}}
  slos:
    - {{metric: error_rate, max: 0.02}}
    - {{metric: {metric}, max: 0.01}}
  steps:
    - set_weight: 50
    - pause: 1m
    - set_weight: 100
    - pause: 1m
"""

GATEWAY = """\
apiVersion: canaryctl/v1
kind: Gateway
metadata: {name: gw}
spec:
  flags: {provider: file, path: flags.json}
  routes:
    - {name: support-bot, flag: support-bot-model, default_model: big-llm}
  models:
    - {name: big-llm, base_url: "http://127.0.0.1:9/v1", price: {prompt_per_1k: 0.01}}
    - {name: local-llm, provider: ollama, base_url: "http://127.0.0.1:11434"}
    - {name: free-llm, provider: ollama, base_url: "http://127.0.0.1:11434",
       price: {prompt_per_1k: 0, completion_per_1k: 0}}
"""


def _validate(tmp_path: Path, canary: str, metric: str = "cost_per_query_usd") -> Any:
    (tmp_path / "rollout.yaml").write_text(ROLLOUT.format(canary=canary, metric=metric))
    (tmp_path / "gateway.yaml").write_text(GATEWAY)
    files = [str(tmp_path / "rollout.yaml"), str(tmp_path / "gateway.yaml")]
    return CliRunner().invoke(main, ["validate", *files])


def test_validate_warns_when_the_canary_of_a_cost_slo_has_no_price(tmp_path: Path) -> None:
    result = _validate(tmp_path, "local-llm")
    assert result.exit_code == 0, result.output
    warning = [line for line in result.stderr.splitlines() if "local-llm" in line]
    assert len(warning) == 1, result.stderr
    assert "rollout.yaml: warning: spec.slos[1]" in warning[0]
    assert "no price" in warning[0] and "gateway.yaml" in warning[0]


@pytest.mark.parametrize(
    ("canary", "metric"),
    [("free-llm", "cost_per_query_usd"), ("local-llm", "latency_p95_seconds")],
    ids=["priced-at-zero", "no-cost-slo"],
)
def test_validate_is_silent_for_a_free_model_or_without_a_cost_slo(
    tmp_path: Path, canary: str, metric: str
) -> None:
    result = _validate(tmp_path, canary, metric)
    assert result.exit_code == 0, result.output
    assert "price" not in result.stderr, result.stderr


def test_validate_warns_for_the_baseline_of_a_bound_against_it(tmp_path: Path) -> None:
    rollout = ROLLOUT.format(canary="big-llm", metric="cost_per_query_usd").replace(
        "baseline: big-llm", "baseline: local-llm"
    )
    rollout = rollout.replace(
        "{metric: cost_per_query_usd, max: 0.01}",
        "{metric: cost_per_query_usd, compare: baseline, max_ratio: 1.2}",
    )
    (tmp_path / "rollout.yaml").write_text(rollout)
    (tmp_path / "gateway.yaml").write_text(GATEWAY)
    files = [str(tmp_path / "rollout.yaml"), str(tmp_path / "gateway.yaml")]
    result = CliRunner().invoke(main, ["validate", *files])
    assert result.exit_code == 0, result.output
    assert "the baseline 'local-llm' has no price" in result.stderr, result.stderr


def test_no_price_survives_a_document_read_back() -> None:
    """Unset is None, not a zero price: a gateway dumped and read again (as a lab's copy is)
    still knows which model has no price."""
    spec = GatewaySpec.model_validate(yaml.safe_load(GATEWAY)["spec"])
    again = GatewaySpec.model_validate(spec.model_dump(mode="json", by_alias=True))
    priced = {m.name: m.priced for m in again.models}
    assert priced == {"big-llm": True, "local-llm": False, "free-llm": True}
    assert again.models[1].usd(1000, 1000) is None
    assert again.models[2].usd(1000, 1000) == 0.0
