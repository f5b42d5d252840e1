"""The lab's one kind of question with a checkable answer: small-integer arithmetic.

Traffic asks "What is 17 + 25?", providers answer "17 + 25 = 42." (right with probability
`quality`), and anyone can grade a reply by reading the number after "=". Keeping asker, solver and
grader in one module means they can never disagree about the format.
"""

from __future__ import annotations

import operator
import random
import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Question", "answer_in", "ask", "parse_question"]

_OPERATORS: dict[str, Callable[[int, int], int]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
}
_QUESTION = re.compile(r"(-?\d+)\s*([-+*x\u00d7])\s*(-?\d+)")
_ANSWER = re.compile(r"=\s*(-?\d+)")


@dataclass(frozen=True)
class Question:
    """A question with its one right answer; `op` is one of + - *."""

    left: int
    op: str
    right: int

    @property
    def answer(self) -> int:
        return _OPERATORS[self.op](self.left, self.right)

    @property
    def text(self) -> str:
        return f"What is {self.left} {self.op} {self.right}?"

    @property
    def expression(self) -> str:
        return f"{self.left} {self.op} {self.right}"


def ask(rng: random.Random) -> Question:
    return Question(rng.randint(1, 99), rng.choice(list(_OPERATORS)), rng.randint(1, 99))


def parse_question(text: str) -> Question | None:
    """The first arithmetic expression in a prompt, or None when the prompt is not a question."""
    match = _QUESTION.search(text)
    if match is None:
        return None
    op = match.group(2) if match.group(2) in _OPERATORS else "*"  # x and the times sign
    return Question(int(match.group(1)), op, int(match.group(3)))


def answer_in(reply: str) -> int | None:
    """The number a reply gives as its answer, or None when it gives none."""
    match = _ANSWER.search(reply)
    return int(match.group(1)) if match else None
