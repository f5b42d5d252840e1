"""Metric profiles for the Prometheus source: find one by name or path, and check it covers
the runbook's SLOs before anything moves."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from canaryctl.errors import InvalidInput
from canaryctl.runbook.loader import load_document, parse_document
from canaryctl.runbook.profile_refs import is_profile_path, shipped_profile, shipped_profiles
from canaryctl.runbook.rollout import PrometheusMetricsSpec
from canaryctl.slo_metrics import GUARD_READS, SLO_METRICS

if TYPE_CHECKING:
    from canaryctl.runbook.profile import MetricProfileSpec
    from canaryctl.runbook.rollout import RolloutSpec, SloSpec

# The MetricProfile model and the measures are imported by the functions that read a profile:
# `validate` on a runbook that reads none (scrape, lab, scripted metrics) never builds them.

__all__ = ["check_profile_feeds_slos", "ingredients_for", "load_profile"]


def load_profile(reference: str) -> MetricProfileSpec:
    """A shipped profile by name, or a profile file (InvalidDocument naming its lines)."""
    from canaryctl.runbook.profile import MetricProfile

    if is_profile_path(reference):
        return load_document(reference, expect=MetricProfile).spec
    text = shipped_profile(reference)
    if text is None:
        shipped = ", ".join(shipped_profiles())
        raise InvalidInput(
            f"spec.metrics.profile: no shipped profile '{reference}' (shipped: {shipped}); "
            "a profile file needs a path ending in .yaml"
        )
    return parse_document(text, f"shipped profile {reference}", expect=MetricProfile).spec


def ingredients_for(
    slos: Sequence[SloSpec], profile: MetricProfileSpec, profile_name: str
) -> frozenset[str]:
    """What the SLOs read (their optional ingredients too, where the profile yields them) and
    what the built-in check on the canary reads (analysis.guard); InvalidInput naming the first
    SLO the profile cannot feed."""
    from canaryctl.metrics.measures import NEEDS

    needed: set[str] = set(GUARD_READS & profile.ingredients)
    for index, slo in enumerate(slos):
        if slo.metric is None:
            continue  # a custom PromQL SLO brings its own query
        missing = NEEDS[slo.metric] - profile.ingredients
        if missing:
            raise InvalidInput(
                f"spec.slos[{index}]: {slo.metric} needs {', '.join(sorted(missing))}, which "
                f"metric profile '{profile_name}' does not yield"
            )
        needed |= SLO_METRICS[slo.metric].reads & profile.ingredients
    return frozenset(needed)


def check_profile_feeds_slos(spec: RolloutSpec) -> None:
    """For `validate` and before a run acts: InvalidInput when the runbook's metric profile
    cannot feed one of its SLOs (quality_score on LiteLLM), or one of a shadow step's from its
    `shadow` queries (a profile without them cannot judge a shadow step at all)."""
    if not isinstance(spec.metrics, PrometheusMetricsSpec):
        return
    from canaryctl.metrics.measures import NEEDS

    name = spec.metrics.profile
    profile = load_profile(name)
    ingredients_for(spec.slos, profile, name)
    for index, step in enumerate(spec.steps):
        if step.shadow is None:
            continue
        if not profile.shadow:
            raise InvalidInput(
                f"spec.steps[{index}].shadow: metric profile '{name}' has no shadow queries, "
                "so the candidate's shadow traffic cannot be read"
            )
        shadow = frozenset(i for query in profile.shadow for i in query.yields)
        for slo_index, slo in enumerate(step.shadow.slos):
            missing = NEEDS[slo.metric] - shadow if slo.metric is not None else frozenset()
            if missing:
                raise InvalidInput(
                    f"spec.steps[{index}].shadow.slos[{slo_index}]: {slo.metric} needs "
                    f"{', '.join(sorted(missing))}, which the shadow queries of metric profile "
                    f"'{name}' do not yield"
                )
