"""Metrics sources: per-variant counts over a window. One module per backend, seam in base.py."""

from canaryctl.metrics.base import EMPTY, MetricsSource, Observation, VariantStats
from canaryctl.metrics.factory import metrics_source_for
from canaryctl.metrics.measures import MEASURES, NEEDS, histogram_quantile, measure
from canaryctl.metrics.profile import load_profile
from canaryctl.metrics.prometheus import PrometheusMetricsSource, SloQuery
from canaryctl.metrics.scrape import ScrapeMetricsSource
from canaryctl.metrics.scripted import ScriptedMetricsSource

__all__ = [
    "EMPTY",
    "MEASURES",
    "NEEDS",
    "MetricsSource",
    "Observation",
    "PrometheusMetricsSource",
    "ScrapeMetricsSource",
    "ScriptedMetricsSource",
    "SloQuery",
    "VariantStats",
    "histogram_quantile",
    "load_profile",
    "measure",
    "metrics_source_for",
]
