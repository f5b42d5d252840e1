"""How often the gateway's online judge agrees with the lab's ground truth, and what the order
swap does to a judge with a position bias.

Everything runs as in a gateway: canaryctl.gateway.judging.Judges offers each answer (or pair) to
a lab judge (canaryctl/lab/judge.py) served on loopback HTTP, through the gateway's upstream
client, and the verdicts are read back from the gateway's metric families. The answers are the
lab's arithmetic, so the truth is known:

- pointwise: half right, half wrong; a verdict agrees when it scores a right answer 1 and a
  wrong one 0, for judges wrong on purpose in 0%, 5%, 10% and 20% of verdicts;
- pairwise: a primary (baseline) and a shadow (candidate) answer to the same question, a third
  each where the candidate is right and the baseline wrong (truth: win), the other way round
  (loss) and both right (tie); for judges with and without a position bias (a share of verdicts
  that pick the answer shown first), with the order swap on and off. `net` is (wins - losses)
  / pairs, the candidate's margin a shadow step would read; its true value is 0 here.

    python benchmarks/judge_agreement.py [--answers 2000] [--seed 1]
        # writes benchmarks/results/judge_agreement.json
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from typing import Any

import record
from prometheus_client.parser import text_string_to_metric_families

from canaryctl.chaos import BackgroundServer
from canaryctl.gateway.judging import Judges
from canaryctl.gateway.metrics import GatewayMetrics
from canaryctl.gateway.upstream import Upstream
from canaryctl.lab import SimulatedProvider
from canaryctl.lab.arithmetic import Question, ask
from canaryctl.runbook.gateway import GatewaySpec
from canaryctl.runbook.lab import JudgeProfile, ProviderProfile

POINTWISE_ERRORS = (0.0, 0.05, 0.10, 0.20)
PAIRWISE = (  # (error rate, position bias, swap)
    (0.05, 0.0, True),
    (0.05, 0.0, False),
    (0.05, 0.3, True),
    (0.05, 0.3, False),
)
TRUTHS = ("win", "loss", "tie")


def _reply(question: Question, right: bool, rng: random.Random) -> dict[str, Any]:
    answer = question.answer if right else question.answer + rng.choice([-3, -2, -1, 1, 2, 3])
    text = f"{question.expression} = {answer}."
    return {"choices": [{"message": {"role": "assistant", "content": text}}]}


def _samples(metrics: GatewayMetrics, name: str) -> list[Any]:
    text = metrics.exposition().decode()
    return [s for f in text_string_to_metric_families(text) for s in f.samples if s.name == name]


Offer = tuple[str, tuple[Any, ...], dict[str, Any]]
"""A Judges method's name and its arguments."""


async def _judge_all(spec: GatewaySpec, metrics: GatewayMetrics, offers: list[Offer]) -> float:
    """Offer everything, wait for every verdict; the seconds it took."""
    judges = Judges(spec, metrics, rng=random.Random(0))
    started = time.perf_counter()
    async with Upstream.open() as upstream:
        judges.start(upstream.complete)
        for method, args, kwargs in offers:
            getattr(judges, method)(*args, **kwargs)
        while sum(s.value for s in _samples(metrics, "llm_judge_requests_total")) < len(offers):
            await asyncio.sleep(0.05)
        await judges.aclose()
    dropped = sum(s.value for s in _samples(metrics, "llm_judge_dropped_total"))
    assert dropped == 0, f"{dropped} judge jobs dropped"
    return time.perf_counter() - started


def _spec(url: str, answers: int, swap: bool) -> GatewaySpec:
    judge = {"model": "j", "sample": 1.0, "pairs": 1.0, "swap": swap, "queue": answers}
    return GatewaySpec.model_validate(
        {
            "flags": {"provider": "file", "path": "flags.json"},
            "routes": [{"name": "bot", "flag": "f", "default_model": "j", "judge": judge}],
            "models": [{"name": "j", "base_url": url, "timeout": 30}],
        }
    )


def _serve_judge(profile: JudgeProfile, seed: int) -> BackgroundServer:
    provider = ProviderProfile(name="j", latency={"median": 0, "p95": 0}, judge=profile)
    return BackgroundServer(SimulatedProvider(provider, seed=seed).app)


