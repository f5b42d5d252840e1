"""The pure tick: (spec, state, now, event) -> new state and the one action to perform next.

No I/O and no reading of the clock happen here, so the same decisions run in production, in tests
with a fake clock and in simulations of thousands of rollouts. The runner performs the action and
feeds back what happened as the next event; `None` means "time passed".

Semantics, step by step:

- The runbook's steps are expanded into a plan of weight changes and holds. A `set_weight` that is
  not followed by a `pause` gets an implicit hold of one analysis interval, so every weight is
  judged by at least one passing analysis before the next weight or the promotion.
- Setting a weight starts a new analysis window; every analysis covers the window since then.
- During a hold an analysis runs every `analysis.interval`, and one runs when the hold ends. A hold
  lasts at least one interval after its weight was set, so the closing analysis sees some data.
- A failed analysis counts toward `failure_limit` for the whole run; exceeding it rolls back.
- Inconclusive analyses are fine while a hold lasts, but the closing analysis must pass, and
  pass on evidence: a check against the baseline whose estimate is beyond its bound (a pass
  that only says nothing shows the canary worse yet, Verdict.not_shown_within) is undecided, as
  an inconclusive analysis is. Undecided (or a tolerated failure), the hold is extended one
  interval at a time; more than `inconclusive_limit` undecided extensions follow
  `analysis.on_inconclusive`: `rollback` rolls back ("inconclusive: ..." with what is undecided);
  `pause` holds the weight in AWAITING_APPROVAL (`undecided_until` set, the reason saying why),
  keeps analysing every interval, and waits: a closing pass goes on, a failure past
  `failure_limit` rolls back, `approve` goes on (the human takes the step), `abort` rolls back,
  and an analysis still undecided at `max_wait` rolls back ("inconclusive: still undecided
  after max_wait ...").
- A `pause: approval` hold keeps analysing until approved; approval closes it like a timed pause.
- The metrics backend failing more than `consecutive_error_limit` analyses in a row restores the
  flag with outcome "error" (exit 3), its reason starting "metrics backend error": an outage is
  not a verdict on the canary. A failed SLO rolls back with reason "SLO failed: ...".
- A `chaos` step plays a ChaosScenario at the current weight (after that weight's hold has
  passed). A violated hypothesis rolls back ("chaos: ..."); a held one moves on, and the analysis
  window restarts, so the errors the faults caused are not held against the canary afterwards.
  A resume in the middle of a scenario plays it again from the start (its faults were removed,
  or expired by their TTL).
- A `shadow` step (before any weight) turns the shadow flag to its percent and judges the
  candidate's mirrored traffic with the step's own SLOs and a ledger of its own (`shadow_ledger`),
  an analysis every interval. A failed SLO stops the run ("stopped in shadow: ...", exit 1): the
  live flag never moved. The step ends on a passing analysis once `until` is over (at the first
  one for `until: decided`) on which every check against the baseline has its estimate within
  the bound, not merely no evidence against the candidate; still undecided at `max`, the run
  stops ("stopped in shadow:
  undecided ..."). Ending, the shadow flag is put back (`EndShadow`) before the first weight.
  A resume in a shadow step starts it again, with a fresh ledger.
- After the last hold passes: promote, or with `finish: keep` end promoted at the last weight.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from canaryctl.analysis import Outcome, Verdict
from canaryctl.controller.phases import Phase
from canaryctl.runbook.rollout import RolloutSpec

__all__ = [
    "AbortRequested",
    "Action",
    "Analyze",
    "Analyzed",
    "Approved",
    "ChaosItem",
    "ChaosPlayed",
    "Decision",
    "EndShadow",
    "Event",
    "Finish",
    "Hold",
    "MetricsFailed",
    "PlanItem",
    "Promote",
    "Promoted",
    "Resumed",
    "Rollback",
    "RolledBack",
    "RolloutState",
    "RunChaos",
    "SetShadow",
    "SetWeight",
    "ShadowEnded",
    "ShadowItem",
    "ShadowSet",
    "Wait",
    "WeightItem",
    "WeightSet",
    "plan",
    "tick",
]


# -- the plan ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WeightItem:
    """Move the canary to `weight` percent; `step` is its index in the runbook's steps."""

    weight: float
    step: int

    def describe(self) -> str:
        return f"set_weight {self.weight:g}%"


