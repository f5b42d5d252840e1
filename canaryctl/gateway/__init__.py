"""The reference gateway: an OpenAI- and Ollama-compatible router that evaluates a LaunchDarkly
flag per request, falls back down each model's chain, and exports the metrics rollouts read."""

import lazy_loader

# Each name is imported on first use, so importing one submodule (or running one command)
# does not load the whole package.
__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "app": ["create_app"],
        "metrics": ["BUCKETS", "GatewayMetrics"],
    },
)
