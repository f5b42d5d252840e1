"""How a rollout looks while it runs: a live panel for a person, JSON lines for a machine.

Both are observers: they only listen. `canaryctl demo` builds them too, so their constructors take
nothing but where to write.
"""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from canaryctl.analysis import Check, Outcome, Verdict
from canaryctl.controller import Phase, RolloutObserver, RunInfo, RunResult
from canaryctl.controller.hooks import HookResult
from canaryctl.controller.step import PlanItem
from canaryctl.flags.base import Split

__all__ = ["JsonLinesView", "LiveView"]

_STYLE = {Outcome.PASS: "green", Outcome.FAIL: "bold red", Outcome.INCONCLUSIVE: "yellow"}
_ENDING = {
    "promoted": "green",
    "rolled_back": "bold red",
    "aborted": "yellow",
    "error": "bold red",
    "interrupted": "yellow",
}


def _split(split: Split) -> dict[str, float]:
    return {"baseline": split.baseline, "canary": split.canary, "other": split.other}


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"


class JsonLinesView(RolloutObserver):
    """One JSON object per event, each with `event` and `run_id` first; stable keys for scripts."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    def _emit(self, event: str, run_id: int, **fields: Any) -> None:
        stream = self._stream if self._stream is not None else sys.stdout
        stream.write(json.dumps({"event": event, "run_id": run_id, **fields}) + "\n")
        stream.flush()

    def on_start(self, run: RunInfo) -> None:
        self._emit(
            "start",
            run.run_id,
            name=run.name,
            baseline=run.baseline,
            canary=run.canary,
            resumed=run.resumed,
            split=_split(run.split),
            plan=[item.describe() for item in run.plan],
            slos=[slo.describe() for slo in run.slos],
        )

    def on_step(self, run_id: int, index: int, total: int, item: PlanItem) -> None:
        self._emit("step", run_id, index=index, total=total, step=item.describe())

    def on_weight(self, run_id: int, before: Split, after: Split) -> None:
        self._emit("weight", run_id, before=_split(before), after=_split(after))

    def on_analysis(self, run_id: int, verdict: Verdict) -> None:
        self._emit("analysis", run_id, **verdict.to_dict())

    def on_phase(self, run_id: int, phase: Phase, reason: str) -> None:
        self._emit("phase", run_id, phase=phase.value, reason=reason)

    def on_request(self, run_id: int, kind: str, by: str) -> None:
        self._emit("request", run_id, kind=kind, by=by)

    def on_error(self, run_id: int, message: str) -> None:
        self._emit("error", run_id, message=message)

    def on_hook(self, run_id: int, hook: str, result: HookResult) -> None:
        self._emit("hook", run_id, hook=hook, **result.to_dict())

    def on_finish(self, result: RunResult) -> None:
        fields = result.to_dict()
        self._emit("finish", fields.pop("run_id"), **fields)


class LiveView(RolloutObserver):
    """A panel redrawn in place: step, weight, each SLO against its bound, the last verdict.

    Moments worth keeping (weights, phases, errors, hooks) are also printed above the panel, so
    the scrollback tells the story after the panel is gone.
    """

    def __init__(self, console: Console | None = None) -> None:
        self._console = console if console is not None else Console()
        self._live: Live | None = None
        self._run: RunInfo | None = None
        self._step = ""
        self._phase = Phase.PENDING
        self._weight = 0.0
        self._verdict: Verdict | None = None

    def on_start(self, run: RunInfo) -> None:
        self._run, self._weight = run, run.split.canary
        verb = "resuming" if run.resumed else "starting"
        self._console.print(
            f"[bold]{verb} rollout {run.name}[/] (run {run.run_id}): "
            f"{run.canary} replaces {run.baseline}, canary at {run.split.canary:g}%"
        )
        self._live = Live(self._render(), console=self._console, auto_refresh=False)
        self._live.start()

    def on_step(self, run_id: int, index: int, total: int, item: PlanItem) -> None:
        self._step = f"{index + 1}/{total}: {item.describe()}"
        self._refresh()

    def on_weight(self, run_id: int, before: Split, after: Split) -> None:
        self._weight = after.canary
        if after.canary > before.canary:
            self._verdict = None  # a new window: the last verdict was about the previous weight
        if after != before:  # a promotion from 100% changes the rule, not the split
            self._console.print(f"flag: canary {before.canary:g}% → {after.canary:g}%")
        self._refresh()

    def on_analysis(self, run_id: int, verdict: Verdict) -> None:
        self._verdict = verdict
        self._refresh()

    def on_phase(self, run_id: int, phase: Phase, reason: str) -> None:
        self._phase = phase
        if phase in (Phase.AWAITING_APPROVAL, Phase.ROLLING_BACK, Phase.PROMOTING):
            suffix = f": {reason}" if reason else ""
            self._console.print(f"phase: {phase.value}{suffix}")
            if phase is Phase.AWAITING_APPROVAL:
                self._console.print(f"  approve with: canaryctl rollout approve {run_id}")
                if reason:  # undecided (on_inconclusive: pause): abort is the other answer
                    self._console.print(f"  or roll back: canaryctl rollout abort {run_id}")
        self._refresh()

    def on_request(self, run_id: int, kind: str, by: str) -> None:
        self._console.print(f"{kind} requested by {by}")

    def on_error(self, run_id: int, message: str) -> None:
        self._console.print(f"[red]error:[/] {message}", markup=True)

    def on_hook(self, run_id: int, hook: str, result: HookResult) -> None:
        style = "green" if result.ok else "red"
        self._console.print(f"{hook} webhook {result.target}: [{style}]{result.detail}[/]")

    def on_finish(self, result: RunResult) -> None:
        if self._live is not None:
            self._live.update(self._render(), refresh=True)
            self._live.stop()
            self._live = None
            if not self._console.is_terminal:
                self._console.line()  # a terminal's cursor already sits below the panel
        split = result.final_split
        where = "flag unreadable" if split is None else f"canary at {split.canary:g}%"
        line = Text(f"{result.outcome.replace('_', ' ')} ", style=_ENDING[result.outcome])
        line.append(f"(exit {result.exit_code}, {where})", style="default")
        if result.reason:
            line.append(f": {result.reason}", style="default")
        self._console.print(line)

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.update(self._render(), refresh=True)

    def _render(self) -> Panel:
        run = self._run
        title = "rollout" if run is None else f"rollout {run.name} · run {run.run_id}"
        status = Text.assemble(
            ("step ", "dim"),
            self._step or "—",
            ("   phase ", "dim"),
            self._phase.value,
            ("   canary ", "dim"),
            f"{self._weight:g}%",
        )
        table = Table(expand=True, box=None, pad_edge=False, collapse_padding=True)
        # At 80 columns the numbers and the evidence squeezed the SLO to `latency_p95_seco…`
        # and the outcome to `inconclus`: both may wrap at a space now, never inside a word
        # (the e-value goes below the outcome), and the numbers never wrap.
        slos = [c.slo for c in self._verdict.checks] if self._verdict is not None else []
        slos += [slo.describe() for slo in run.slos] if run is not None else []
        words = [len(word) for slo in slos for word in slo.split()]
        table.add_column("SLO", min_width=max(words, default=3))
        for column in ("canary", "baseline", "bound", "requests"):
            table.add_column(column, justify="right", no_wrap=True)
        table.add_column("result", min_width=len(Outcome.INCONCLUSIVE.value))
        verdict_line = Text("no analysis yet", style="dim")
        if self._verdict is not None:
            for check in self._verdict.checks:
                table.add_row(
                    check.slo,
                    _number(check.canary_value),
                    _number(check.baseline_value),
                    _number(check.bound),
                    f"{check.canary_requests:g}/{check.baseline_requests:g}",
                    _result(check),
                )
            verdict_line = Text(
                f"verdict: {self._verdict.outcome.value}", style=_STYLE[self._verdict.outcome]
            )
            if self._verdict.reason:
                verdict_line.append(f" ({self._verdict.reason})", style="default")
        elif run is not None:
            for slo in run.slos:
                table.add_row(slo.describe(), "—", "—", "—", "—", Text("waiting", style="dim"))
        # No right padding: the table's last column may reach the border, so a full row of
        # an 80-column terminal fits.
        body = Group(status, table, verdict_line)
        return Panel(body, title=title, title_align="left", padding=(0, 0, 0, 1))


def _result(check: Check) -> Text:
    """The outcome; for a sequential check also its e-value against the threshold that rejects."""
    result = Text(check.outcome.value, style=_STYLE[check.outcome])
    if check.evidence is not None:
        result.append(f" e={check.evidence.e_value:.3g}/{check.evidence.threshold:g}", style="dim")
    return result
