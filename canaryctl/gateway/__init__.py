"""The reference gateway: an OpenAI- and Ollama-compatible router that evaluates a LaunchDarkly
flag per request, falls back down each model's chain, and exports the metrics rollouts read."""

from canaryctl.gateway.app import create_app
from canaryctl.gateway.metrics import BUCKETS, GatewayMetrics

__all__ = ["BUCKETS", "GatewayMetrics", "create_app"]
