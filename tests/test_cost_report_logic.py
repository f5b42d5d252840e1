"""The cost report's pure core (canaryctl/cost/counts.py, report.py): windows of scrapes, the
bill's breakdowns and each driver's saving by the formulas docs/cost.md states."""

from __future__ import annotations

from string import Template

import pytest

from canaryctl.cost.counts import Labels, SpendCounts, difference, parse_exposition
from canaryctl.cost.report import MONTH_SECONDS, build_report
from canaryctl.cost.text import render_text
from canaryctl.report.cost_page import cost_html


def key(**labels: str) -> Labels:
    return tuple(sorted(labels.items()))


def spend(route: str, model: str, team: str, job: str, *, queries: float, prompt: float,
          completion: float, usd: float) -> dict[str, dict[Labels, float]]:  # fmt: skip
    where = {"route": route, "model": model, "team": team, "llm_job": job}
    return {
        "llm_spend_requests_total": {key(**where): queries},
        "llm_spend_tokens_total": {
            key(**where, kind="prompt"): prompt,
            key(**where, kind="completion"): completion,
        },
        "llm_spend_cost_usd_total": {key(**where): usd},
    }


def merge(*parts: dict[str, dict[Labels, float]]) -> dict[str, dict[Labels, float]]:
    out: dict[str, dict[Labels, float]] = {}
    for part in parts:
        for name, rows in part.items():
            out.setdefault(name, {}).update(rows)
    return out


# A day: the digest job spends $90 on the big model (1000 queries, 3000 tokens each); search
# spends $9 on the small one (9000 queries of 1000 tokens: $0.001 per 1k tokens); a third of
# reindex's calls repeat an answered one.
DAY = 86400.0
COUNTERS = merge(
    spend("digest", "big", "research", "digest", queries=1000, prompt=1e6, completion=2e6,
          usd=90.0),
    spend("index", "small", "search", "reindex", queries=9000, prompt=6e6, completion=3e6,
          usd=9.0),
    {
        "llm_redundant_requests_total": {key(route="index", llm_job="reindex"): 3000},
        "llm_redundant_cost_usd_total": {key(route="index", llm_job="reindex"): 3.0},
        "llm_retry_requests_total": {key(route="index", llm_job="reindex"): 10},
        "llm_retry_cost_usd_total": {key(route="index", llm_job="reindex"): 0.01},
        "llm_cache_requests_total": {key(route="index", result="hit"): 100,
                                     key(route="index", result="miss"): 300},
        "llm_cache_saved_usd_total": {key(route="index", model="small"): 0.1},
        "llm_fallback_cost_usd_total": {key(route="index", model="small"): 0.5},
        "llm_requests_total": {
            key(route="index", model="small", tier="free", outcome="fallback_ok"): 500,
            key(route="index", model="small", tier="free", outcome="ok"): 8500,
            key(route="index", model="small", tier="free", outcome="rejected"): 40,
            key(route="digest", model="big", tier="paid", outcome="ok"): 1000,
        },
        "llm_cost_usd_total": {key(route="index", model="small", tier="free"): 9.0,
                               key(route="digest", model="big", tier="paid"): 90.0},
    },
)  # fmt: skip
USERS = {"whale": (40.0, 1.0), "minnow": (5.0, 0.5)}


def day_report(**options: float):  # type: ignore[no-untyped-def]
    return build_report(SpendCounts(COUNTERS, USERS, start=0.0, end=DAY), **options)


def test_totals_per_query_and_projected_month() -> None:
    report = day_report()
    assert report.cost_usd == 99.0 and report.queries == 10_000
    assert report.cost_per_query == pytest.approx(0.0099)
    assert report.tokens_per_query == pytest.approx(1200)
    assert report.projected_month_usd == pytest.approx(99.0 * 30)
    assert report.fallback == {"cost_usd": 0.5, "requests": 500}
    assert report.retries == {"cost_usd": 0.01, "requests": 10}
    assert report.cache == {"hits": 100, "misses": 300, "hit_rate": 0.25, "saved_usd": 0.1}


