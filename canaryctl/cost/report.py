"""What drives the bill, and what would cut it: a pure function of one window's SpendCounts.

The formulas (docs/cost.md states them for users):

- cost per query = cost / queries; tokens per query = tokens / queries, over requests that
  reached a model (cache hits and gateway refusals are not queries: they cost nothing);
- projected month = cost / window seconds * 30 days;
- redundant share of a (route, job) = its redundant requests / its queries;
- **cache it**: the slice's redundant cost (repeats of an answered request within the window
  would have been cache hits);
- **downgrade it**: for each model the slice used, cost - tokens * the cheapest observed price
  per token (the model with the lowest cost / tokens in the window), summed over its models;
  only a priced model (one that answered at $0 has no price: its cost is unknown, not zero) that
  answered at least MIN_DOWNGRADE_REQUESTS requests is a target; the notes name the others;
- **budget it**: for a slice whose tokens per query exceed the rest of the traffic's, cost *
  (1 - rest's tokens per query / slice's), what capping its requests at the rest's size saves;
  for a user, the estimate's lower bound above the next heaviest user's estimate;
- **batch it**: for a job, cost * the batch discount (OpenAI's and Anthropic's batch APIs bill
  half price, the default `batch_discount` 0.5).

Downgrades (llm_downgrades_total: low-criticality work the gateway served with a cheaper model)
are listed per route and move, each with its estimated saving: moves * (cost per query of the
model it would have had - the model that served), both read on that route in the window.

Shadow calls (llm_shadow_*) and judge calls (llm_judge_*) are not user spend: they are in none
of the figures above, and are reported apart (`evaluation`), with their own projected month.

Savings of different drivers overlap (a job's tokens are also its model's), so they are not
to be added up; each says what that one change would save on the window's traffic, projected
to a month like the bill.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from canaryctl.cost.counts import SpendCounts
from canaryctl.gateway.metrics import NO_VALUE, OTHER_VALUE

__all__ = [
    "MONTH_SECONDS",
    "Action",
    "CostReport",
    "Downgrade",
    "Driver",
    "Repeats",
    "Slice",
    "build_report",
]

MONTH_SECONDS = 30 * 86400
DIMENSIONS = ("route", "model", "tier", "team", "llm_job")
_SPEND = ("llm_spend_requests_total", "llm_spend_tokens_total", "llm_spend_cost_usd_total")


@dataclass(frozen=True)
class Slice:
    """One value of one dimension: its cost, share of the bill, queries and tokens."""

    name: str
    cost_usd: float
    share: float
    queries: float
    tokens: float

    @property
    def cost_per_query(self) -> float | None:
        return self.cost_usd / self.queries if self.queries else None

    @property
    def tokens_per_query(self) -> float | None:
        return self.tokens / self.queries if self.queries else None


@dataclass(frozen=True)
class Repeats:
    """Identical requests within the gateway's window, for one route and job."""

    route: str
    job: str
    queries: float
    redundant: float
    redundant_cost_usd: float
    retries: float
    retry_cost_usd: float

    @property
    def share(self) -> float:
        return self.redundant / self.queries if self.queries else 0.0


@dataclass(frozen=True)
class Downgrade:
    """Requests on `route` the gateway served with `to_model` instead of `from_model`."""

    route: str
    from_model: str
    to_model: str
    reason: str
    requests: float
    saving_usd: float | None
    """None when either model served nothing on the route in the window (no cost per query)."""


@dataclass(frozen=True)
class Action:
    change: str
    """cache it, downgrade it, budget it, batch it"""
    saving_usd: float
    """On the window's traffic."""
    saving_month_usd: float
    how: str


@dataclass(frozen=True)
class Driver:
    kind: str
    """route, model, team, job or user"""
    name: str
    cost_usd: float
    share: float
    actions: tuple[Action, ...]
    """Largest saving first; empty when no change is known to cut it."""


