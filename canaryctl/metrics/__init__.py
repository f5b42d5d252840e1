"""Metrics sources: per-variant counts over a window. One module per backend, seam in base.py."""

from canaryctl.metrics.base import EMPTY, MetricsSource, Observation, VariantStats
from canaryctl.metrics.factory import metrics_source_for
from canaryctl.metrics.measures import MEASURES, histogram_quantile, measure
from canaryctl.metrics.prometheus import PrometheusMetricsSource
from canaryctl.metrics.scrape import ScrapeMetricsSource
from canaryctl.metrics.scripted import ScriptedMetricsSource

__all__ = [
    "EMPTY",
    "MEASURES",
    "MetricsSource",
    "Observation",
    "PrometheusMetricsSource",
    "ScrapeMetricsSource",
    "ScriptedMetricsSource",
    "VariantStats",
    "histogram_quantile",
    "measure",
    "metrics_source_for",
]
