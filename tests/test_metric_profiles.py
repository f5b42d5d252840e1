"""Metric profiles and custom PromQL SLOs as documents: what loads, what is refused and where.

No Prometheus here: these are the checks made before anything acts (exit 2 with locations).
The real-server behaviour is in test_prometheus_profiles.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from canaryctl.analysis import judge
from canaryctl.cli import main
from canaryctl.errors import InvalidDocument, InvalidInput
from canaryctl.metrics import Observation, PrometheusMetricsSource, VariantStats, metrics_source_for
from canaryctl.metrics.profile import load_profile
from canaryctl.runbook import AnalysisSpec, Rollout, SloSpec, load_document
from canaryctl.runbook.profile import shipped_profiles
from canaryctl.runbook.promql import promql_string, render

PROFILE = """\
apiVersion: canaryctl/v1
kind: MetricProfile
metadata: {name: mine}
spec:
  variant_label: deployment
  queries:
    - promql: sum by (deployment) (increase(app_requests_total{ {{selector}} }[{{window}}]))
      yields: {requests: {}}
    - promql: sum by (deployment) (increase(app_failures_total{ {{selector}} }[{{window}}]))
      yields: {errors: {}}
    - promql: sum by (deployment) (increase(app_fallbacks_total{ {{selector}} }[{{window}}]))
      yields: {fallbacks: {}}
