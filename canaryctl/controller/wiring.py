"""The wiring of a run's backends, in one place: the runbook's flag store and metrics source
(or the fakes a test or a benchmark gives), its webhooks and notifiers, and the runbook as the
journal keeps it for a process that did not read the original (resume, a controller). `run`,
`resume` and a controller's drive all wire a run with `wired`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from canaryctl.clock import Clock
from canaryctl.controller.hooks import HookRunner, check_hook_urls
from canaryctl.flags.base import FlagStore
from canaryctl.metrics.base import MetricsSource
from canaryctl.metrics.scrape_cache import ScrapeCache
from canaryctl.runbook.rollout import Rollout

if TYPE_CHECKING:
    from canaryctl.notify import WebhookNotifier

__all__ = [
    "Wiring",
    "notifiers_for_run",
    "runbook_backends",
    "stored_rollout",
    "webhooks_the_journal_drops",
    "wired",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Wiring:
    """What one run talks to besides its journal."""

    flags: FlagStore
    metrics: MetricsSource
    hooks: HookRunner
    notifiers: list[WebhookNotifier]
    shadow_flags: FlagStore | None = None
    """The flag a shadow step moves (spec.shadow_flag), None without one."""


@contextmanager
def wired(
    rollout: Rollout,
    clock: Clock,
    flags: FlagStore | None = None,
    metrics: MetricsSource | None = None,
    *,
    shadow_flags: FlagStore | None = None,
    scrapes: ScrapeCache | None = None,
) -> Iterator[Wiring]:
    """The run's backends (the runbook's own unless given), its webhook client and notifiers;
    webhook URLs are checked first (exit 2), and the client and notifiers are closed (drained,
    bounded) when the run ends, once its flag is safe. `scrapes`: see `runbook_backends`."""
    check_hook_urls(rollout.spec)
    flags, metrics = runbook_backends(rollout, clock, flags, metrics, scrapes=scrapes)
    if shadow_flags is None and rollout.spec.shadow_flag is not None:
        from canaryctl.flags.factory import flag_store_for

        shadow_flags = flag_store_for(rollout.spec.shadow_flag)
    hooks = HookRunner()
    notifiers = notifiers_for_run(rollout)
    try:
        yield Wiring(flags, metrics, hooks, notifiers, shadow_flags)
    finally:
        hooks.close()
        for notifier in notifiers:
            notifier.close()


def runbook_backends(
    rollout: Rollout,
    clock: Clock,
    flags: FlagStore | None = None,
    metrics: MetricsSource | None = None,
    *,
    scrapes: ScrapeCache | None = None,
) -> tuple[FlagStore, MetricsSource]:
    """The runbook's own backends unless given; imported here so the fakes need no backends.

    `scrapes` is the cache the runs of one controller share: a scrape source's analyses then
    read a target's sample another run took less than one analysis interval ago.
    """
    if flags is None:
        from canaryctl.flags.factory import flag_store_for

        flags = flag_store_for(rollout.spec.flag)
    if metrics is None:
        from canaryctl.metrics.factory import metrics_source_for

        spec = rollout.spec
        metrics = metrics_source_for(
            spec.metrics,
            clock=clock.now,
            slos=spec.slos,
            baseline=spec.flag.baseline,
            canary=spec.flag.canary,
            scrapes=scrapes,
            share_age=spec.analysis.interval if scrapes is not None else 0.0,
        )
    return flags, metrics


def notifiers_for_run(rollout: Rollout) -> list[WebhookNotifier]:
    """The runbook's `notify:` webhooks, closed (drained, bounded) once the flag is safe."""
    from canaryctl.notify import notifiers_for

    return notifiers_for(rollout.spec.notify)


def webhooks_the_journal_drops(spec: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The webhooks of a runbook's `spec` (as JSON) that a run driven from the journal's copy
    cannot call (a written URL, kept by its origin alone), and those it calls without their
    headers (`url_env` ones with headers: the journal keeps none)."""
    lost, headless = [], []
    for key in ("on_rollback", "on_promote", "notify"):
        for index, hook in enumerate(spec.get(key) or []):
            webhook = hook.get("webhook", {})
            if not webhook.get("url_env"):
                lost.append(f"spec.{key}[{index}] ({webhook.get('url', '?')})")
            elif webhook.get("headers"):
                headless.append(f"spec.{key}[{index}]")
    return lost, headless


def stored_rollout(
    runbook: dict[str, Any],
    warn: Callable[[str], None] = log.warning,
    *,
    original: str = "pass --runbook with the original file",
) -> Rollout:
    """The journal's redacted copy as a runbook: a webhook stored by its origin alone would
    post to the wrong place, so only `url_env` webhooks are kept, without their headers; `warn`
    hears, in one line, which webhooks are lost and how to keep them: `original` says how the
    caller can be given the original runbook (a controller cannot: empty)."""
    spec = runbook.get("spec", {})
    lost, headless = webhooks_the_journal_drops(spec)
    for key in ("on_rollback", "on_promote", "notify"):
        kept = [hook for hook in spec.get(key, []) if hook.get("webhook", {}).get("url_env")]
        for hook in kept:
            hook["webhook"]["headers"] = {}
        spec[key] = kept
    if lost:
        without = f"; {', '.join(headless)} will post without headers" if headless else ""
        keep = f"{original}, or give them url_env" if original else "give them url_env"
        warn(
            f"webhooks {', '.join(lost)} will not fire on this run: their URL is written in "
            f"the runbook, and the journal keeps only its origin{without}. To keep them, {keep}"
        )
    elif headless:
        keep = f": {original} to keep them" if original else ""
        warn(
            f"webhooks {', '.join(headless)} will post without their headers on this run "
            f"(the journal keeps none){keep}"
        )
    return Rollout.model_validate(runbook)