def test_breakdowns_are_shares_of_the_bill_largest_first() -> None:
    report = day_report()
    jobs = report.breakdown["llm_job"]
    assert [(s.name, s.share) for s in jobs] == [("digest", pytest.approx(90 / 99)),
                                                 ("reindex", pytest.approx(9 / 99))]  # fmt: skip
    tiers = {s.name: s for s in report.breakdown["tier"]}
    assert tiers["free"].queries == 9000  # rejected requests are not queries
    assert tiers["paid"].cost_usd == 90.0
    reindex, digest = report.repeats  # the most redundant cost first
    assert (reindex.job, digest.job, digest.share) == ("reindex", "digest", 0.0)
    assert reindex.share == pytest.approx(3000 / 9000)


def test_each_driver_carries_the_change_that_cuts_it_with_its_saving() -> None:
    report = day_report(batch_discount=0.5)
    by = {(d.kind, d.name): {a.change: a for a in d.actions} for d in report.drivers}
    # Downgrade: the big model's tokens at the cheapest observed price ($9 / 9M tokens).
    cheapest = 9.0 / 9e6
    assert by[("job", "digest")]["downgrade it"].saving_usd == pytest.approx(90 - 3e6 * cheapest)
    # Budget: 3000 tokens per query against the rest's 1000: capping saves 2/3 of the cost.
    assert by[("job", "digest")]["budget it"].saving_usd == pytest.approx(90 * (1 - 1000 / 3000))
    assert by[("job", "digest")]["batch it"].saving_usd == pytest.approx(45)
    # Cache: what the redundant calls cost.
    assert by[("job", "reindex")]["cache it"].saving_usd == pytest.approx(3.0)
    assert "budget it" not in by[("job", "reindex")]  # smaller requests than the rest's
    assert "downgrade it" not in by[("model", "small")]  # already the cheapest
    # A user's budget: the lower bound of its spend above the next heaviest user's.
    assert by[("user", "whale")]["budget it"].saving_usd == pytest.approx(40 - 1 - 5)
    # Monthly figures scale the window's like the bill.
    action = by[("job", "digest")]["batch it"]
    assert action.saving_month_usd == pytest.approx(45 * MONTH_SECONDS / DAY)
    # Largest drivers first, each's actions largest saving first.
    costs = [d.cost_usd for d in report.drivers]
    assert costs == sorted(costs, reverse=True)
    for driver in report.drivers:
        savings = [a.saving_usd for a in driver.actions]
        assert savings == sorted(savings, reverse=True)


def test_small_slices_other_and_none_are_not_drivers() -> None:
    counters = merge(
        COUNTERS,
        spend("index", "small", "other", "none", queries=10, prompt=1, completion=1, usd=0.5),
    )
    report = build_report(SpendCounts(counters, start=0, end=DAY), min_share=0.06)
    names = {d.name for d in report.drivers}
    assert "other" not in names and "none" not in names
    assert "reindex" in names  # 9 / 99.5 = 9%
    report = build_report(SpendCounts(counters, start=0, end=DAY), min_share=0.5)
    assert {d.name for d in report.drivers} == {"digest", "big", "research"}


def test_an_empty_window_is_a_report_that_says_so() -> None:
    report = build_report(SpendCounts({}, start=10.0, end=10.0))
    assert report.cost_usd == 0 and report.projected_month_usd is None and not report.drivers
    assert report.cost_per_query is None
    assert "no request reached a model" in report.notes[0]
    assert "no request reached a model" in render_text(report)
    assert "no spend in the window" in cost_html(report)


EXPOSITION = Template("""\
# TYPE llm_spend_cost_usd counter
llm_spend_cost_usd_total{route="r",model="m",team="t",llm_job="j"} $cost
# TYPE llm_spend_requests counter
llm_spend_requests_total{route="r",model="m",team="t",llm_job="j"} $requests
# TYPE llm_top_user_cost_usd gauge
llm_top_user_cost_usd{user="u"} $user
# TYPE llm_spend_start_time_seconds gauge
llm_spend_start_time_seconds $start
# TYPE llm_requests counter
llm_requests_total{route="r",variant="m",model="m",provider="openai",tier="free",outcome="ok"} 5
""")