def pointwise(error_rate: float, answers: int, seed: int) -> dict[str, Any]:
    rng = random.Random(f"{seed}/pointwise/{error_rate}")
    metrics = GatewayMetrics()
    offers: list[Offer] = []
    for i in range(answers):
        question, right = ask(rng), i % 2 == 0
        labels = {"route": "bot", "variant": "right" if right else "wrong", "model": "m"}
        labels.update(provider="openai", tier="free")
        chat = {"messages": [{"role": "user", "content": question.text}]}
        completion = _reply(question, right, rng)
        offers.append(("offer_answer", (labels, chat, completion), {"shadow": False}))
    with _serve_judge(JudgeProfile(error_rate=error_rate), seed) as server:
        seconds = asyncio.run(_judge_all(_spec(server.url, answers, True), metrics, offers))
    scores = {"right": [0.0, 0.0], "wrong": [0.0, 0.0]}  # sum, count
    for sample in _samples(metrics, "llm_quality_score_sum"):
        scores[sample.labels["variant"]][0] += sample.value
    for sample in _samples(metrics, "llm_quality_score_count"):
        scores[sample.labels["variant"]][1] += sample.value
    agreeing = scores["right"][0] + (scores["wrong"][1] - scores["wrong"][0])
    judged = scores["right"][1] + scores["wrong"][1]
    return {
        "error_rate": error_rate,
        "answers": answers,
        "judged": judged,
        "agreement": agreeing / judged,
        "seconds": seconds,
    }


def pairwise(
    error_rate: float, position_bias: float, swap: bool, pairs: int, seed: int
) -> dict[str, Any]:
    rng = random.Random(f"{seed}/pairwise/{error_rate}/{position_bias}")
    metrics = GatewayMetrics()
    offers: list[Offer] = []
    for i in range(pairs):
        question, truth = ask(rng), TRUTHS[i % 3]
        primary = _reply(question, truth != "win", rng)
        candidate = _reply(question, truth != "loss", rng)
        chat = {"messages": [{"role": "user", "content": question.text}]}
        baseline, shadow = {"model": "baseline"}, {"model": f"truth-{truth}"}
        offers.append(("offer_pair", ("bot", chat, baseline, primary, shadow, candidate), {}))
    profile = JudgeProfile(error_rate=error_rate, position_bias=position_bias)
    with _serve_judge(profile, seed) as server:
        seconds = asyncio.run(_judge_all(_spec(server.url, pairs, swap), metrics, offers))
    counts = {truth: dict.fromkeys(TRUTHS, 0.0) for truth in TRUTHS}
    for sample in _samples(metrics, "llm_judge_pairwise_total"):
        counts[sample.labels["candidate"].removeprefix("truth-")][sample.labels["result"]] += (
            sample.value
        )
    judged = sum(sum(row.values()) for row in counts.values())
    said = {result: sum(counts[t][result] for t in TRUTHS) for result in TRUTHS}
    return {
        "error_rate": error_rate,
        "position_bias": position_bias,
        "swap": swap,
        "pairs": pairs,
        "judged": judged,
        "agreement": sum(counts[t][t] for t in TRUTHS) / judged,
        "results": said,
        "truth": {t: sum(counts[t].values()) for t in TRUTHS},
        "net": (said["win"] - said["loss"]) / judged,
        "true_net": (sum(counts["win"].values()) - sum(counts["loss"].values())) / judged,
        "tie_pairs_lost": counts["tie"]["loss"] / max(sum(counts["tie"].values()), 1),
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers", type=int, default=2000, help="answers (and pairs) per row")
    parser.add_argument("--seed", type=int, default=1)
    record.add_arguments(parser)
    args = parser.parse_args()
    before = record.machine()
    points = []
    for error_rate in POINTWISE_ERRORS:
        row = pointwise(error_rate, args.answers, args.seed)
        print(f"pointwise, judge error {error_rate:.0%}: agreement {row['agreement']:.3f}")
        points.append(row)
    pairs = []
    for error_rate, bias, swap in PAIRWISE:
        row = pairwise(error_rate, bias, swap, args.answers, args.seed)
        print(
            f"pairwise, error {error_rate:.0%}, position bias {bias:.0%}, swap {swap}: "
            f"agreement {row['agreement']:.3f}, net {row['net']:+.3f} (true {row['true_net']:+.3f})"
        )
        pairs.append(row)
    results = {"seed": args.seed, "pointwise": points, "pairwise": pairs}
    record.write("judge_agreement", results, args, before=before)


if __name__ == "__main__":
    main()