@dataclass(frozen=True)
class CostReport:
    start: float
    end: float
    cost_usd: float
    queries: float
    tokens: float
    projected_month_usd: float | None
    breakdown: dict[str, list[Slice]]
    users: list[dict[str, float | str]]
    repeats: list[Repeats]
    fallback: dict[str, float]
    retries: dict[str, float]
    cache: dict[str, float]
    drivers: list[Driver]
    downgrades: list[Downgrade] = field(default_factory=list)
    evaluation: dict[str, dict[str, Any]] = field(default_factory=dict)
    """`shadow` and `judge`: what mirrored and grading calls cost, apart from the bill."""
    notes: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return max(0.0, self.end - self.start)

    @property
    def cost_per_query(self) -> float | None:
        return self.cost_usd / self.queries if self.queries else None

    @property
    def tokens_per_query(self) -> float | None:
        return self.tokens / self.queries if self.queries else None

    def to_json(self) -> dict[str, Any]:
        def slice_json(s: Slice) -> dict[str, Any]:
            return {
                **asdict(s),
                "cost_per_query_usd": s.cost_per_query,
                "tokens_per_query": s.tokens_per_query,
            }

        return {
            "kind": "cost_report",
            "start": self.start,
            "end": self.end,
            "window_seconds": self.seconds,
            "cost_usd": self.cost_usd,
            "queries": self.queries,
            "tokens": self.tokens,
            "cost_per_query_usd": self.cost_per_query,
            "tokens_per_query": self.tokens_per_query,
            "projected_month_usd": self.projected_month_usd,
            "breakdown": {
                ("job" if dim == "llm_job" else dim): [slice_json(s) for s in slices]
                for dim, slices in self.breakdown.items()
            },
            "top_users": self.users,
            "repeats": [{**asdict(r), "share": r.share} for r in self.repeats],
            "fallback": self.fallback,
            "retries": self.retries,
            "cache": self.cache,
            "drivers": [asdict(d) for d in self.drivers],
            "downgrades": [asdict(d) for d in self.downgrades],
            "evaluation": self.evaluation,
            "notes": self.notes,
        }


def _sum_by(
    rows: Iterable[tuple[dict[str, str], float]], label: str, **where: str
) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for labels, value in rows:
        if all(labels.get(k) == v for k, v in where.items()):
            out[labels.get(label, "")] += value
    return dict(out)


def _slices(
    cost: Mapping[str, float], queries: Mapping[str, float], tokens: Mapping[str, float]
) -> list[Slice]:
    total = sum(cost.values())
    names = set(cost) | set(queries)
    slices = [
        Slice(
            name,
            cost.get(name, 0.0),
            cost.get(name, 0.0) / total if total else 0.0,
            queries.get(name, 0.0),
            tokens.get(name, 0.0),
        )
        for name in names
    ]
    return sorted(slices, key=lambda s: (-s.cost_usd, -s.queries, s.name))