@dataclass(frozen=True)
class Hold:
    """Stay at the current weight; `seconds` None means until approved, `step` None is implicit."""

    seconds: float | None
    step: int | None

    def describe(self) -> str:
        if self.seconds is None:
            return "pause until approved"
        if self.step is None:
            return "hold for one analysis"
        return f"pause {self.seconds:g}s"


@dataclass(frozen=True)
class ChaosItem:
    """Play the ChaosScenario at `scenario` (a path) against the canary at the current weight."""

    scenario: str
    step: int

    def describe(self) -> str:
        return f"chaos {self.scenario.rsplit('/', 1)[-1]}"


@dataclass(frozen=True)
class ShadowItem:
    """Mirror `percent`% of requests to the candidate; at least `until` seconds (0: until the
    evidence passes), at most `max` seconds; `step` is its index in the runbook's steps."""

    percent: float
    until: float
    max: float
    step: int

    def describe(self) -> str:
        until = "decided" if self.until == 0 else f"{self.until:g}s"
        return f"shadow {self.percent:g}% until {until} (max {self.max:g}s)"


PlanItem = WeightItem | Hold | ChaosItem | ShadowItem


def plan(spec: RolloutSpec) -> tuple[PlanItem, ...]:
    """The runbook's steps, with an implicit hold after any weight that has no pause of its own."""
    items: list[PlanItem] = []
    for index, step in enumerate(spec.steps):
        if step.shadow is not None:
            until = 0.0 if step.shadow.until == "decided" else float(step.shadow.until)
            items.append(ShadowItem(step.shadow.percent, until, step.shadow.max, index))
        elif step.set_weight is not None or step.chaos is not None:
            if items and isinstance(items[-1], WeightItem):
                items.append(Hold(0.0, None))
            if step.chaos is not None:
                items.append(ChaosItem(str(step.chaos), index))
            else:
                items.append(WeightItem(step.set_weight, index))
        else:
            assert step.pause is not None  # a validated step is one of the two
            seconds = None if step.pause == "approval" else float(step.pause)
            items.append(Hold(seconds, index))
    if isinstance(items[-1], WeightItem):
        items.append(Hold(0.0, None))
    return tuple(items)


# -- state ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RolloutState:
    """Everything the tick needs to decide, stored with the run so another process can resume.

    `item` indexes `plan(spec)`. `outcome` and `reason` are set once a rollback or promotion has
    been decided, before it is carried out. `ledger` is what the sequential analysis accumulated
    over the run (see canaryctl.analysis.assess); it outlives steps and resumes.
    In a shadow step `shadow_start` is when the shadow flag moved (None: not yet), `shadow_max`
    when the step gives up, `shadow_ending` that it passed and the shadow flag goes back;
    `shadow_ledger` is the shadow analyses' own ledger. `undecided_until` is set while a step
    undecided past `inconclusive_limit` waits for a human (on_inconclusive: pause): when it
    rolls back if nothing decides first.
    """

    phase: Phase = Phase.PENDING
    item: int = 0
    weight: float = 0.0
    window_start: float | None = None
    hold_ends: float | None = None
    next_analysis: float | None = None
    closing: bool = False
    failures: int = 0
    extensions: int = 0
    metrics_errors: int = 0
    outcome: str | None = None
    reason: str = ""
    ledger: dict[str, Any] = field(default_factory=dict)
    shadow_start: float | None = None
    shadow_max: float | None = None
    shadow_ending: bool = False
    shadow_ledger: dict[str, Any] = field(default_factory=dict)
    undecided_until: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "phase": self.phase.value}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RolloutState:
        return cls(**{**data, "phase": Phase(data["phase"])})


# -- events: what happened -----------------------------------------------------------------------


@dataclass(frozen=True)
class WeightSet:
    """The flag now serves the planned weight; the analysis window starts `at`."""

    at: float


@dataclass(frozen=True)
class Analyzed:
    """The analysis' verdict, and the sequential ledger it leaves (None: unchanged)."""

    verdict: Verdict
    ledger: dict[str, Any] | None = None


@dataclass(frozen=True)
class MetricsFailed:
    reason: str


@dataclass(frozen=True)
class Approved:
    by: str


@dataclass(frozen=True)
class AbortRequested:
    by: str


@dataclass(frozen=True)
class Promoted:
    pass


@dataclass(frozen=True)
class RolledBack:
    """The flag is back at its saved state (or was never moved)."""


@dataclass(frozen=True)
class ChaosPlayed:
    """The scenario ended (`held` or not) `at`; faults are already removed."""

    held: bool
    reason: str
    at: float