def scrape(target: str, cost: float, requests: float, user: float, start: float = 100.0):  # type: ignore[no-untyped-def]
    text = EXPOSITION.substitute(cost=cost, requests=requests, user=user, start=start)
    return parse_exposition(target, text)


def test_a_window_subtracts_per_series_and_counts_a_restart_from_zero() -> None:
    before = {**scrape("a", 1.0, 10, 0.5), **scrape("b", 4.0, 40, 2.0)}
    now = {**scrape("a", 1.5, 15, 0.7), **scrape("b", 0.25, 2, 0.1, start=150.0)}  # b restarted
    counts = difference(now, before, at=200.0, since=140.0)
    where = key(route="r", model="m", team="t", llm_job="j")
    assert counts.counters["llm_spend_cost_usd_total"][where] == pytest.approx(0.5 + 0.25)
    assert counts.counters["llm_spend_requests_total"][where] == 5 + 2
    # The requests family is summed by its grouping: variant and provider are dropped.
    assert counts.counters["llm_requests_total"] == {
        key(route="r", model="m", tier="free", outcome="ok"): 0.0
    }
    assert counts.users["u"][0] == pytest.approx(0.2 + 0.1)
    assert (counts.start, counts.end) == (140.0, 200.0)


def test_totals_start_when_the_first_gateway_started() -> None:
    now = {**scrape("a", 1.5, 15, 0.7, start=120.0), **scrape("b", 2.0, 2, 0.1, start=90.0)}
    counts = difference(now, None, at=200.0, since=None)
    assert (counts.start, counts.seconds) == (90.0, 110.0)
    assert counts.counters["llm_spend_cost_usd_total"][
        key(route="r", model="m", team="t", llm_job="j")
    ] == pytest.approx(3.5)


def test_shadow_and_judge_calls_are_reported_apart_never_in_the_bill() -> None:
    evaluation = {
        "llm_shadow_requests_total": {key(route="index", model="big", outcome="ok"): 400},
        "llm_shadow_cost_usd_total": {key(route="index", model="big"): 12.0},
        "llm_judge_requests_total": {
            key(route="index", judge="grader", kind="pairwise", outcome="ok"): 50
        },
        "llm_judge_cost_usd_total": {key(route="index", judge="grader"): 0.5},
    }
    plain, with_evaluation = day_report(), build_report(
        SpendCounts(merge(COUNTERS, evaluation), USERS, start=0.0, end=DAY)
    )
    # The bill, every breakdown and every driver are the user's alone.
    assert with_evaluation.cost_usd == plain.cost_usd == 99.0
    assert with_evaluation.queries == plain.queries
    assert with_evaluation.breakdown == plain.breakdown
    assert with_evaluation.drivers == plain.drivers
    shadow, judge = with_evaluation.evaluation["shadow"], with_evaluation.evaluation["judge"]
    assert (shadow["cost_usd"], shadow["requests"]) == (12.0, 400)
    assert shadow["projected_month_usd"] == pytest.approx(12.0 * 30)
    assert shadow["by"] == [{"name": "big", "cost_usd": 12.0, "requests": 400}]
    assert (judge["cost_usd"], judge["requests"]) == (0.5, 50)
    text = render_text(with_evaluation)
    assert "not user spend: shadow and judge calls" in text
    assert any(line.startswith("shadow big") and "$12.00" in line for line in text.splitlines())
    assert 'data-kind="judge"' in cost_html(with_evaluation)
    assert plain.evaluation["shadow"]["cost_usd"] == 0


def test_downgrades_are_listed_with_what_they_saved() -> None:
    """On route digest, 200 of the requests big would have served went to small: big costs
    $0.09 a query there, small $0.001 (it served 500 queries for $0.50)."""
    moves = merge(
        spend("digest", "small", "research", "digest", queries=500, prompt=3e5, completion=2e5,
              usd=0.5),
        {"llm_downgrades_total": {
            key(route="digest", from_model="big", to_model="small", reason="budget_share"): 200,
            key(route="index", from_model="small", to_model="tiny", reason="hours"): 7,
        }},
    )  # fmt: skip
    report = build_report(SpendCounts(merge(COUNTERS, moves), USERS, start=0.0, end=DAY))
    digest, index = report.downgrades
    assert (digest.route, digest.from_model, digest.to_model) == ("digest", "big", "small")
    assert digest.reason == "budget_share" and digest.requests == 200
    assert digest.saving_usd == pytest.approx(200 * (90.0 / 1000 - 0.5 / 500))
    assert index.saving_usd is None  # tiny served nothing on index: no cost per query to use
    assert report.to_json()["downgrades"][0]["saving_usd"] == pytest.approx(17.8)
    text = render_text(report)
    assert "downgrades (low-criticality work served by a cheaper model)" in text
    assert any("digest: big → small" in line and "$17.80" in line for line in text.splitlines())
    assert 'class="downgrade" data-route="digest"' in cost_html(report)
    assert day_report().downgrades == []


