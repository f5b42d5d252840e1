"""Open-loop traffic for a lab: Poisson arrivals of arithmetic questions from a pool of users.

Arrivals do not wait for answers (real users do not), so a slow model cannot slow the traffic
that measures it; when `concurrency` requests are already in flight an arrival is shed and
counted, not queued. Users, their tiers, arrival gaps and questions all come from the lab's seed.

A lab may plant batch jobs (`traffic.jobs`): each takes its share of the arrivals, names itself
and its team in `X-Job` and `X-Team`, asks its own route, and re-sends its previous request
with probability `repeat`, so a cost report has a known driver and known redundancy to find.
The job mix draws from its own random stream, so a lab without jobs replays as before.

A `feedback` share of the answers is graded and the grade posted back to the gateway, as a real
application's grader or thumbs-up button would: 1.0 for the right number, 0.0 otherwise.

A `stream` share of the requests asks for a streamed answer (server-sent events), read as it
comes and graded whole, as a chat window shows it; that choice draws from its own random stream
too.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections import Counter
from dataclasses import dataclass, field

import httpx

from canaryctl import fastjson
from canaryctl.lab.arithmetic import Question, answer_in, ask
from canaryctl.runbook.lab import JobTraffic, TrafficSpec

__all__ = ["NO_VARIANT", "TrafficGenerator", "TrafficSnapshot", "TrafficStats"]

NO_VARIANT = "none"
"""The variant recorded when no response (or no variant header) came back."""


@dataclass(frozen=True)
class TrafficSnapshot:
    """Counts since traffic started. Outcomes are HTTP statuses ("200", "503"), "timeout" or
    "connection_error"; `correct` counts 200s whose answer was right, per variant; `scored`
    counts the grades the gateway accepted, per variant."""

    sent: int
    shed: int
    by_outcome: dict[str, int]
    by_variant: dict[str, dict[str, int]]
    correct: dict[str, int]
    scored: dict[str, int]
    by_job: dict[str, int] = field(default_factory=dict)
    """Requests sent per job ("" for those naming none)."""

    def requests(self, variant: str) -> int:
        return sum(self.by_variant.get(variant, {}).values())


class TrafficStats:
    """Written on the lab's event loop, read from any thread through `snapshot()`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sent = 0
        self._shed = 0
        self._by_variant: dict[str, Counter[str]] = {}
        self._correct: Counter[str] = Counter()
        self._scored: Counter[str] = Counter()
        self._by_job: Counter[str] = Counter()

    def count_sent(self, job: str = "") -> None:
        with self._lock:
            self._sent += 1
            self._by_job[job] += 1

    def count_shed(self) -> None:
        with self._lock:
            self._shed += 1

    def count_answer(self, variant: str, outcome: str, correct: bool) -> None:
        with self._lock:
            self._by_variant.setdefault(variant, Counter())[outcome] += 1
            self._correct[variant] += correct

    def count_scored(self, variant: str) -> None:
        with self._lock:
            self._scored[variant] += 1

    def snapshot(self) -> TrafficSnapshot:
        with self._lock:
            by_outcome: Counter[str] = Counter()
            for counts in self._by_variant.values():
                by_outcome.update(counts)
            return TrafficSnapshot(
                sent=self._sent,
                shed=self._shed,
                by_outcome=dict(by_outcome),
                by_variant={v: dict(c) for v, c in self._by_variant.items()},
                correct=dict(self._correct),
                scored=dict(self._scored),
                by_job=dict(self._by_job),
            )