@dataclass(frozen=True)
class ShadowSet:
    """The shadow flag now mirrors the planned percent; the shadow window starts `at`."""

    at: float


@dataclass(frozen=True)
class ShadowEnded:
    """The shadow flag is back where it was."""


@dataclass(frozen=True)
class Resumed:
    """A new process took over; observations of the old one are lost, the window restarts `at`.
    The analysis the last driver had scheduled (the state's `next_analysis`) stays due: a run
    taken over after its driver died is judged at once, not an interval after the takeover, so
    the time a weight goes unjudged counts from the last analysis, not from the resume."""

    at: float


Event = (
    WeightSet
    | Analyzed
    | MetricsFailed
    | Approved
    | AbortRequested
    | Promoted
    | RolledBack
    | Resumed
    | ChaosPlayed
    | ShadowSet
    | ShadowEnded
)


# -- actions: what to do next --------------------------------------------------------------------


@dataclass(frozen=True)
class SetWeight:
    percent: float


@dataclass(frozen=True)
class Analyze:
    """Observe both variants since `since` and judge; `closing` analyses must pass to go on.
    `shadow`: the candidate's mirrored traffic, by the shadow step's SLOs."""

    since: float
    closing: bool
    shadow: bool = False


@dataclass(frozen=True)
class SetShadow:
    percent: float


@dataclass(frozen=True)
class EndShadow:
    pass


@dataclass(frozen=True)
class RunChaos:
    scenario: str


@dataclass(frozen=True)
class Wait:
    """Sleep until `until` (None: until a request arrives), watching for approve/abort."""

    until: float | None


@dataclass(frozen=True)
class Promote:
    pass


@dataclass(frozen=True)
class Rollback:
    """Put the flag back as saved; `outcome` is rolled_back, aborted or error."""

    outcome: str
    reason: str


@dataclass(frozen=True)
class Finish:
    outcome: str
    reason: str


Action = SetWeight | Analyze | Wait | Promote | Rollback | Finish | RunChaos | SetShadow | EndShadow


@dataclass(frozen=True)
class Decision:
    state: RolloutState
    action: Action


_FINAL_PHASE = {"rolled_back": Phase.ROLLED_BACK, "aborted": Phase.ABORTED, "error": Phase.FAILED}


# -- the tick ------------------------------------------------------------------------------------


def tick(spec: RolloutSpec, state: RolloutState, now: float, event: Event | None) -> Decision:
    """Decide the next action from the state and what just happened."""
    items = plan(spec)
    if state.phase.finished:
        return Decision(state, Finish(state.outcome or state.phase.value, state.reason))
    match event:
        case WeightSet(at=at):
            item = items[state.item]
            assert isinstance(item, WeightItem)
            return _advance(spec, items, replace(state, weight=item.weight, window_start=at), now)
        case ShadowSet(at=at) if state.phase is Phase.SHADOW:
            return _shadow_set(spec, items, state, at, now)
        case ShadowEnded() if state.phase is Phase.SHADOW:
            return _advance(spec, items, _shadow_off(state), now)
        case Analyzed(verdict=verdict, ledger=ledger) if state.phase is Phase.SHADOW:
            if ledger is not None:
                state = replace(state, shadow_ledger=ledger)
            return _shadow_analyzed(spec, state, now, verdict)
        case Resumed() if state.phase is Phase.SHADOW:
            return _enter(spec, items, _shadow_off(state), now)
        case Analyzed(verdict=verdict, ledger=ledger):
            if ledger is not None:
                state = replace(state, ledger=ledger)
            return _analyzed(spec, items, state, now, verdict)
        case MetricsFailed(reason=reason):
            errors = state.metrics_errors + 1
            limit = spec.analysis.consecutive_error_limit
            if errors > limit:
                return _rollback(
                    state,
                    "error",
                    f"metrics backend error, not an SLO verdict: {errors} analyses in a row "
                    f"could not read metrics (consecutive_error_limit {limit}): {reason}",
                )
            retry = replace(
                state, metrics_errors=errors, next_analysis=now + spec.analysis.interval
            )
            return _hold(spec, items, retry, now)
        case Approved() if state.phase is Phase.AWAITING_APPROVAL and state.undecided_until:
            return _advance(spec, items, state, now)  # the human takes the undecided step
        case Approved() if state.phase is Phase.AWAITING_APPROVAL:
            return _hold(spec, items, _close_approval(spec, state, now), now)
        case AbortRequested(by=by) if state.phase not in (Phase.PROMOTING, Phase.ROLLING_BACK):
            return _rollback(state, "aborted", f"aborted by {by}")
        case Promoted():
            done = replace(state, phase=Phase.PROMOTED, outcome="promoted")
            return Decision(done, Finish("promoted", state.reason))
        case RolledBack():
            outcome = state.outcome or "rolled_back"
            done = replace(state, phase=_FINAL_PHASE[outcome], outcome=outcome)
            return Decision(done, Finish(outcome, state.reason))
        case ChaosPlayed(held=True, at=at) if state.phase is Phase.CHAOS:
            fresh = replace(state, window_start=None if state.window_start is None else at)
            return _advance(spec, items, fresh, now)
        case ChaosPlayed(held=False, reason=reason) if state.phase is Phase.CHAOS:
            return _rollback(state, "rolled_back", f"chaos: {reason}")
        case Resumed() if state.phase in (Phase.PROMOTING, Phase.ROLLING_BACK):
            return _pending(spec, items, state, now)  # decided before the crash: finish it
        case Resumed(at=at) if state.undecided_until is not None:
            # Still waiting for a human: the pause and its deadline outlive the process.
            first = min(at + spec.analysis.interval, state.undecided_until)
            due = _due(first, state.next_analysis)
            return _hold(spec, items, replace(state, window_start=at, next_analysis=due), now)
        case Resumed(at=at) if isinstance(_current(items, state), Hold):
            fresh = replace(state, window_start=None if state.window_start is None else at)
            return _enter(spec, items, fresh, now, due=state.next_analysis)
    return _pending(spec, items, state, now)