def downgrade_of(report, kind: str, name: str):  # type: ignore[no-untyped-def]
    driver = next(d for d in report.drivers if (d.kind, d.name) == (kind, name))
    return next((a for a in driver.actions if a.change == "downgrade it"), None)


def test_a_model_without_a_price_is_never_the_cheaper_model_recommended() -> None:
    # A local model answered 5000 requests at $0 (no price in the gateway): its cost is
    # unknown, so the downgrade target stays the small model at $9 / 9M tokens.
    free = spend("index", "llama3-local", "search", "reindex", queries=5000, prompt=2e6,
                 completion=3e6, usd=0.0)  # fmt: skip
    report = build_report(SpendCounts(merge(COUNTERS, free), USERS, start=0.0, end=DAY))
    action = downgrade_of(report, "job", "digest")
    assert action is not None and "llama3-local" not in action.how and "small" in action.how
    assert action.saving_usd == pytest.approx(90 - 3e6 * 9.0 / 9e6)
    (note,) = [n for n in report.notes if n.startswith("llama3-local")]
    assert "no price" in note and "5,000" in note


def test_a_model_seen_a_few_times_is_not_recommended_until_it_has_served_more() -> None:
    # 27 fallback answers of a cheap model: too few to say what it costs per token or
    # whether it is good enough; the small model (9000 requests) stays the target.
    rare = spend("index", "tiny", "search", "reindex", queries=27, prompt=27e3, completion=27e3,
                 usd=0.000054)  # fmt: skip
    report = build_report(SpendCounts(merge(COUNTERS, rare), USERS, start=0.0, end=DAY))
    action = downgrade_of(report, "job", "digest")
    assert action is not None and "tiny" not in action.how
    (note,) = [n for n in report.notes if n.startswith("tiny")]
    assert "27 requests" in note and "100" in note
    # With enough of its answers it becomes the target at its own price per token.
    common = spend("index", "tiny", "search", "reindex", queries=100, prompt=1e5, completion=1e5,
                   usd=0.0002)  # fmt: skip
    report = build_report(SpendCounts(merge(COUNTERS, common), USERS, start=0.0, end=DAY))
    action = downgrade_of(report, "job", "digest")
    assert action is not None and "tiny" in action.how
    assert action.saving_usd == pytest.approx(90 - 3e6 * 0.0002 / 2e5)
    assert not [n for n in report.notes if n.startswith("tiny")]


def test_every_cost_bar_is_drawn_on_the_whole_bills_scale() -> None:
    import re as regex

    from canaryctl.report.cost_page import LEFT as BAR_LEFT
    from canaryctl.report.cost_page import RIGHT as BAR_RIGHT
    from canaryctl.report.cost_page import WIDTH, bars_svg

    span = WIDTH - BAR_RIGHT - BAR_LEFT
    svg = bars_svg("user", [("whale", 1.7, 0.017)])
    (width,) = regex.findall(r'<rect x="\d+" y="[\d.]+" width="([\d.]+)"', svg)
    assert float(width) == pytest.approx(span * 0.017, abs=0.1)  # not the full width
    assert "1.7%" in svg and ">100%<" in svg and ">0%<" in svg
    two = bars_svg("model", [("big", 90.0, 0.9), ("small", 9.0, 0.09)])
    widths = [float(w) for w in regex.findall(r'<rect x="\d+" y="[\d.]+" width="([\d.]+)"', two)]
    assert widths == pytest.approx([span * 0.9, span * 0.09], abs=0.1)
