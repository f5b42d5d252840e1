"""An app as many teams already run one: the official OpenAI client, instrumented by
OpenTelemetry's official OpenAI instrumentation (`opentelemetry-instrumentation-openai-v2`),
exporting the GenAI semantic conventions' metrics for Prometheus to scrape, and choosing its model
per request from a LaunchDarkly flag. canaryctl rolls the flag's canary out and judges it from
those metrics alone, through the shipped `otel-genai` metric profile; no canaryctl gateway sits in
the path.

    python examples/openai_otel_app.py --flags flags.json --flag support-bot-model \\
        --model gpt-4o-mini=http://127.0.0.1:8101/v1 \\
        --model mixtral-8x7b=http://127.0.0.1:8102/v1 --metrics-port 9464 --rate 30

Each `--model NAME=BASE_URL` says where a variation's model answers (an OpenAI-compatible API);
the flag's variation values are model names. The OpenAI key, if the endpoints need one, comes
from OPENAI_API_KEY. The app sends `--rate` requests a second, each as a random one of `--users`
users, until SIGTERM or Ctrl-C; at most 32 calls are in flight (the rest are not sent).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import openai
from ldclient import Context, LDClient
from ldclient.config import Config
from ldclient.integrations import Files
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import start_http_server

WORKERS = 32
QUESTIONS = ("What is 17 + 25?", "What is 9 * 8?", "What is 100 - 37?")


Call = Callable[[str, str, str], None]
"""call(model, question, user): one chat completion; raises openai.OpenAIError when it fails."""


def openai_calls(endpoints: dict[str, str], key: str) -> Call:
    """Chat completions through the official OpenAI client, one client per model's endpoint."""
    clients = {
        name: openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=10)
        for name, url in endpoints.items()
    }

    def call(model: str, question: str, user: str) -> None:
        clients[model].chat.completions.create(
            model=model, messages=[{"role": "user", "content": question}], user=user
        )

    return call


def main(calls: Callable[[dict[str, str], str], Call] = openai_calls, about: str = "") -> None:
    """The app's loop, whatever makes the calls (`calls(endpoints, key)`): examples/langchain_app.py
    runs it with LangChain's client."""
    parser = argparse.ArgumentParser(description=(about or __doc__).split("\n\n")[0])
    parser.add_argument("--flags", required=True, help="LaunchDarkly file data source (JSON)")
    parser.add_argument("--flag", required=True, help="the flag whose variation names the model")
    parser.add_argument("--model", action="append", required=True, metavar="NAME=BASE_URL")
    parser.add_argument("--metrics-port", type=int, default=9464)
    parser.add_argument("--rate", type=float, default=20.0, help="requests a second")
    parser.add_argument("--users", type=int, default=500)
    args = parser.parse_args()

    # OpenTelemetry: the GenAI metrics, read by Prometheus from this process' /metrics.
    provider = MeterProvider(metric_readers=[PrometheusMetricReader()])
    OpenAIInstrumentor().instrument(meter_provider=provider)
    start_http_server(args.metrics_port, addr="127.0.0.1")

    # The flag, read from the file canaryctl writes, re-read when it changes.
    source = Files.new_data_source(
        paths=[args.flags], auto_update=True, poll_interval=0.2, force_polling=True
    )
    flags = LDClient(Config("file-sdk-key", update_processor_class=source, send_events=False))
    endpoints = dict(item.split("=", 1) for item in args.model)
    call = calls(endpoints, os.environ.get("OPENAI_API_KEY", "none"))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    reported: set[tuple[str, str]] = set()

    def ask(user: int) -> None:
        context = Context.builder(f"user-{user}").build()
        model = str(flags.variation(args.flag, context, next(iter(endpoints))))
        if model not in endpoints:
            return  # a variation with no endpoint given: nothing to call
        try:
            call(model, random.choice(QUESTIONS), f"user-{user}")
        except openai.OpenAIError as error:  # counted by the instrumentation, with error.type
            kind = (model, type(error).__name__)
            if kind not in reported:  # once per model and kind: a bad canary fails often
                reported.add(kind)
                print(f"{model}: {kind[1]}: {error}", file=sys.stderr, flush=True)

    # At most WORKERS calls in flight: when the endpoints answer slower than the rate, the
    # surplus is not sent (a queue would only grow, and SIGTERM would wait for all of it).
    in_flight = threading.BoundedSemaphore(WORKERS)

    def send(user: int) -> None:
        try:
            ask(user)
        finally:
            in_flight.release()

    pool = ThreadPoolExecutor(max_workers=WORKERS)
    while not stop.wait(1 / args.rate):
        if in_flight.acquire(blocking=False):
            pool.submit(send, random.randrange(args.users))
    pool.shutdown(wait=True, cancel_futures=True)
    flags.close()


if __name__ == "__main__":
    main()