def _current(items: tuple[PlanItem, ...], state: RolloutState) -> PlanItem | None:
    return items[state.item] if state.item < len(items) else None


def _pending(
    spec: RolloutSpec, items: tuple[PlanItem, ...], state: RolloutState, now: float
) -> Decision:
    """The action the state is waiting on, recomputed: what a tick without news returns."""
    match state.phase:
        case Phase.PENDING:
            return _enter(spec, items, state, now)
        case Phase.PROGRESSING:
            item = items[state.item]
            assert isinstance(item, WeightItem)
            return Decision(state, SetWeight(item.weight))
        case Phase.CHAOS:
            item = items[state.item]
            assert isinstance(item, ChaosItem)
            return Decision(state, RunChaos(item.scenario))
        case Phase.SHADOW if state.shadow_ending:
            return Decision(state, EndShadow())
        case Phase.SHADOW if state.shadow_start is None:
            item = items[state.item]
            assert isinstance(item, ShadowItem)
            return Decision(state, SetShadow(item.percent))
        case Phase.PROMOTING:
            return Decision(state, Promote())
        case Phase.ROLLING_BACK:
            return Decision(state, Rollback(state.outcome or "rolled_back", state.reason))
    return _hold(spec, items, state, now)


def _due(scheduled: float, last: float | None) -> float:
    """The first analysis after a resume: as the new driver schedules it, unless the one the
    last driver had scheduled (`last`) comes sooner."""
    return scheduled if last is None else min(scheduled, last)


def _enter(
    spec: RolloutSpec,
    items: tuple[PlanItem, ...],
    state: RolloutState,
    now: float,
    *,
    due: float | None = None,
) -> Decision:
    """Begin the current plan item; `due`: a resumed hold's analysis the last driver had
    scheduled (see Resumed)."""
    item = _current(items, state)
    if item is None:
        if spec.finish == "keep":  # the planned split is the end state: no write to 100%
            reason = f"kept the canary at {state.weight:g}% (finish: keep)"
            done = replace(state, phase=Phase.PROMOTED, outcome="promoted", reason=reason)
            return Decision(done, Finish("promoted", reason))
        return Decision(replace(state, phase=Phase.PROMOTING), Promote())
    if isinstance(item, WeightItem):
        return Decision(replace(state, phase=Phase.PROGRESSING), SetWeight(item.weight))
    if isinstance(item, ChaosItem):
        return Decision(replace(state, phase=Phase.CHAOS), RunChaos(item.scenario))
    if isinstance(item, ShadowItem):
        return Decision(replace(state, phase=Phase.SHADOW), SetShadow(item.percent))
    interval = spec.analysis.interval
    if item.seconds is None:
        phase, hold_ends = Phase.AWAITING_APPROVAL, None
    else:
        phase, hold_ends = Phase.PAUSED, now + item.seconds
        if state.window_start is not None:
            hold_ends = max(hold_ends, state.window_start + interval)
    held = replace(
        state,
        phase=phase,
        hold_ends=hold_ends,
        next_analysis=(
            None if state.window_start is None else _due(_next(now, interval, hold_ends), due)
        ),
        closing=False,
        extensions=0,
    )
    return _hold(spec, items, held, now)