"""


def rollout_doc(metrics: dict[str, Any], slos: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "canaryctl/v1",
        "kind": "Rollout",
        "metadata": {"name": "r"},
        "spec": {
            "flag": {
                "provider": "file",
                "path": "f.json",
                "key": "k",
                "baseline": "a",
                "canary": "b",
            },
            "metrics": metrics,
            "slos": slos,
            "steps": [{"set_weight": 10}],
        },
    }


PROM = {"provider": "prometheus", "url": "http://127.0.0.1:9"}


def write(tmp_path: Path, name: str, document: str | dict[str, Any]) -> Path:
    path = tmp_path / name
    path.write_text(document if isinstance(document, str) else yaml.safe_dump(document))
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(InvalidDocument) as caught:
        load_document(path)
    return [str(p) for p in caught.value.problems]


def test_the_shipped_profiles_load_and_validate() -> None:
    assert shipped_profiles() == ["canaryctl", "litellm", "otel-genai", "recorded"]
    canaryctl, litellm = load_profile("canaryctl"), load_profile("litellm")
    otel = load_profile("otel-genai")
    assert canaryctl.variant_label == "variant"
    assert litellm.variant_label == "requested_model"
    assert otel.variant_label == "gen_ai_request_model"
    every = {"requests", "errors", "fallbacks", "latency_buckets", "prompt_tokens"}
    every |= {"completion_tokens", "cost_usd", "ttft_buckets"}
    every |= {"unpriced"}  # answers of a model with no price (LiteLLM: at no spend)
    assert litellm.ingredients == every  # LiteLLM meters no quality scores
    ours = every | {"quality_sum", "quality_count", "rejected", "filtered", "tpot_buckets"}
    ours |= {"unpriced_fallbacks"}  # a fallback's unpriced answers, left out of cost per query
    assert canaryctl.ingredients == ours
    recorded = load_profile("recorded")  # the same counts, through the recording rules
    assert recorded.ingredients == ours and not recorded.shadow
    # The client conventions define no cost and no first token.
    assert otel.ingredients == every - {"cost_usd", "unpriced", "ttft_buckets"}


@pytest.mark.parametrize(
    ("slos", "profile", "queries"),
    [
        ([], "canaryctl", 9),  # no SLOs given: every ingredient
        ([], "litellm", 9),
        (
            [{"metric": "error_rate", "max": 0.02}, {"metric": "latency_p95_seconds", "max": 2}],
            "canaryctl",
            2,
        ),
        (
            [{"metric": "error_rate", "max": 0.02}, {"metric": "latency_p95_seconds", "max": 2}],
            "litellm",
            4,  # error_rate reads the fallbacks too: a rescued request is a model failure
        ),
        # requests, errors and fallbacks always: the built-in check on the canary reads them
        ([{"metric": "latency_p95_seconds", "max": 2}], "litellm", 4),
        # and the answers without a price, which leave the cost unknown
        ([{"metric": "cost_per_query_usd", "max": 0.01}], "canaryctl", 3),
        ([{"metric": "cost_per_query_usd", "max": 0.01}], "litellm", 5),
        ([{"metric": "quality_score", "min": 0.8}], "canaryctl", 3),
        ([{"metric": "ttft_p95_seconds", "max": 0.5}], "canaryctl", 2),
        ([{"metric": "ttft_p95_seconds", "max": 0.5}], "litellm", 4),
    ],
)
def test_an_analysis_asks_only_what_the_slos_read(
    slos: list[dict[str, Any]], profile: str, queries: int
) -> None:
    document = rollout_doc(
        {**PROM, "profile": profile}, slos or [{"metric": "error_rate", "max": 1}]
    )
    spec = Rollout.model_validate(document).spec
    source = metrics_source_for(spec.metrics, slos=spec.slos if slos else ())
    assert isinstance(source, PrometheusMetricsSource)
    assert len(source.queries) == queries


def test_a_profile_file_is_a_document_validate_accepts(tmp_path: Path) -> None:
    path = write(tmp_path, "mine.yaml", PROFILE)
    result = CliRunner().invoke(main, ["validate", str(path), "-o", "text"])
    assert result.exit_code == 0, result.output
    assert "valid MetricProfile 'mine'" in result.output
    schema = CliRunner().invoke(main, ["schema", "MetricProfile"])
    assert schema.exit_code == 0 and '"yields"' in schema.output


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            ("{{window}}]))\n      yields: {requests", "{{windw}}]))\n      yields: {requests"),
            ":7: spec.queries[0].promql: unknown template variable {{windw}}; known: "
            "{{selector}}, {{window}}",
        ),
        (
            ("[{{window}}]))\n      yields: {errors", "[5m]))\n      yields: {errors"),
            ":9: spec.queries[1].promql: must use {{window}}",
        ),
        (
            ("yields: {errors: {}}", "yields: {requests: {}}"),
            "spec.queries[1].yields.requests: already yielded by queries[0]",
        ),
        (
            ("yields: {requests: {}}", "yields: {latency: {}}"),
            ":8: spec.queries[0].yields.latency: Input should be 'requests'",
        ),
        (("variant_label: deployment", "variant_label: deploy-ment"), ":5: spec.variant_label"),
    ],
)
def test_a_bad_profile_is_refused_with_its_location(
    tmp_path: Path, edit: tuple[str, str], expected: str
) -> None:
    assert edit[0] in PROFILE
    path = write(tmp_path, "mine.yaml", PROFILE.replace(*edit))
    found = problems(path)
    assert any(expected in p for p in found), found
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2
    assert expected in result.output


def test_a_runbook_naming_a_bad_profile_file_exits_2_before_acting(tmp_path: Path) -> None:
    write(
        tmp_path,
        "mine.yaml",
        PROFILE.replace("{{window}}]))\n      yields: {req", "{{w}}]))\n      yields: {req"),
    )
    runbook = write(
        tmp_path,
        "r.yaml",
        rollout_doc({**PROM, "profile": "mine.yaml"}, [{"metric": "error_rate", "max": 0.1}]),
    )
    result = CliRunner().invoke(
        main, ["rollout", "run", str(runbook), "--state", str(tmp_path / "s.db")]
    )
    assert result.exit_code == 2
    assert (
        f"{tmp_path / 'mine.yaml'}:7: spec.queries[0].promql: unknown template variable {{{{w}}}}"
        in result.output
    )
    assert not (tmp_path / "s.db").exists()  # refused before the journal opened


def test_a_profile_that_cannot_feed_an_slo_names_the_slo(tmp_path: Path) -> None:
    path = write(tmp_path, "mine.yaml", PROFILE)
    slos = [{"metric": "error_rate", "max": 0.1}, {"metric": "latency_p95_seconds", "max": 2}]
    spec = Rollout.model_validate(rollout_doc({**PROM, "profile": str(path)}, slos)).spec
    with pytest.raises(
        InvalidInput,
        match=r"spec.slos\[1\]: latency_p95_seconds needs "
        r"latency_buckets, which metric profile '.*mine.yaml' does not yield",
    ):
        metrics_source_for(spec.metrics, slos=spec.slos, baseline="a", canary="b")


def test_a_litellm_runbook_asking_for_quality_is_refused_naming_the_slo() -> None:
    slos = [{"metric": "error_rate", "max": 0.1}, {"metric": "quality_score", "min": 0.8}]
    spec = Rollout.model_validate(rollout_doc({**PROM, "profile": "litellm"}, slos)).spec
    with pytest.raises(
        InvalidInput,
        match=r"spec.slos\[1\]: quality_score needs quality_count, quality_sum, which metric "
        "profile 'litellm' does not yield",
    ):
        metrics_source_for(spec.metrics, slos=spec.slos, baseline="a", canary="b")


def test_validate_refuses_a_quality_slo_the_profile_cannot_feed(tmp_path: Path) -> None:
    slos = [{"metric": "quality_score", "compare": "baseline", "max_decrease": 0.05}]
    litellm = write(tmp_path, "l.yaml", rollout_doc({**PROM, "profile": "litellm"}, slos))
    ours = write(tmp_path, "c.yaml", rollout_doc({**PROM, "profile": "canaryctl"}, slos))
    refused = CliRunner().invoke(main, ["validate", str(litellm), str(ours), "-o", "text"])
    assert refused.exit_code == 2
    assert (
        f"{litellm}: spec.slos[0]: quality_score needs quality_count, quality_sum, which metric "
        "profile 'litellm' does not yield" in refused.output
    )
    assert f"{ours}: valid Rollout" in refused.output


CUSTOM = {"name": "judge_score", "query": 'avg(score{model="{{variant}}"})', "min": 0.8}


@pytest.mark.parametrize(
    ("metrics", "slo", "expected"),
    [
        (
            {"provider": "scrape", "targets": ["http://127.0.0.1:9/metrics"]},
            CUSTOM,
            "spec.slos[1].query: custom PromQL SLOs need metrics.provider prometheus",
        ),
        (
            PROM,
            {**CUSTOM, "query": 'avg(score{m="{{model}}"})'},
            "spec.slos[1].query: unknown "
            "template variable {{model}}; known: {{route}}, {{selector}}, {{variant}}, "
            "{{variant_label}}, {{window}}",
        ),
        (PROM, {**CUSTOM, "query": "avg(score)"}, "spec.slos[1].query: must use {{variant}}"),
        (
            PROM,
            {k: v for k, v in CUSTOM.items() if k != "name"},
            "spec.slos[1].name: a query SLO needs a name",
        ),
        (PROM, {**CUSTOM, "metric": "error_rate"}, "spec.slos[1]: needs exactly one of metric"),
        (
            PROM,
            {**CUSTOM, "query": 'avg(x{route="{{route}}",m="{{variant}}"})'},
            "spec.slos[1].query: uses {{route}} but metrics.route is not set",
        ),
        (PROM, {**CUSTOM, "name": "error_rate_2", "metric": "error_rate", "query": None}, None),
        (
            {**PROM, "variants": {"c": "group-c"}},
            CUSTOM,
            "spec.metrics.variants: 'c' is neither the baseline nor the canary variation",
        ),
        (
            {**PROM, "profile": "litelm"},
            CUSTOM,
            "spec.metrics.profile: no shipped profile 'litelm' "
            "(shipped: canaryctl, litellm, otel-genai, recorded)",
        ),
    ],
)
def test_custom_slos_are_checked_where_they_are_written(
    tmp_path: Path, metrics: dict[str, Any], slo: dict[str, Any], expected: str | None
) -> None:
    slo = {k: v for k, v in slo.items() if v is not None}
    path = write(
        tmp_path, "r.yaml", rollout_doc(metrics, [{"metric": "error_rate", "max": 1}, slo])
    )
    if expected is None:
        load_document(path)
        return
    found = problems(path)
    assert any(expected in p for p in found), found


def test_two_slos_cannot_share_a_name(tmp_path: Path) -> None:
    slos = [CUSTOM, {**CUSTOM, "min": 0.5}]
    found = problems(write(tmp_path, "r.yaml", rollout_doc(PROM, slos)))
    assert any("spec.slos[1].name: 'judge_score' already names slos[0]" in p for p in found)


def test_template_values_cannot_break_out_of_their_quotes() -> None:
    source = PrometheusMetricsSource("http://127.0.0.1:9", variants={"b": 'evil"}) or vector(1'})
    assert source.name_of("b", "requested_model") == 'evil"}) or vector(1'
    rendered = render('x{m="{{variant}}"}', {"variant": promql_string(source.name_of("b", "m"))})
    assert rendered == 'x{m="evil\\"}) or vector(1"}'


def test_a_variant_may_be_named_per_label() -> None:
    source = PrometheusMetricsSource(
        "http://127.0.0.1:9", variants={"a": "group-a", "b": {"requested_model": "group-b"}}
    )
    assert source.name_of("a", "model") == "group-a"  # one name for every label
    assert source.name_of("b", "requested_model") == "group-b"
    assert source.name_of("b", "model") == "b"  # a label not mapped: the variation itself
    assert source.name_of("c", "model") == "c"


def test_a_custom_slo_is_judged_on_its_own_number_and_no_number_is_inconclusive() -> None:
    slos = [
        SloSpec(name="score", query='s{m="{{variant}}"}', min=0.8),
        SloSpec(name="ratio", query='r{m="{{variant}}"}', compare="baseline", max_ratio=2),
    ]
    traffic = {"a": VariantStats(requests=500), "b": VariantStats(requests=500)}

    def verdict(values: dict[str, dict[str, float]], requests: float = 500) -> list[str]:
        variants = {**traffic, "b": VariantStats(requests=requests)}
        obs = Observation(0, 60, variants=variants, slo_values=values)
        result = judge(slos, AnalysisSpec(min_requests=100), obs, baseline="a", canary="b")
        return [f"{c.outcome.value}: {c.reason}" for c in result.checks]

    assert verdict({"score": {"b": 0.9}, "ratio": {"a": 1.0, "b": 1.5}}) == [
        "pass: score = 0.9 is within score >= 0.8",
        "pass: ratio = 1.5 is within ratio <= baseline x 2 (2)",
    ]
    assert verdict({"score": {"b": 0.7}, "ratio": {"a": 1.0, "b": 2.5}}) == [
        "fail: score = 0.7 is below the minimum 0.8",
        "fail: ratio = 2.5 is above 2 (baseline 1, ratio <= baseline x 2)",
    ]
    assert verdict({"score": {}, "ratio": {"b": 1.0}}) == [
        "inconclusive: score: no value for canary 'b'",
        "inconclusive: ratio: no value for baseline 'a'",
    ]
    # A number without traffic behind it is no verdict either: min_requests holds.
    assert verdict({"score": {"b": 0.9}, "ratio": {"a": 1, "b": 1}}, requests=10)[0].startswith(
        "inconclusive: score >= 0.8: too few requests for 'b' (10 < 100)"
    )
