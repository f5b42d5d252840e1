"""Evals: a JSONL benchmark sent to the canary and the baseline, scored, and judged."""

from canaryctl.evals.benchmark import BenchmarkItem, builtin_benchmark, load_benchmark, score
from canaryctl.evals.judge import ModelScore, judge_eval, summarize
from canaryctl.evals.runner import Endpoint, EvalProgress, ItemResult, run_benchmark
from canaryctl.evals.stats import newcombe_interval, wilson_interval

__all__ = [
    "BenchmarkItem",
    "Endpoint",
    "EvalProgress",
    "ItemResult",
    "ModelScore",
    "builtin_benchmark",
    "judge_eval",
    "load_benchmark",
    "newcombe_interval",
    "run_benchmark",
    "score",
    "summarize",
    "wilson_interval",
]