def _next(now: float, interval: float, hold_ends: float | None) -> float:
    """One interval from now, but never past the end of the hold: the closing analysis is due."""
    at = now + interval
    if hold_ends is not None and now < hold_ends:
        at = min(at, hold_ends)
    return at


def _hold(
    spec: RolloutSpec, items: tuple[PlanItem, ...], state: RolloutState, now: float
) -> Decision:
    if state.phase is Phase.SHADOW:
        return _shadow_hold(state, now)
    if state.window_start is None:
        # Before the first weight there is no canary traffic to judge: a pause is just a wait.
        if state.hold_ends is not None and now >= state.hold_ends:
            return _advance(spec, items, state, now)
        return Decision(state, Wait(state.hold_ends))
    assert state.next_analysis is not None  # every hold with a window schedules its analyses
    if now >= state.next_analysis:
        closing = state.hold_ends is not None and now >= state.hold_ends
        return Decision(replace(state, closing=closing), Analyze(state.window_start, closing))
    return Decision(state, Wait(state.next_analysis))


def _close_approval(spec: RolloutSpec, state: RolloutState, now: float) -> RolloutState:
    """Approval ends the hold now, though never before one interval of data at this weight."""
    if state.window_start is None:
        return replace(state, phase=Phase.PAUSED, hold_ends=now)
    hold_ends = max(now, state.window_start + spec.analysis.interval)
    assert state.next_analysis is not None
    return replace(
        state,
        phase=Phase.PAUSED,
        hold_ends=hold_ends,
        next_analysis=min(state.next_analysis, hold_ends),
    )


def _advance(
    spec: RolloutSpec, items: tuple[PlanItem, ...], state: RolloutState, now: float
) -> Decision:
    if state.undecided_until is not None:  # decided at last: the pause and its reason end
        state = replace(state, undecided_until=None, reason="")
    moved = replace(
        state, item=state.item + 1, hold_ends=None, next_analysis=None, closing=False, extensions=0
    )
    return _enter(spec, items, moved, now)


def _analyzed(
    spec: RolloutSpec,
    items: tuple[PlanItem, ...],
    state: RolloutState,
    now: float,
    verdict: Verdict,
) -> Decision:
    analysis = spec.analysis
    state = replace(state, metrics_errors=0)
    if verdict.outcome is Outcome.FAIL:
        state = replace(state, failures=state.failures + 1)
        if state.failures > analysis.failure_limit:
            return _rollback(state, "rolled_back", f"SLO failed: {verdict.reason}")
    if not state.closing:
        scheduled = replace(state, next_analysis=_next(now, analysis.interval, state.hold_ends))
        return _hold(spec, items, scheduled, now)
    if verdict.outcome is Outcome.PASS and not verdict.not_shown_within:
        return _advance(spec, items, state, now)
    if state.undecided_until is not None:
        if now >= state.undecided_until:
            return _rollback(
                state,
                "rolled_back",
                f"inconclusive: still undecided after max_wait ({analysis.pause_limit:g}s) at "
                f"{state.weight:g}%, neither approved nor aborted ({_undecided(verdict)})",
            )
        waiting = replace(state, next_analysis=min(now + analysis.interval, state.undecided_until))
        return Decision(waiting, Wait(waiting.next_analysis))
    if verdict.outcome is not Outcome.FAIL:
        state = replace(state, extensions=state.extensions + 1)
        if state.extensions > analysis.inconclusive_limit:
            if analysis.on_inconclusive == "pause":
                return _pause_undecided(spec, state, now, verdict)
            return _rollback(state, "rolled_back", f"inconclusive: {_undecided(verdict)}")
    extended_to = now + analysis.interval
    extended = replace(state, hold_ends=extended_to, next_analysis=extended_to, closing=False)
    return _hold(spec, items, extended, now)


