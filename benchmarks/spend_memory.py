"""Memory the gateway's spend sketches hold when full, and what metering one request costs.

Two parts of metering are also timed alone: adding a user to the sketch (mostly users it has
not seen, whose first request once scanned every counter) and fingerprinting a request.

python benchmarks/spend_memory.py [--fingerprints 100000] [--counters 200] [--requests 20000]
    # writes benchmarks/results/spend_memory.json
"""

from __future__ import annotations

import argparse
import random
import time
import tracemalloc

import record

from canaryctl.gateway.identity import Identity
from canaryctl.gateway.metrics import GatewayMetrics
from canaryctl.gateway.spend import RecentRequests, SpaceSaving, SpendMeter, fingerprint
from canaryctl.runbook.gateway import ModelSpec, PriceSpec, SpendSpec


def held(fill: object) -> int:
    """Bytes still allocated after `fill()` ran (what the sketch it filled keeps alive)."""
    tracemalloc.start()
    kept = fill()  # type: ignore[operator]
    size = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del kept
    return size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fingerprints", type=int, default=100_000, help="spend.fingerprints")
    parser.add_argument("--counters", type=int, default=200, help="spend.user_counters")
    parser.add_argument("--requests", type=int, default=20_000, help="requests metered, timed")
    record.add_arguments(parser)
    args = parser.parse_args()
    before = record.machine()
    rng = random.Random(16)

    def fingerprints() -> RecentRequests:
        recent = RecentRequests(3600, args.fingerprints, clock=time.monotonic)
        for _ in range(2 * args.fingerprints):  # full, and evicting
            recent.see(rng.getrandbits(64), answered=True)
        return recent

    def users() -> SpaceSaving:
        sketch = SpaceSaving(args.counters)
        for i in range(50 * args.counters):
            sketch.add(f"user-{i % (20 * args.counters):06d}", rng.random())
        return sketch

    fingerprint_bytes, user_bytes = held(fingerprints), held(users)
    started = time.perf_counter()
    filled = users()  # the same stream, timed without tracemalloc: mostly first-seen users
    per_user_add = (time.perf_counter() - started) / (50 * args.counters) * 1e6
    del filled
    model = ModelSpec(name="m", base_url="http://127.0.0.1:1", price=PriceSpec(prompt_per_1k=0.01))
    meter = SpendMeter(SpendSpec(), GatewayMetrics())
    prompt = "Summarise this support ticket in three sentences: " + "x" * 400
    usage = {"prompt_tokens": 120, "completion_tokens": 80}
    callers = [Identity(f"user-{i}", "free", f"team-{i % 5}", f"job-{i % 7}") for i in range(500)]
    chats = [
        {"model": "bot", "messages": [{"role": "user", "content": f"{prompt} {i}"}]}
        for i in range(3000)
    ]
    started = time.perf_counter()
    for i in range(args.requests):
        fingerprint("bot", "job-1", chats[i % 3000])
    per_fingerprint = (time.perf_counter() - started) / args.requests * 1e6
    started = time.perf_counter()
    for i in range(args.requests):
        chat = {"model": "bot", "messages": [{"role": "user", "content": f"{prompt} {i % 3000}"}]}
        meter.record("bot", model, callers[i % 500], chat, usage, answered=True, fell_back=False)
    per_request = (time.perf_counter() - started) / args.requests * 1e6
    print(f"{args.fingerprints} fingerprints: {fingerprint_bytes / 1e6:.1f} MB held")
    print(f"{args.counters} user counters: {user_bytes / 1e3:.1f} kB held")
    print(f"user sketch: {per_user_add:.2f} us per add")
    print(f"fingerprint: {per_fingerprint:.2f} us per request")
    print(f"record: {per_request:.1f} us per request")
    results = {
        "fingerprints": args.fingerprints,
        "fingerprint_bytes": fingerprint_bytes,
        "user_counters": args.counters,
        "user_counter_bytes": user_bytes,
        "user_add_microseconds": per_user_add,
        "fingerprint_microseconds": per_fingerprint,
        "requests": args.requests,
        "record_microseconds": per_request,
    }
    record.write("spend_memory", results, args, before=before)


if __name__ == "__main__":
    main()