def build_report(
    counts: SpendCounts,
    *,
    batch_discount: float = 0.5,
    min_share: float = 0.05,
    max_drivers: int = 12,
) -> CostReport:
    """The report of one window. `min_share`: a slice below this share of the bill is not a
    driver; `batch_discount`: the share of a job's cost its provider's batch API takes off."""
    requests = counts.rows("llm_spend_requests_total")
    tokens = counts.rows("llm_spend_tokens_total")
    cost = counts.rows("llm_spend_cost_usd_total")
    total_cost = sum(v for _, v in cost)
    total_queries = sum(v for _, v in requests)
    total_tokens = sum(v for _, v in tokens)
    month = total_cost / counts.seconds * MONTH_SECONDS if counts.seconds > 0 and cost else None
    breakdown: dict[str, list[Slice]] = {}
    for dim in DIMENSIONS:
        if dim == "tier":  # only the per-request families carry the tier
            served = [
                (labels, value)
                for labels, value in counts.rows("llm_requests_total")
                if labels.get("outcome") != "rejected"
            ]
            breakdown[dim] = _slices(
                _sum_by(counts.rows("llm_cost_usd_total"), "tier"),
                _sum_by(served, "tier"),
                _sum_by(counts.rows("llm_tokens_total"), "tier"),
            )
            continue
        breakdown[dim] = _slices(_sum_by(cost, dim), _sum_by(requests, dim), _sum_by(tokens, dim))
    repeats = _repeats(counts, requests)
    users = _users(counts, total_cost)
    fallback = {
        "cost_usd": sum(v for _, v in counts.rows("llm_fallback_cost_usd_total")),
        "requests": sum(
            v for labels, v in counts.rows("llm_requests_total")
            if labels.get("outcome") == "fallback_ok"
        ),
    }  # fmt: skip
    retries = {
        "cost_usd": sum(r.retry_cost_usd for r in repeats),
        "requests": sum(r.retries for r in repeats),
    }
    lookups = _sum_by(counts.rows("llm_cache_requests_total"), "result")
    hits, misses = lookups.get("hit", 0.0), lookups.get("miss", 0.0)
    cache = {
        "hits": hits,
        "misses": misses,
        "hit_rate": hits / (hits + misses) if hits + misses else 0.0,
        "saved_usd": sum(v for _, v in counts.rows("llm_cache_saved_usd_total")),
    }
    scale = MONTH_SECONDS / counts.seconds if counts.seconds > 0 else 0.0
    drivers = _drivers(
        breakdown, repeats, users, cost, tokens, requests, batch_discount, scale, total_cost
    )
    drivers = [d for d in drivers if d.share >= min_share][:max_drivers]
    evaluation = {
        kind: _evaluation(counts, f"llm_{kind}_requests_total", f"llm_{kind}_cost_usd_total",
                          by, scale)
        for kind, by in (("shadow", "model"), ("judge", "judge"))
    }  # fmt: skip
    notes = []
    if not requests:
        notes.append("no request reached a model in the window: nothing to report")
    if counts.counters and "llm_spend_requests_total" not in counts.counters:
        notes.append("the gateway exports no llm_spend_* families: is it older than this report?")
    notes += _unrecommended(cost, tokens, requests)
    return CostReport(
        start=counts.start,
        end=counts.end,
        cost_usd=total_cost,
        queries=total_queries,
        tokens=total_tokens,
        projected_month_usd=month,
        breakdown=breakdown,
        users=users,
        repeats=repeats,
        fallback=fallback,
        retries=retries,
        cache=cache,
        drivers=drivers,
        downgrades=_downgrades(counts, cost, requests),
        evaluation=evaluation,
        notes=notes,
    )


def _evaluation(
    counts: SpendCounts, requests: str, cost: str, by: str, scale: float
) -> dict[str, Any]:
    """Shadow or judge calls: their cost and count, by model (or judge), never in the bill."""
    spent = _sum_by(counts.rows(cost), by)
    asked = _sum_by(counts.rows(requests), by)
    total = sum(spent.values())
    return {
        "cost_usd": total,
        "requests": sum(asked.values()),
        "projected_month_usd": total * scale if scale else None,
        "by": [
            {"name": name, "cost_usd": spent.get(name, 0.0), "requests": asked.get(name, 0.0)}
            for name in sorted(set(spent) | set(asked), key=lambda n: (-spent.get(n, 0.0), n))
        ],
    }


def _downgrades(
    counts: SpendCounts,
    cost: list[tuple[dict[str, str], float]],
    requests: list[tuple[dict[str, str], float]],
) -> list[Downgrade]:
    def per_query(route: str, model: str) -> float | None:
        asked = _sum_by(requests, "model", route=route).get(model, 0.0)
        return _sum_by(cost, "model", route=route).get(model, 0.0) / asked if asked else None

    rows = []
    for labels, moved in counts.rows("llm_downgrades_total"):
        if moved <= 0:
            continue
        route, before, after = labels["route"], labels["from_model"], labels["to_model"]
        full, cheap = per_query(route, before), per_query(route, after)
        saving = None if full is None or cheap is None else moved * (full - cheap)
        rows.append(Downgrade(route, before, after, labels["reason"], moved, saving))
    return sorted(rows, key=lambda d: (-(d.saving_usd or 0.0), -d.requests, d.route))