def _pause_undecided(
    spec: RolloutSpec, state: RolloutState, now: float, verdict: Verdict
) -> Decision:
    """Hold the weight and wait for a human (or a decisive analysis) until `max_wait`: a
    canary that the traffic could not judge in time is not thereby a bad one. The hold is
    over already (`hold_ends` passed), so every analysis from now on is a closing one."""
    analysis = spec.analysis
    until = now + analysis.pause_limit
    reason = (
        f"undecided at {state.weight:g}% after {analysis.inconclusive_limit} extensions "
        f"({_undecided(verdict)}); approve to go on, abort to roll back; rolls back after "
        f"max_wait ({analysis.pause_limit:g}s) unless an analysis decides first"
    )
    paused = replace(
        state,
        phase=Phase.AWAITING_APPROVAL,
        undecided_until=until,
        reason=reason,
        next_analysis=min(now + analysis.interval, until),
    )
    return Decision(paused, Wait(paused.next_analysis))


def _undecided(verdict: Verdict) -> str:
    """Why a closing analysis did not let the step end, in words (never empty)."""
    if verdict.outcome is Outcome.PASS:
        slos = ", ".join(c.slo for c in verdict.not_shown_within)
        return f"not shown within the bound: the estimate is beyond the bound of {slos}"
    if verdict.outcome is Outcome.FAIL:
        return f"a tolerated failure: {verdict.reason}"
    return f"not enough data ({verdict.reason or 'no check could be judged'})"


# -- the shadow step ------------------------------------------------------------------------------


def _shadow_set(
    spec: RolloutSpec, items: tuple[PlanItem, ...], state: RolloutState, at: float, now: float
) -> Decision:
    """The shadow window starts: the first analysis one interval on, the step's end `until`
    later (never before that first analysis) and its limit `max` later."""
    item = items[state.item]
    assert isinstance(item, ShadowItem)
    interval = spec.analysis.interval
    started = replace(
        state,
        shadow_start=at,
        shadow_max=at + item.max,
        shadow_ledger={},
        hold_ends=at + item.until,
        next_analysis=min(at + interval, at + item.max),
        closing=False,
    )
    return _shadow_hold(started, now)


def _shadow_hold(state: RolloutState, now: float) -> Decision:
    assert state.shadow_start is not None and state.next_analysis is not None
    if now >= state.next_analysis:
        closing = state.hold_ends is not None and now >= state.hold_ends
        return Decision(replace(state, closing=closing), Analyze(state.shadow_start, closing, True))
    return Decision(state, Wait(state.next_analysis))


def _shadow_analyzed(
    spec: RolloutSpec, state: RolloutState, now: float, verdict: Verdict
) -> Decision:
    """A failure stops the run (past `failure_limit`); a pass once `until` is over ends the
    step, if every check against the baseline has its estimate within the bound (a pass alone
    says only that nothing shows the candidate worse yet: against a baseline of few errors, one
    failing half its calls can go long without that evidence); at `max`, anything short of that
    stops it."""
    analysis = spec.analysis
    state = replace(state, metrics_errors=0)
    if verdict.outcome is Outcome.FAIL:
        state = replace(state, failures=state.failures + 1)
        if state.failures > analysis.failure_limit:
            return _rollback(
                state, "rolled_back", f"stopped in shadow: SLO failed: {verdict.reason}"
            )
    unshown = verdict.not_shown_within
    if verdict.outcome is Outcome.PASS and state.closing and not unshown:
        return Decision(replace(state, shadow_ending=True), EndShadow())
    assert state.shadow_max is not None
    if now >= state.shadow_max:
        undecided = verdict.reason or "no analysis passed"
        if verdict.outcome is Outcome.PASS and unshown:
            slos = ", ".join(c.slo for c in unshown)
            undecided = f"the estimate is beyond the bound of {slos}"
        return _rollback(
            state,
            "rolled_back",
            f"stopped in shadow: undecided at the step's max ({undecided})",
        )
    at = min(now + analysis.interval, state.shadow_max)
    return _shadow_hold(replace(state, next_analysis=at, closing=False), now)


def _shadow_off(state: RolloutState) -> RolloutState:
    return replace(
        state,
        shadow_start=None,
        shadow_max=None,
        shadow_ending=False,
        hold_ends=None,
        next_analysis=None,
        closing=False,
    )


def _rollback(state: RolloutState, outcome: str, reason: str) -> Decision:
    decided = replace(state, phase=Phase.ROLLING_BACK, outcome=outcome, reason=reason)
    return Decision(decided, Rollback(outcome, reason))
