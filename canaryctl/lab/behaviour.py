"""What one simulated request does: fail or not, how slowly, how long, how right.

Every draw comes from a random.Random seeded by (lab seed, provider name, request number), so a
lab replayed with the same seed and the same request order behaves the same, request by request,
whatever else runs in the process.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from canaryctl.lab.arithmetic import parse_question
from canaryctl.runbook.lab import LatencyProfile, ProviderProfile

__all__ = ["Behaviour", "decide", "estimate_tokens", "request_rng"]

_Z95 = 1.6448536269514722
"""The standard normal's 95th percentile: turns (median, p95) into a log-normal's sigma."""

_SENTENCES = (
    "Thanks for reaching out, I can help with that.",
    "You can find your plan and billing details under Account settings.",
    "If the issue persists, please clear your browser cache and sign in again.",
    "Exports are limited to 10,000 rows per file on the free tier.",
    "Our team usually replies within one business day.",
    "You can change the notification email from the Profile page.",
    "Invoices are issued on the first day of each month.",
    "Let me know if there is anything else I can help with.",
)


@dataclass(frozen=True)
class Behaviour:
    """The fate of one request, drawn before any of it is served."""

    error: str | None
    """None to answer, else "500", "503", "529", "429" or "timeout"."""
    latency: float
    completion_tokens: int
    text: str
    first_token: float | None = None
    """Seconds before a stream's first token, when the profile draws it apart from `latency`."""


def request_rng(seed: int, provider: str, sequence: int) -> random.Random:
    # A str seed is hashed with SHA-512, so it is stable across processes (unlike hash()).
    return random.Random(f"{seed}/{provider}/{sequence}")


def estimate_tokens(text: str) -> int:
    """About four characters a token, as OpenAI's rule of thumb for English says."""
    return max(1, math.ceil(len(text) / 4))


def _latency(latency: LatencyProfile, rng: random.Random) -> float:
    median, p95 = latency.median, latency.p95
    if median <= 0:
        return 0.0
    sigma = math.log(p95 / median) / _Z95 if p95 > median else 0.0
    return rng.lognormvariate(math.log(median), sigma)


def _filler(words: int, rng: random.Random) -> list[str]:
    sentences: list[str] = []
    while sum(len(s.split()) for s in sentences) < words:
        sentences.append(rng.choice(_SENTENCES))
    return sentences


def _reply(prompt: str, tokens: int, quality: float, rng: random.Random) -> str:
    """About three words for every four tokens, as in English text."""
    words = max(1, tokens * 3 // 4)
    question = parse_question(prompt)
    if question is None:
        return " ".join(_filler(words, rng))
    answer = question.answer
    if rng.random() >= quality:
        answer += rng.choice([d for d in range(-9, 10) if d != 0])
    return " ".join([f"{question.expression} = {answer}.", *_filler(words - 5, rng)])


def decide(
    profile: ProviderProfile,
    prompt: str,
    rng: random.Random,
    *,
    max_tokens: int | None = None,
    sequence: int = 0,
) -> Behaviour:
    """Draw in a fixed order (error, latency, length, answer, then the first token if the
    profile has its own) so outcomes replay exactly, and a lab that adds `first_token` keeps
    every other draw; `sequence` is the request's number at its provider, for errors that
    climb."""
    error = None
    climb = profile.errors.climb
    rate = climb.rate if climb is not None and sequence > climb.after else profile.errors.rate
    if rng.random() < rate:
        kinds = list(profile.errors.kinds)
        error = rng.choices(kinds, weights=[profile.errors.kinds[k] for k in kinds])[0]
    latency = _latency(profile.latency, rng)
    mean = profile.tokens.completion_mean
    cap = min(profile.tokens.completion_max, max_tokens or profile.tokens.completion_max)
    tokens = max(1, min(cap, round(rng.gauss(mean, mean / 4))))
    text = _reply(prompt, tokens, profile.quality, rng)
    first = _latency(profile.first_token, rng) if profile.first_token is not None else None
    return Behaviour(error, latency, tokens, text, first)