def _repeats(counts: SpendCounts, requests: list[tuple[dict[str, str], float]]) -> list[Repeats]:
    def by_pair(name: str) -> dict[tuple[str, str], float]:
        out: dict[tuple[str, str], float] = defaultdict(float)
        for labels, value in requests if name == "queries" else counts.rows(name):
            out[(labels.get("route", ""), labels.get("llm_job", ""))] += value
        return out

    queries = by_pair("queries")
    redundant, redundant_cost = (
        by_pair("llm_redundant_requests_total"),
        by_pair("llm_redundant_cost_usd_total"),
    )
    retries, retry_cost = by_pair("llm_retry_requests_total"), by_pair("llm_retry_cost_usd_total")
    rows = [
        Repeats(
            route,
            job,
            queries.get((route, job), 0.0),
            redundant.get((route, job), 0.0),
            redundant_cost.get((route, job), 0.0),
            retries.get((route, job), 0.0),
            retry_cost.get((route, job), 0.0),
        )
        for route, job in set(queries) | set(redundant) | set(retries)
    ]
    return sorted(rows, key=lambda r: (-r.redundant_cost_usd, -r.share, r.route, r.job))


def _users(counts: SpendCounts, total_cost: float) -> list[dict[str, float | str]]:
    ranked = sorted(counts.users.items(), key=lambda kv: (-kv[1][0], kv[0]))
    return [
        {
            "user": user,
            "cost_usd": estimate,
            "error_usd": error,
            "share": estimate / total_cost if total_cost else 0.0,
        }
        for user, (estimate, error) in ranked
    ]


MIN_DOWNGRADE_REQUESTS = 100
"""Requests a model must have answered in the window before the report recommends moving work
to it: a handful of fallback answers says nothing of its cost per token or its quality."""


def _downgrade_prices(
    cost: list[tuple[dict[str, str], float]],
    tokens: list[tuple[dict[str, str], float]],
    requests: list[tuple[dict[str, str], float]],
) -> dict[str, float]:
    """USD per token of each model the report may recommend: priced (an answer at $0 is a
    model without a price, whose cost is unknown, not free) and seen often enough."""
    model_cost, model_tokens = _sum_by(cost, "model"), _sum_by(tokens, "model")
    model_requests = _sum_by(requests, "model")
    return {
        m: model_cost.get(m, 0.0) / t
        for m, t in model_tokens.items()
        if t > 0
        and model_cost.get(m, 0.0) > 0
        and model_requests.get(m, 0.0) >= MIN_DOWNGRADE_REQUESTS
    }


def _unrecommended(
    cost: list[tuple[dict[str, str], float]],
    tokens: list[tuple[dict[str, str], float]],
    requests: list[tuple[dict[str, str], float]],
) -> list[str]:
    """Why a model that answered in the window is not a downgrade target, and what would settle
    it."""
    eligible = _downgrade_prices(cost, tokens, requests)
    model_cost, model_requests = _sum_by(cost, "model"), _sum_by(requests, "model")
    notes = []
    for model, answered in sorted(model_requests.items()):
        if model in eligible or answered <= 0 or model in (OTHER_VALUE, NO_VALUE, ""):
            continue
        if model_cost.get(model, 0.0) <= 0:
            notes.append(
                f"{model} answered {answered:,.0f} requests at $0: it has no price in the "
                "gateway, so its cost is unknown and no work is moved to it; give it a `price` "
                "to have it considered"
            )
        else:
            notes.append(
                f"{model} answered only {answered:,.0f} requests, fewer than the "
                f"{MIN_DOWNGRADE_REQUESTS} a recommendation needs: no work is moved to it until "
                "it has served more (or read a longer --window)"
            )
    return notes


