"""Metrics sources: per-variant counts over a window. One module per backend, seam in base.py."""

import lazy_loader

# Each name is imported on first use, so importing one submodule (or running one command)
# does not load the whole package.
__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "base": ["EMPTY", "MetricsSource", "Observation", "ShadowSource", "VariantStats"],
        "factory": ["metrics_source_for"],
        "measures": ["MEASURES", "NEEDS", "histogram_quantile", "measure"],
        "profile": ["load_profile"],
        "prometheus": ["PrometheusMetricsSource", "SloQuery"],
        "scrape": ["ScrapeMetricsSource"],
        "scripted": ["ScriptedMetricsSource"],
    },
)
