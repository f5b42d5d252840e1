"""Memory a gateway replica holds for feedback when full: the scored ids it remembers so that
each answer is scored once (completion ids are signed, so nothing is kept per answer served),
and what issuing and taking an id costs.

python benchmarks/feedback_memory.py [--answers 100000]
    # writes benchmarks/results/feedback_memory.json
"""

from __future__ import annotations

import argparse
import secrets
import time
import tracemalloc

import record

from canaryctl.gateway.feedback import AnswerIds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers", type=int, default=100_000, help="scored ids remembered")
    record.add_arguments(parser)
    args = parser.parse_args()
    before = record.machine()
    label_sets = [
        {"route": "support-bot", "variant": v, "model": v, "provider": "openai", "tier": t}
        for v in ("gpt-4-turbo", "gpt-4o-mini")
        for t in ("free", "paid", "enterprise")
    ]
    answers = AnswerIds(secrets.token_bytes(32), remember=args.answers)
    started = time.perf_counter()
    ids = [answers.issue(label_sets[i % len(label_sets)], "web") for i in range(args.answers)]
    issued = time.perf_counter() - started
    tracemalloc.start()  # after the ids: a gateway keeps only what taking them remembers
    started = time.perf_counter()
    for completion_id in ids:
        answers.take(completion_id, "web")
    taken = time.perf_counter() - started
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    length = max(len(i) for i in ids)
    print(f"{args.answers} scored ids remembered: {held / 1e6:.1f} MB held")
    print(f"issue: {issued / args.answers * 1e6:.2f} us each; ids up to {length} characters")
    print(f"take: {taken / args.answers * 1e6:.2f} us each (under tracemalloc)")
    results = {
        "answers": args.answers,
        "held_bytes": held,
        "id_characters": length,
        "issue_microseconds": issued / args.answers * 1e6,
        "take_microseconds": taken / args.answers * 1e6,
    }
    record.write("feedback_memory", results, args, before=before)


if __name__ == "__main__":
    main()