class TrafficGenerator:
    """Sends to `gateway_url` until `stop()`; `run()` is the coroutine to schedule.

    `set_rate()` and `stop()` must be called on the loop running `run()`.
    """

    def __init__(self, gateway_url: str, spec: TrafficSpec, *, seed: int = 0) -> None:
        self.spec = spec
        self.rate = spec.rate
        self.stats = TrafficStats()
        self._url = gateway_url.rstrip("/") + "/v1/chat/completions"
        self._feedback_url = gateway_url.rstrip("/") + "/v1/feedback"
        self._rng = random.Random(f"{seed}/traffic")
        self._grading = random.Random(f"{seed}/feedback")  # apart, so arrivals replay as before
        self._streaming = random.Random(f"{seed}/stream")
        tiers = list(spec.tiers)
        weights = [spec.tiers[t] for t in tiers]
        self._users = [
            (f"user-{i:05d}", random.Random(f"{seed}/tier/{i}").choices(tiers, weights)[0])
            for i in range(spec.users)
        ]
        self._mix = random.Random(f"{seed}/jobs")
        self._previous: dict[str, Question] = {}
        self._stopped = asyncio.Event()
        self._woken = asyncio.Event()

    def set_rate(self, rate: float) -> None:
        if rate <= 0:
            raise ValueError("the traffic rate must be positive")
        self.rate = rate
        self._woken.set()

    def stop(self) -> None:
        self._stopped.set()
        self._woken.set()

    async def run(self) -> None:
        """Until stopped; requests still in flight then are cancelled and not counted."""
        limits = httpx.Limits(max_connections=self.spec.concurrency)
        timeout = httpx.Timeout(self.spec.timeout)
        in_flight: set[asyncio.Task[None]] = set()
        async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
            try:
                while not self._stopped.is_set():
                    if not await self._gap(self._rng.expovariate(self.rate)):
                        continue
                    user, tier = self._users[self._rng.randrange(len(self._users))]
                    question = ask(self._rng)
                    job = self._job()
                    if job is not None:
                        question = self._repeat(job, question)
                    if len(in_flight) >= self.spec.concurrency:
                        self.stats.count_shed()
                        continue
                    task = asyncio.create_task(self._send(client, user, tier, question, job))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
            finally:
                for task in in_flight:
                    task.cancel()
                await asyncio.gather(*in_flight, return_exceptions=True)

    async def _gap(self, seconds: float) -> bool:
        """Sleep until the next arrival; False when woken early (stop, or a new rate to redraw
        with: arrivals are memoryless, so redrawing from now is exact)."""
        self._woken.clear()
        try:
            await asyncio.wait_for(self._woken.wait(), seconds)
        except TimeoutError:
            return not self._stopped.is_set()
        return False

    def _job(self) -> JobTraffic | None:
        """The job this arrival belongs to, by the jobs' shares; None for plain traffic."""
        if not self.spec.jobs:
            return None
        draw = self._mix.random()
        for job in self.spec.jobs:
            if draw < job.share:
                return job
            draw -= job.share
        return None

    def _repeat(self, job: JobTraffic, fresh: Question) -> Question:
        """The job's previous question again with probability `repeat`, else `fresh`."""
        previous = self._previous.get(job.name)
        if previous is not None and self._mix.random() < job.repeat:
            return previous
        self._previous[job.name] = fresh
        return fresh

    async def _send(
        self,
        client: httpx.AsyncClient,
        user: str,
        tier: str,
        question: Question,
        job: JobTraffic | None = None,
    ) -> None:
        self.stats.count_sent(job.name if job else "")
        body: dict[str, object] = {
            "model": self.spec.route,
            "messages": [{"role": "user", "content": question.text}],
        }
        headers = {"X-User": user, "X-Tier": tier}
        if job is not None:
            headers["X-Job"] = job.name
            if job.team:
                headers["X-Team"] = job.team
            if job.route:
                body["model"] = job.route
            if job.temperature is not None:
                body["temperature"] = job.temperature
            if job.max_tokens is not None:
                body["max_tokens"] = job.max_tokens
        streamed = self.spec.stream > 0 and self._streaming.random() < self.spec.stream
        try:
            if streamed:
                response, reply, completion_id = await _streamed(client, self._url, body, headers)
            else:
                response = await client.post(self._url, json=body, headers=headers)
                reply, completion_id = _answer(response)
        except httpx.TimeoutException:
            self.stats.count_answer(NO_VARIANT, "timeout", False)
            return
        except httpx.HTTPError:
            self.stats.count_answer(NO_VARIANT, "connection_error", False)
            return
        variant = response.headers.get("x-canaryctl-variant", NO_VARIANT)
        correct = response.status_code == 200 and answer_in(reply) == question.answer
        self.stats.count_answer(variant, str(response.status_code), correct)
        if completion_id is not None and self._grading.random() < self.spec.feedback:
            await self._grade(client, variant, completion_id, correct)

    async def _grade(
        self, client: httpx.AsyncClient, variant: str, completion_id: object, correct: bool
    ) -> None:
        """Post the grade; a lost grade is only a missing score, so failures are not retried."""
        score = {"id": completion_id, "score": 1.0 if correct else 0.0}
        try:
            response = await client.post(self._feedback_url, json=score)
        except httpx.HTTPError:
            return
        if response.status_code == 200:
            self.stats.count_scored(variant)


def _answer(response: httpx.Response) -> tuple[str, object]:
    """A plain answer's text and id ("" and None when it is not one)."""
    if response.status_code != 200:
        return "", None
    try:
        completion = response.json()
        return str(completion["choices"][0]["message"]["content"]), completion["id"]
    except (ValueError, LookupError, TypeError):
        return "", None


async def _streamed(
    client: httpx.AsyncClient, url: str, body: dict[str, object], headers: dict[str, str]
) -> tuple[httpx.Response, str, object]:
    """Ask for a streamed answer and read it to the end: the response, the text its chunks
    add up to, and its id (None when the stream gave none)."""
    pieces: list[str] = []
    completion_id: object = None
    async with client.stream("POST", url, json={**body, "stream": True}, headers=headers) as r:
        if r.status_code != 200:
            await r.aread()
            return r, "", None
        async for line in r.aiter_lines():
            data = line.removeprefix("data:").strip()
            if not line.startswith("data:") or data == "[DONE]":
                continue
            try:
                chunk = fastjson.loads(data)
                completion_id = chunk.get("id", completion_id)
                for choice in chunk.get("choices") or ():
                    pieces.append(str((choice.get("delta") or {}).get("content") or ""))
            except (ValueError, AttributeError, TypeError):
                continue
    return r, "".join(pieces), completion_id
