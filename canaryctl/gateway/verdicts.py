"""What a judge model is asked, and how its reply is read: the one place for the judge format.

A judge is any chat model. It gets two messages:

- `system`: the route's rubric (the text of its `judge.rubric` file) and, after a blank line, the
  instructions for the kind of verdict wanted (POINTWISE or PAIRWISE below);
- `user`: the question and the answer(s), each in its own tag::

      <question>
      What is 17 + 25?
      </question>
      <answer>                      pairwise: <answer_a> ... </answer_a>
      17 + 25 = 42.                           <answer_b> ... </answer_b>
      </answer>

It replies with JSON: `{"score": x}` with x from 0 to 1, or `{"winner": "A" | "B" | "tie"}`.
The reply is read leniently about its wrapping (prose around the object, a Markdown code fence)
and strictly about its content: a score that is not a number from 0 to 1 (a boolean, a string,
NaN, 7 out of 10) or a winner that is not A, B or tie is no verdict, never a guess. The lab's
judge (canaryctl/lab/judge.py) reads the same messages with `read_task`, so the two sides cannot
drift apart.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal

from canaryctl import fastjson

__all__ = [
    "PAIRWISE",
    "POINTWISE",
    "JudgeTask",
    "Winner",
    "answer_text",
    "pairwise_messages",
    "pointwise_messages",
    "question_text",
    "read_score",
    "read_task",
    "read_winner",
]

Winner = Literal["A", "B", "tie"]

POINTWISE = (
    "Grade the answer to the question from 0 (wrong or useless) to 1 (fully right). "
    'Reply with JSON only: {"score": <a number from 0 to 1>}'
)
PAIRWISE = (
    "Compare answer A and answer B to the question and say which is better. "
    'Reply with JSON only: {"winner": "A"}, {"winner": "B"} or {"winner": "tie"}'
)

_TAG = re.compile(r"<(question|answer|answer_a|answer_b)>\n(.*?)\n</\1>", re.S)
_OBJECT = re.compile(r"\{[^{}]*\}")
_WINNERS: dict[str, Winner] = {"a": "A", "b": "B", "tie": "tie"}


@dataclass(frozen=True)
class JudgeTask:
    """What a judge was asked: one answer to grade, or two (A then B) to compare."""

    question: str
    answers: tuple[str, ...]

    @property
    def pairwise(self) -> bool:
        return len(self.answers) == 2


def _text(content: Any) -> str:
    """OpenAI content is a string or a list of parts; the text parts, joined."""
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def question_text(chat: dict[str, Any]) -> str:
    """The question a chat request asks: its last user message."""
    messages = [m for m in chat.get("messages") or [] if isinstance(m, dict)]
    users = [_text(m.get("content")) for m in messages if m.get("role") == "user"]
    return users[-1] if users else ""


def answer_text(completion: dict[str, Any]) -> str:
    """What an OpenAI-shaped completion said (empty when it said nothing readable)."""
    choices = completion.get("choices")
    first = choices[0] if isinstance(choices, list) and choices else None
    message = first.get("message") if isinstance(first, dict) else None
    return _text(message.get("content")) if isinstance(message, dict) else ""


def _messages(rubric: str, instructions: str, parts: list[tuple[str, str]]) -> list[dict[str, str]]:
    body = "\n".join(f"<{tag}>\n{text}\n</{tag}>" for tag, text in parts)
    return [
        {"role": "system", "content": f"{rubric.strip()}\n\n{instructions}"},
        {"role": "user", "content": body},
    ]


def pointwise_messages(rubric: str, question: str, answer: str) -> list[dict[str, str]]:
    return _messages(rubric, POINTWISE, [("question", question), ("answer", answer)])


def pairwise_messages(rubric: str, question: str, a: str, b: str) -> list[dict[str, str]]:
    parts = [("question", question), ("answer_a", a), ("answer_b", b)]
    return _messages(rubric, PAIRWISE, parts)


def read_task(messages: Any) -> JudgeTask | None:
    """The task in a judge request's messages, or None when they are not in this format."""
    if not isinstance(messages, list):
        return None
    users = [_text(m.get("content")) for m in messages if isinstance(m, dict)]
    found = dict(_TAG.findall(users[-1] if users else ""))
    if "question" not in found:
        return None
    if "answer_a" in found and "answer_b" in found:
        return JudgeTask(found["question"], (found["answer_a"], found["answer_b"]))
    if "answer" in found:
        return JudgeTask(found["question"], (found["answer"],))
    return None


def _object(reply: str) -> dict[str, Any] | None:
    """The reply's JSON object: all of it, or the first {...} in it that parses."""
    for candidate in (reply.strip(), *_OBJECT.findall(reply)):
        try:
            data = fastjson.loads(candidate)
        except ValueError:
            continue
        if isinstance(data, dict):
            return data
    return None


def read_score(reply: str) -> float | None:
    """The score in a pointwise reply, or None when the reply gives none from 0 to 1."""
    data = _object(reply)
    score = data.get("score") if data else None
    if isinstance(score, bool) or not isinstance(score, int | float):
        return None
    return float(score) if math.isfinite(score) and 0.0 <= score <= 1.0 else None


def read_winner(reply: str) -> Winner | None:
    """The winner in a pairwise reply, or None when it names none of A, B, tie."""
    data = _object(reply)
    winner = data.get("winner") if data else None
    if not isinstance(winner, str):
        return None
    return _WINNERS.get(winner.strip().lower())
