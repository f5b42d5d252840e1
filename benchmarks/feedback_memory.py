"""Memory the gateway's feedback map (which variant served each completion id) holds when full.

python benchmarks/feedback_memory.py [--answers 100000]
    # writes benchmarks/results/feedback_memory.json
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time
import tracemalloc

import record

from canaryctl.gateway.feedback import ServedAnswers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers", type=int, default=100_000, help="ids remembered (capacity)")
    record.add_arguments(parser)
    args = parser.parse_args()
    before = record.machine()
    label_sets = [
        {"route": "support-bot", "variant": v, "model": v, "provider": "openai", "tier": t}
        for v in ("gpt-4-turbo", "gpt-4o-mini")
        for t in ("free", "paid", "enterprise")
    ]
    tracemalloc.start()  # before the ids: the map is what keeps them alive in a gateway
    ids = [f"chatcmpl-{secrets.token_hex(8)}" for _ in range(args.answers)]
    served = ServedAnswers(capacity=args.answers)
    started = time.perf_counter()
    for i, completion_id in enumerate(ids):
        served.remember(completion_id, label_sets[i % len(label_sets)])
    remembered = time.perf_counter() - started
    held = tracemalloc.get_traced_memory()[0] - sys.getsizeof(ids)
    tracemalloc.stop()
    started = time.perf_counter()
    for completion_id in ids:
        served.take(completion_id)
    taken = time.perf_counter() - started
    print(f"{args.answers} answers remembered: {held / 1e6:.1f} MB held")
    print(f"remember: {remembered / args.answers * 1e6:.2f} us each (under tracemalloc)")
    print(f"take: {taken / args.answers * 1e6:.2f} us each")
    results = {
        "answers": args.answers,
        "held_bytes": held,
        "remember_microseconds": remembered / args.answers * 1e6,
        "take_microseconds": taken / args.answers * 1e6,
    }
    record.write("feedback_memory", results, args, before=before)


if __name__ == "__main__":
    main()
