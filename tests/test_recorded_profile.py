"""The `recorded` profile reads the same counts from deploy/'s recording rules as the `canaryctl`
profile reads from the raw counters: promtool evaluates every ingredient query of both profiles
over the same series (two gateways, one of them restarted mid-way) and both must give the count
computed by hand below."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from binaries import require_binary

from canaryctl.metrics.profile import load_profile
from canaryctl.runbook.promql import render

RULES = Path(__file__).resolve().parent.parent / "deploy" / "prometheus" / "canaryctl.rules.yml"
STEP = "15s"
"""The scrape interval of the series below."""
MINUTES = 10
AT = {"canaryctl": "20m", "recorded": "20m30s"}
"""When each profile's queries are evaluated. promtool loads the input series a rule
evaluation (1m) at a time, so a query between two evaluations sees the raw series only up to
the last one: the raw profile is asked on the minute, where its window (10m, 20m] holds every
scrape. The recorded one is asked between two evaluations, as a rollout's query usually is
(on the minute, Prometheus 2's closed range would also take the evaluation at 10m, an
eleventh minute): its window (10m30s, 20m30s] holds the minutes ending 11m ... 20m."""
PER_MINUTE = {"ok": 60, "error": 20}
"""Per gateway: 15 and 5 requests a scrape."""
UNPRICED = {"ok": 3, "fallback_ok": 1}
"""Answers of a model with no price a scrape, by outcome."""


def series(*, restart: bool) -> list[dict[str, str]]:
    """Two gateways, a and b; with `restart`, b restarts at 15m (its counters fall to 0 and
    count up again)."""

    def counter(name: str, labels: str, per_scrape: float) -> list[dict[str, str]]:
        a = f"0+{per_scrape}x120"
        b = f"0+{per_scrape}x60 0+{per_scrape}x59" if restart else a
        return [
            {"series": f'{name}{{instance="a",route="bot",{labels}}}', "values": a},
            {"series": f'{name}{{instance="b",route="bot",{labels}}}', "values": b},
        ]

    found = []
    for outcome, per_minute in PER_MINUTE.items():
        found += counter(
            "llm_requests_total", f'variant="canary",outcome="{outcome}"', per_minute / 4
        )
    # All 20 requests a scrape under 1 s, 5 of them under 0.5 s.
    for name in ("llm_request_duration_seconds_bucket", "llm_time_to_first_token_seconds_bucket",
                 "llm_time_per_output_token_seconds_bucket"):  # fmt: skip
        for le, per_scrape in (("0.5", 5), ("1", 20), ("+Inf", 20)):
            found += counter(name, f'variant="canary",le="{le}"', per_scrape)
    found += counter("llm_tokens_total", 'variant="canary",kind="prompt"', 400)
    found += counter("llm_tokens_total", 'variant="canary",kind="completion"', 100)
    found += counter("llm_cost_usd_total", 'variant="canary"', 0.02)
    for outcome, per_scrape in UNPRICED.items():
        found += counter("llm_unpriced_requests_total", f'variant="canary",outcome="{outcome}"',
                         per_scrape)  # fmt: skip
    found += counter("llm_quality_score_sum", 'variant="canary"', 8)
    found += counter("llm_quality_score_count", 'variant="canary"', 10)
    return found


def expected(promql: str) -> list[dict[str, str | float]]:
    """What each ingredient query must answer over the 10 minutes, by hand: per scrape counts
    times 4 scrapes a minute, times 10 minutes, times 2 gateways."""
    scale = 4 * MINUTES * 2
    if "llm_requests" in promql:
        return [{"labels": f'{{outcome="{o}",variant="canary"}}', "value": m / 4 * scale}
                for o, m in PER_MINUTE.items()]  # fmt: skip
    if "_bucket" in promql:
        return [{"labels": f'{{le="{le}",variant="canary"}}', "value": n * scale}
                for le, n in (("+Inf", 20), ("0.5", 5), ("1", 20))]  # fmt: skip
    if "llm_unpriced_requests" in promql:
        return [{"labels": f'{{outcome="{o}",variant="canary"}}', "value": n * scale}
                for o, n in UNPRICED.items()]  # fmt: skip
    if "llm_tokens" in promql:
        return [{"labels": '{kind="completion",variant="canary"}', "value": 100 * scale},
                {"labels": '{kind="prompt",variant="canary"}', "value": 400 * scale}]  # fmt: skip
    per_scrape = {
        "llm_cost_usd": 0.02,
        "llm_quality_score_sum": 8,
        "llm_quality_score_count": 10,
    }
    name = next(n for n in per_scrape if n in promql)
    return [{"labels": '{variant="canary"}', "value": round(per_scrape[name] * scale, 6)}]


def promtool_test(tmp_path: Path, tests: list[dict[str, Any]], *, restart: bool) -> None:
    promtool = require_binary("promtool", package="prometheus")
    unit = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [{"interval": STEP, "input_series": series(restart=restart),
                   "promql_expr_test": tests}],
    }  # fmt: skip
    path = tmp_path / "recorded.test.yml"
    path.write_text(yaml.safe_dump(unit, sort_keys=False))
    done = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def queries(name: str) -> list[tuple[str, str]]:
    """(PromQL, when to evaluate it) of each query of profile `name`."""
    values = {"window": f"{MINUTES}m", "selector": 'route="bot"'}
    return [(render(query.promql, values), AT[name]) for query in load_profile(name).queries]


def test_the_recorded_profile_counts_what_the_raw_counters_count(tmp_path: Path) -> None:
    tests = [
        {
            "expr": f"round({promql}, 0.000001)",  # the cost's float sums, to micro-dollars
            "eval_time": when,
            "exp_samples": expected(promql),
        }
        for promql, when in queries("canaryctl") + queries("recorded")
    ]
    assert len(tests) == 18
    promtool_test(tmp_path, tests, restart=False)


def test_across_a_gateway_restart_both_profiles_agree_within_two_percent(tmp_path: Path) -> None:
    """A restart loses what the restarted gateway counted since its last scrape, and each
    profile extrapolates around the gap its own way (the raw one over the whole window, the
    recorded one within the minute): the two stay within 2% of each other."""
    tests = []
    for (recorded, _), (raw, _) in zip(queries("recorded"), queries("canaryctl"), strict=True):
        # Both on the minute here, so that the raw series are loaded to the end of the window;
        # the recorded query then also takes the evaluation at 10m (Prometheus 2's closed
        # range), an eleventh minute, which `offset 1s` moves out of its window.
        shifted = recorded.replace("[10m]", "[10m] offset 1s")
        assert shifted != recorded
        tests.append({
            "expr": f"abs(({shifted}) - ({raw})) <= bool 0.02 * ({raw})",
            "eval_time": AT["canaryctl"],
            "exp_samples": [{"labels": row["labels"], "value": 1} for row in expected(raw)],
        })  # fmt: skip
    promtool_test(tmp_path, tests, restart=True)


@pytest.mark.parametrize("selector", ['route="bot"', 'route="bot",variant=~".+"'])
def test_every_recorded_query_keeps_only_labels_the_rules_keep(selector: str) -> None:
    """A selector on `route` and `variant` matches recorded series; the rules keep no other
    label, which the profile's header tells users."""
    rules = yaml.safe_load(RULES.read_text())
    recorded = {rule["record"] for group in rules["groups"] for rule in group["rules"]
                if "record" in rule}  # fmt: skip
    for query in load_profile("recorded").queries:
        promql = render(query.promql, {"window": "5m", "selector": selector})
        names = [name for name in recorded if name in promql]
        assert len(names) == 1, promql
        assert names[0].endswith(":increase1m")
