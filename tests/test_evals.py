"""Evals, pure parts: scorers, the JSON Schema subset, intervals, the judge, benchmark loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from canaryctl.analysis import Outcome
from canaryctl.errors import InvalidDocument
from canaryctl.evals import (
    BenchmarkItem,
    ItemResult,
    builtin_benchmark,
    judge_eval,
    load_benchmark,
    newcombe_interval,
    score,
    summarize,
    wilson_interval,
)
from canaryctl.evals.schema import schema_problems
from canaryctl.lab.arithmetic import parse_question
from canaryctl.runbook.gate import EvalSpec
from canaryctl.runbook.gateway import PriceSpec


def item(**fields: object) -> BenchmarkItem:
    return BenchmarkItem.model_validate({"prompt": "q", **fields})


@pytest.mark.parametrize(
    ("fields", "reply", "right"),
    [
        ({"scorer": "exact", "expected": "Paris"}, "  Paris\n", True),
        ({"scorer": "exact", "expected": "Paris"}, "paris", False),
        ({"scorer": "exact", "expected": "Paris", "ignore_case": True}, "paris", True),
        ({"scorer": "contains", "expected": "42"}, "the answer is 42.", True),
        ({"scorer": "contains", "expected": "42"}, "the answer is 41.", False),
        ({"scorer": "regex", "pattern": r"^\d{3}-\d{4}$"}, "555-1234", True),
        ({"scorer": "regex", "pattern": r"^\d{3}-\d{4}$"}, "call 555-1234", False),
        ({"scorer": "regex", "pattern": r"city: (\w+)", "expected": "Oslo"}, "city: Oslo", True),
        ({"scorer": "regex", "pattern": r"city: (\w+)", "expected": "Oslo"}, "city: Rome", False),
        ({"scorer": "numeric", "expected": 42, "pattern": r"=\s*(-?\d+)"}, "40 + 2 = 42.", True),
        ({"scorer": "numeric", "expected": 42, "pattern": r"=\s*(-?\d+)"}, "40 + 2 = 43.", False),
        ({"scorer": "numeric", "expected": 3.14, "tolerance": 0.01}, "about 3.141", True),
        ({"scorer": "numeric", "expected": 3.14, "tolerance": 0.001}, "about 3.2", False),
        ({"scorer": "numeric", "expected": 1000}, "it costs 1,000 dollars", True),
        ({"scorer": "numeric", "expected": 1}, "no number here", False),
    ],
)
def test_scorers(fields: dict[str, object], reply: str, right: bool) -> None:
    assert score(item(**fields), reply) is right


SCHEMA = {
    "type": "object",
    "required": ["city", "days"],
    "additionalProperties": False,
    "properties": {
        "city": {"type": "string", "minLength": 1},
        "days": {"type": "integer", "minimum": 1, "maximum": 14},
        "tags": {"type": "array", "items": {"enum": ["beach", "city"]}, "maxItems": 2},
    },
}


@pytest.mark.parametrize(
    ("reply", "right"),
    [
        ('{"city": "Oslo", "days": 3}', True),
        ('Sure! Here it is: {"city": "Oslo", "days": 3, "tags": ["city"]} Enjoy.', True),
        ('{"city": "Oslo"}', False),
        ('{"city": "Oslo", "days": 30}', False),
        ('{"city": "Oslo", "days": true}', False),
        ('{"city": "Oslo", "days": 3, "tags": ["ski"]}', False),
        ('{"city": "Oslo", "days": 3, "price": 1}', False),
        ("not json at all", False),
    ],
)
def test_json_schema_scorer(reply: str, right: bool) -> None:
    assert score(item(scorer="json_schema", schema=SCHEMA), reply) is right


def test_schema_problems_name_the_path() -> None:
    problems = schema_problems({"city": "", "days": 0, "tags": [1]}, SCHEMA)
    assert "$.city: shorter than 1" in problems
    assert "$.days: below the minimum 1" in problems
    assert any(p.startswith("$.tags[0]") for p in problems)


def test_wilson_and_newcombe_intervals_match_published_values() -> None:
    # Newcombe (1998), table II example: 56/70 vs 48/80 -> difference 0.2, 95% CI 0.0524..0.3339
    low, high = newcombe_interval(56, 70, 48, 80, 0.95)
    assert (round(low, 4), round(high, 4)) == (0.0524, 0.3339)
    low, high = wilson_interval(81, 263, 0.95)  # Wikipedia's Wilson example: 0.2553..0.3662
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)


def scores(right: int, n: int, *, base_right: int, base_n: int | None = None) -> tuple:
    price = PriceSpec()
    canary = [ItemResult(str(i), i < right, 0.1) for i in range(n)]
    baseline = [ItemResult(str(i), i < base_right, 0.1) for i in range(base_n or n)]
    return (
        summarize("new", "new", canary, price, 0.95),
        summarize("old", "old", baseline, price, 0.95),
    )


SPEC = EvalSpec.model_validate(
    {
        "builtin": "arithmetic",
        "baseline": {"base_url": "http://x"},
        "canary": {"base_url": "http://y"},
        "min_score": 0.8,
        "margin": 0.05,
        "min_items": 30,
    }
)


def test_judge_passes_a_canary_as_good_as_the_baseline() -> None:
    floor, versus = judge_eval(SPEC, *scores(380, 400, base_right=370))
    assert (floor.outcome, versus.outcome) == (Outcome.PASS, Outcome.PASS)
    assert versus.bound == pytest.approx(370 / 400 - 0.05)


def test_judge_fails_a_clearly_worse_canary() -> None:
    floor, versus = judge_eval(SPEC, *scores(240, 400, base_right=360))
    assert (floor.outcome, versus.outcome) == (Outcome.FAIL, Outcome.FAIL)
    assert "below 0.8" in floor.reason and "worse than -0.05" in versus.reason


def test_judge_is_inconclusive_when_the_interval_straddles_the_margin() -> None:
    _, versus = judge_eval(SPEC, *scores(340, 400, base_right=360))  # -5% +- ~5%
    assert versus.outcome is Outcome.INCONCLUSIVE


def test_judge_is_inconclusive_with_too_few_items_however_good() -> None:
    checks = judge_eval(SPEC, *scores(10, 10, base_right=9))
    assert {c.outcome for c in checks} == {Outcome.INCONCLUSIVE}
    assert "too few items (10 < min_items 30)" in checks[0].reason


def test_summarize_counts_errors_as_wrong_and_costs_tokens() -> None:
    price = PriceSpec(prompt_per_1k=1.0, completion_per_1k=2.0)
    results = [
        ItemResult("a", True, 0.1, None, 100, 50),
        ItemResult("b", False, 0.3, None, 100, 50),
        ItemResult("c", False, None, "HTTP 503 after 3 attempt(s)"),
    ]
    summary = summarize("v", "m", results, price, 0.95)
    assert (summary.items, summary.right, summary.errors) == (3, 1, 1)
    assert summary.cost_usd == pytest.approx(2 * (0.1 + 0.1))
    assert summary.cost_per_query == pytest.approx(0.2)
    assert (summary.latency_p50, summary.latency_p95) == (0.1, 0.3)


def test_builtin_arithmetic_items_are_questions_the_lab_understands() -> None:
    items = load_benchmark(builtin_benchmark("arithmetic"))
    assert len(items) == 400
    for each in items:
        question = parse_question(each.chat()[-1]["content"])
        assert question is not None and question.answer == each.expected
        assert score(each, f"{question.expression} = {question.answer}. Thanks!")


def test_bad_benchmark_lines_are_reported_with_their_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "bench.jsonl"
    lines = [
        json.dumps({"prompt": "ok", "scorer": "exact", "expected": "x"}),
        "",
        "{not json",
        json.dumps({"prompt": "q", "scorer": "numeric", "expected": "forty"}),
        json.dumps({"prompt": "q", "scorer": "regex", "pattern": "("}),
        json.dumps({"prompt": "q", "scorer": "json_schema", "schema": {"oneOf": []}}),
        json.dumps({"promt": "q", "scorer": "exact", "expected": "x"}),
    ]
    path.write_text("\n".join(lines))
    with pytest.raises(InvalidDocument) as caught:
        load_benchmark(path)
    text = str(caught.value)
    assert f"{path}:3: not JSON" in text
    assert f"{path}:4: scorer numeric needs a numeric expected" in text
    assert f"{path}:5: pattern: not a regular expression" in text
    assert f"{path}:6: unsupported JSON Schema keywords: schema.oneOf" in text
    assert f"{path}:7: promt: unknown field" in text
