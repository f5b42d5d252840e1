"""Chaos: a fault proxy in front of LLM providers, and scenarios that prove fallbacks work."""

import lazy_loader

# Each name is imported on first use, so importing one submodule (or running one command)
# does not load the whole package.
__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "admin": ["ADMIN_PREFIX", "TOKEN_ENV"],
        "client": ["ChaosClient", "token_from_env"],
        "faults": ["ActiveFault", "FaultTable", "RequestFacts"],
        "journal": ["Journal", "junit_xml"],
        "proxy": ["create_proxy_app"],
        "scenario": ["ScenarioResult", "run_scenario"],
        "server": ["BackgroundServer"],
    },
)