def _drivers(
    breakdown: Mapping[str, list[Slice]],
    repeats: list[Repeats],
    users: list[dict[str, float | str]],
    cost: list[tuple[dict[str, str], float]],
    tokens: list[tuple[dict[str, str], float]],
    requests: list[tuple[dict[str, str], float]],
    batch_discount: float,
    scale: float,
    total_cost: float,
) -> list[Driver]:
    prices = _downgrade_prices(cost, tokens, requests)
    cheapest = min(prices, key=lambda m: (prices[m], m)) if prices else None

    def action(change: str, saving: float, how: str) -> Action | None:
        if saving <= 1e-12:
            return None
        return Action(change, saving, saving * scale, how)

    def downgrade(dim: str, name: str) -> Action | None:
        if cheapest is None:
            return None
        saving = 0.0
        for model, spent in _sum_by(cost, "model", **{dim: name}).items():
            used = _sum_by(tokens, "model", **{dim: name}).get(model, 0.0)
            saving += max(0.0, spent - used * prices[cheapest])
        price = prices[cheapest] * 1000
        return action(
            "downgrade it", saving,
            f"serve it with {cheapest} (${price:.2g} per 1k tokens, the cheapest seen) if its "
            "quality floor allows",
        )  # fmt: skip

    def budget(dim: str, name: str) -> Action | None:
        spent = sum(v for labels, v in cost if labels.get(dim) == name)
        used = sum(v for labels, v in tokens if labels.get(dim) == name)
        asked = sum(v for labels, v in requests if labels.get(dim) == name)
        rest_tokens = sum(v for _, v in tokens) - used
        rest_queries = sum(v for _, v in requests) - asked
        if not asked or not rest_queries or not rest_tokens:
            return None
        mine, theirs = used / asked, rest_tokens / rest_queries
        if mine <= theirs:
            return None
        return action(
            "budget it", spent * (1 - theirs / mine),
            f"{mine:.0f} tokens per query against {theirs:.0f} for the rest: max_tokens or a "
            f"per-{'job' if dim == 'llm_job' else dim} token budget",
        )  # fmt: skip

    def cache_it(dim: str, name: str) -> Action | None:
        mine = [r for r in repeats if (r.route if dim == "route" else r.job) == name]
        redundant = sum(r.redundant for r in mine)
        asked = sum(r.queries for r in mine)
        share = redundant / asked if asked else 0.0
        return action(
            "cache it", sum(r.redundant_cost_usd for r in mine),
            f"{share:.0%} of its calls repeat an answered one: cache the route (temperature 0) "
            "or dedupe its inputs",
        )  # fmt: skip

    drivers = []
    for dim, kind in (("model", "model"), ("llm_job", "job"), ("team", "team"), ("route", "route")):
        for s in breakdown.get(dim, []):
            if s.cost_usd <= 0 or s.name in (OTHER_VALUE, NO_VALUE, ""):
                continue
            candidates = [budget(dim, s.name)]
            if dim != "model" or s.name != cheapest:
                candidates.append(downgrade(dim, s.name))
            if dim in ("llm_job", "route"):
                candidates.append(cache_it(dim, s.name))
            if dim == "llm_job":
                candidates.append(
                    action(
                        "batch it", s.cost_usd * batch_discount,
                        f"send it through the provider's batch API ({batch_discount:.0%} off, "
                        "answers within 24 h)",
                    )
                )  # fmt: skip
            found = sorted((a for a in candidates if a), key=lambda a: -a.saving_usd)
            drivers.append(Driver(kind, s.name, s.cost_usd, s.share, tuple(found)))
    for i, user in enumerate(users):
        estimate, error = float(user["cost_usd"]), float(user["error_usd"])
        runner_up = float(users[i + 1]["cost_usd"]) if i + 1 < len(users) else 0.0
        capped = action(
            "budget it", max(0.0, estimate - error - runner_up),
            "a per-user USD budget at the next heaviest user's spend",
        )  # fmt: skip
        share = estimate / total_cost if total_cost else 0.0
        drivers.append(Driver("user", str(user["user"]), estimate, share,
                              (capped,) if capped else ()))  # fmt: skip
    return sorted(drivers, key=lambda d: (-d.cost_usd, d.kind, d.name))
