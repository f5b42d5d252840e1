"""The controller's HTTP API: runs, approve and abort, Alertmanager's webhook, the OpenAPI
document and the live page, over the shared state store."""

import lazy_loader

# Each name is imported on first use: a guard reading alerts does not load the web app.
__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "app": ["api_routes", "create_app", "json_errors"],
        "tokens": ["ApiTokens", "Role"],
    },
)
