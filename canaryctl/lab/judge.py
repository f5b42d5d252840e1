"""The lab's LLM judge: grades arithmetic answers by the truth, wrong only as often as told.

A lab provider with a `judge` section (runbook/lab.py JudgeProfile) answers every chat request
with a verdict instead of an answer, in the format the gateway's judges ask for
(canaryctl/gateway/verdicts.py): `{"score": 1.0}` for a right answer and `{"score": 0.0}` for a
wrong one; `{"winner": "A"|"B"|"tie"}` by which of two answers is right (both or neither: tie).
Then, drawn from the request's own random stream so a lab replays exactly:

- `malformed`: that share of replies is prose, not JSON (a judge that ignored its instructions);
- `position_bias`: that share of pairwise verdicts is "A", whatever the answers say (judges
  favour the answer shown first, which is why the gateway swaps the order on half the pairs);
- `error_rate`: that share of the other verdicts is wrong (a score flipped, another winner).

Requests not in the judge format (or asking no arithmetic) get a prose reply: the gateway counts
that as a judge error, never as a score.
"""

from __future__ import annotations

import json
import random
from typing import Any

from canaryctl.gateway.verdicts import Winner, read_task
from canaryctl.lab.arithmetic import answer_in, parse_question
from canaryctl.runbook.lab import JudgeProfile

__all__ = ["UNREADABLE", "true_score", "true_winner", "verdict"]

UNREADABLE = "I can only grade answers to arithmetic questions, in the judge format."
_WINNERS: tuple[Winner, ...] = ("A", "B", "tie")
_PROSE = "Both answers look reasonable to me; the first one reads a little better."


def true_score(question: str, answer: str) -> float | None:
    """1.0 when `answer` gives the right number, 0.0 when not; None when `question` is no sum."""
    asked = parse_question(question)
    if asked is None:
        return None
    return 1.0 if answer_in(answer) == asked.answer else 0.0


def true_winner(question: str, a: str, b: str) -> Winner | None:
    """The right one of two answers; a tie when both or neither are right."""
    right_a, right_b = true_score(question, a), true_score(question, b)
    if right_a is None or right_b is None:
        return None
    return "tie" if right_a == right_b else ("A" if right_a > right_b else "B")


def verdict(messages: Any, profile: JudgeProfile, rng: random.Random) -> str:
    """The judge's reply text to a request's `messages`; four draws from `rng`, always."""
    malformed, biased, wrong, other = rng.random(), rng.random(), rng.random(), rng.random()
    task = read_task(messages)
    if task is None:
        return UNREADABLE
    if malformed < profile.malformed:
        return _PROSE
    if task.pairwise:
        winner = true_winner(task.question, *task.answers)
        if winner is None:
            return UNREADABLE
        if biased < profile.position_bias:
            winner = "A"
        elif wrong < profile.error_rate:
            winner = [w for w in _WINNERS if w != winner][int(other * 2)]
        return json.dumps({"winner": winner})
    score = true_score(task.question, task.answers[0])
    if score is None:
        return UNREADABLE
    if wrong < profile.error_rate:
        score = 1.0 - score
    return json.dumps({"score": score})
