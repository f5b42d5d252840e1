"""A stand-in for LiteLLM proxy's /metrics: its metric names and labels, served on loopback.

Names and label sets follow LiteLLM's own declarations (litellm/types/integrations/prometheus.py
and litellm/integrations/prometheus.py). `metric_suffix=False` drops the `_metric` part, the
spelling LiteLLM's docs use for some of them. `Traffic` plays the application in front of
LiteLLM: for every request it asks the real LaunchDarkly SDK (watching the flag file) which
variation to serve, maps it to the model group the app requests, and records what LiteLLM would.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass

from ldclient import Context, LDClient
from ldclient.config import Config
from ldclient.integrations import Files
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

__all__ = ["Group", "LiteLLMExporter", "Traffic"]

_KEY = ["end_user", "hashed_api_key", "api_key_alias"]
_TEAM = ["team", "team_alias", "user"]
_FALLBACK = ["requested_model", "fallback_model", "hashed_api_key", "api_key_alias", "team"]
_BUCKETS = (0.1, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 5.0, 10.0)
_FIRST_TOKEN = ["model", "hashed_api_key", "api_key_alias", "team", "team_alias"]
_FIRST_TOKEN += ["requested_model", "end_user", "user", "model_id"]
"""LiteLLM's labels of its time-to-first-token histogram (PrometheusMetricLabels)."""
_FIRST_TOKEN_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0)
"""What a LiteLLM configured with `prometheus_latency_buckets` for chat SLOs would use: its
default buckets have no edge between 0.1 and 0.5 s."""


class LiteLLMExporter:
    def __init__(self, *, metric_suffix: bool = True) -> None:
        m = "_metric" if metric_suffix else ""
        self.registry = registry = CollectorRegistry()
        self.total = Counter(
            f"litellm_proxy_total_requests{m}",
            "Total number of requests made to the proxy server",
            [*_KEY, "requested_model", *_TEAM, "status_code"],
            registry=registry,
        )
        self.failed = Counter(
            f"litellm_proxy_failed_requests{m}",
            "Total number of failed responses from proxy",
            [*_KEY, "requested_model", *_TEAM, "exception_status", "exception_class"],
            registry=registry,
        )
        self.latency = Histogram(
            f"litellm_request_total_latency{m}",
            "Total latency (seconds) for a request to LiteLLM",
            [*_KEY, "requested_model", *_TEAM, "model"],
            buckets=_BUCKETS,
            registry=registry,
        )
        self.spend = Counter(
            f"litellm_spend{m}",
            "Total spend on LLM requests",
            [*_KEY, "model", *_TEAM],
            registry=registry,
        )
        tokens = [*_KEY, "model", *_TEAM, "requested_model"]
        self.input_tokens = Counter(
            f"litellm_input_tokens{m}", "Input tokens", tokens, registry=registry
        )
        self.output_tokens = Counter(
            f"litellm_output_tokens{m}", "Output tokens", tokens, registry=registry
        )
        self.fallbacks = Counter(
            "litellm_deployment_successful_fallbacks",
            "Successful fallback requests from primary model -> fallback model",
            [*_FALLBACK, "team_alias", "exception_status", "exception_class"],
            registry=registry,
        )
        self.first_token = Histogram(
            "litellm_llm_api_time_to_first_token_metric",  # one spelling in code and docs
            "Time to first token for a models LLM API call",
            _FIRST_TOKEN,
            buckets=_FIRST_TOKEN_BUCKETS,
            registry=registry,
        )
        self._server, self._thread = start_http_server(0, addr="127.0.0.1", registry=registry)
        self.url = f"http://127.0.0.1:{self._server.server_port}/metrics"

    def record(
        self,
        group: str,
        model: str,
        *,
        user: str,
        failed: bool,
        seconds: float,
        first_token: float | None = None,
        spend: float = 0.002,
    ) -> None:
        """One request to model group `group`, answered (or not) by deployment model `model`;
        streamed if it has a `first_token` (LiteLLM records none for a plain request). `spend`
        0 is what LiteLLM records for a model it has no price for (and for one priced at 0)."""
        key = {"end_user": user, "hashed_api_key": "88dc28", "api_key_alias": "support-bot"}
        team = {"team": "support", "team_alias": "support", "user": "app"}
        status = "500" if failed else "200"
        self.total.labels(**key, requested_model=group, **team, status_code=status).inc()
        if failed:
            error = {"exception_status": "500", "exception_class": "InternalServerError"}
            self.failed.labels(**key, requested_model=group, **team, **error).inc()
            return
        self.latency.labels(**key, requested_model=group, **team, model=model).observe(seconds)
        if first_token is not None:
            labels = {**key, **team, "requested_model": group, "model": model, "model_id": "1"}
            self.first_token.labels(**labels).observe(first_token)
        self.spend.labels(**key, model=model, **team).inc(spend)
        tokens = {**key, "model": model, **team, "requested_model": group}
        self.input_tokens.labels(**tokens).inc(120)
        self.output_tokens.labels(**tokens).inc(40)

    def close(self) -> None:
        self._server.shutdown()
        self._thread.join()


@dataclass(frozen=True)
class Group:
    """A LiteLLM model group as the test wants it to behave."""

    name: str
    model: str
    fail_every: int = 0  # every n-th request fails; 0 never
    seconds: float = 0.3


class Traffic:
    """`rate` requests a second from a few users, each routed by the flag through the real SDK."""

    def __init__(
        self,
        exporter: LiteLLMExporter,
        flags_path: str,
        flag_key: str,
        groups: dict[str, Group],
        *,
        rate: int = 100,
    ) -> None:
        source = Files.new_data_source(
            paths=[flags_path], auto_update=True, force_polling=True, poll_interval=0.1
        )
        self._client = LDClient(
            Config(sdk_key="test", send_events=False, update_processor_class=source)
        )
        self._exporter, self._flag_key, self._groups = exporter, flag_key, groups
        self._tick = 10 / rate
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="litellm-traffic", daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._client.close()

    def _run(self) -> None:
        counts: dict[str, int] = {}
        users = itertools.cycle(f"user-{i}" for i in range(500))
        customers = itertools.cycle(("acme", "globex", "initech"))  # several series per group
        while not self._stop.wait(self._tick):
            for _ in range(10):
                user = next(users)
                context = Context.builder(user).build()
                variation = str(self._client.variation(self._flag_key, context, ""))
                group = self._groups.get(variation)
                if group is None:
                    continue
                counts[group.name] = n = counts.get(group.name, 0) + 1
                failed = group.fail_every > 0 and n % group.fail_every == 0
                self._exporter.record(
                    group.name,
                    group.model,
                    user=next(customers),
                    failed=failed,
                    seconds=group.seconds,
                )
