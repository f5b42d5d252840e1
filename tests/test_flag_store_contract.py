"""The flag store contract (canaryctl/flags/base.py), once, over every store against its real
backend: the LaunchDarkly flag file, a LaunchDarkly REST server and a Split Admin API server
(tests/ld_server.py, tests/split_server.py, over loopback HTTP) and a flagd flag file.

What each backend serves is read from the backend itself (the file, the server's state), never
from the store under test. What only one backend has (its wire format, its SDK's evaluation, its
rules, its refusals) is tested in that backend's own file; so are the controller runs on it.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from canaryctl.clock import FakeClock
from canaryctl.controller import RolloutRunner, StateStore
from canaryctl.errors import (
    ClaimFenced,
    FlagBackendError,
    FlagClaimed,
    FlagConflict,
    FlagMismatch,
)
from canaryctl.flags import FlagClaim, LaunchDarklyFlagStore, Split, SplitFlagStore
from canaryctl.flags.base import FlagStore, SplitStore
from canaryctl.flags.factory import RolloutFlag
from canaryctl.flags.file import FileFlagStore
from canaryctl.flags.flagd import FlagdFlagStore
from canaryctl.metrics import Observation, ScriptedMetricsSource
from canaryctl.runbook.rollout import LaunchDarklyFlagSpec, SplitFlagSpec
from tests import ld_server, split_server
from tests.processes import dead_pid
from tests.test_controller import T0, make_rollout, steady

KEY = "support-bot-model"
VALUES = ("gpt-4-turbo", "gpt-4o-mini", "mixtral-8x7b")
"""Baseline, canary, and a third variation a person may serve."""
SECRET = "api-SECRET-do-not-print"


@dataclass
class Backend:
    """One store's backend, as the contract needs to see it."""

    store: Callable[..., SplitStore]
    """A new store on the flag (keyword overrides go to its constructor)."""
    served: Callable[[], dict[str, float]]
    """Percent of default traffic per variation value, as the backend holds it now."""
    human_edit: Callable[[], None]
    """A person serves everyone the third variation, behind the store's back."""
    held: Callable[[], Any]
    """Everything the backend keeps for the flag's targeting: equal means nothing was written."""
    server: ld_server.LDServer | split_server.SplitServer | None = None
    write: str = ""
    """The HTTP method a targeting write uses."""
    rate_limited: dict[str, str] = field(default_factory=dict)
    """A 429's headers asking for a one-second wait."""
    secret_option: str = ""
    """The constructor's argument that takes the secret."""
    refuse_writes: Callable[[], None] = lambda: None
    """The backend now refuses every targeting write (an approval is required)."""
    refusals: dict[str, tuple[type[Exception], str]] = field(default_factory=dict)
    """What each refusal (a wrong secret, an approval required, no such flag) is raised as,
    and the cause its message gives."""
    flag_spec: Callable[[], RolloutFlag] | None = None
    """The runbook's `flag:` naming this flag, validated."""
    comments: Callable[[], list[str]] = list
    """The comment of every targeting write the backend accepted."""
    claims: Callable[[], list[str]] = list
    """The claims on the flag, as the backend holds them."""
    plant_claim: Callable[[FlagClaim], None] = lambda claim: None
    """Leave `claim` on the flag, as a run that died would have."""
    targeting: Callable[[], Any] = lambda: None
    """What the flag serves, as the backend holds it, without its version."""

    def faults(self, *faults: ld_server.Fault | split_server.Fault) -> None:
        assert self.server is not None
        self.server.faults = list(faults)

    def fault(self, status: int, **options: Any) -> ld_server.Fault | split_server.Fault:
        kind = (
            ld_server.Fault if isinstance(self.server, ld_server.LDServer) else split_server.Fault
        )
        return kind(status, method=self.write, **options)

    def reads(self) -> int:
        assert self.server is not None
        return sum(1 for r in self.server.requests if r[0] == "GET")

    def writes(self) -> int:
        assert self.server is not None
        return sum(1 for r in self.server.requests if r[0] == self.write)


def _shares(weights: dict[str, float]) -> dict[str, float]:
    """Percents, without the variations served to nobody."""
    total = sum(weights.values())
    return {value: 100.0 * w / total for value, w in weights.items() if w}


def _ld_served(target: dict[str, Any], values: list[str]) -> dict[str, float]:
    """A LaunchDarkly fallthrough (file or REST shape) as percent per value."""
    if "variation" in target:
        return {values[target["variation"]]: 100.0}
    weights: dict[str, float] = {}
    for entry in target["rollout"]["variations"]:
        value = values[entry["variation"]]
        weights[value] = weights.get(value, 0.0) + entry["weight"]
    return _shares(weights)


def _file(tmp_path: Path, stack: ExitStack) -> Backend:
    path = tmp_path / "flags.json"
    flag = {
        "key": KEY,
        "version": 3,
        "on": True,
        "variations": list(VALUES),
        "fallthrough": {"variation": 0},
        "offVariation": 0,
        "salt": "a1b2c3",
    }
    path.write_text(json.dumps({"flags": {KEY: flag}, "segments": {}}, indent=4) + "\n")

    def entry() -> dict[str, Any]:
        return dict(json.loads(path.read_text())["flags"][KEY])

    def human_edit() -> None:
        doc = json.loads(path.read_text())
        doc["flags"][KEY].update(version=entry()["version"] + 1, fallthrough={"variation": 2})
        path.write_text(json.dumps(doc, indent=4) + "\n")

    return Backend(
        store=lambda **o: FileFlagStore(path, KEY, VALUES[0], VALUES[1], **o),
        served=lambda: _ld_served(entry()["fallthrough"], entry()["variations"]),
        human_edit=human_edit,
        held=path.read_text,
    )


def _flagd(tmp_path: Path, stack: ExitStack) -> Backend:
    path = tmp_path / "flags.flagd.json"
    variants = dict(zip(("turbo", "mini", "mixtral"), VALUES, strict=True))
    flag = {
        "state": "ENABLED",
        "variants": variants,
        "defaultVariant": "turbo",
        "metadata": {"canaryctlVersion": 3},
    }
    path.write_text(json.dumps({"flags": {KEY: flag}}, indent=2) + "\n")

    def entry() -> dict[str, Any]:
        return dict(json.loads(path.read_text())["flags"][KEY])

    def served() -> dict[str, float]:
        fractional = (entry().get("targeting") or {}).get("fractional")
        if not fractional:
            return {variants[entry()["defaultVariant"]]: 100.0}
        return _shares({variants[name]: weight for name, weight in fractional})

    def human_edit() -> None:
        doc = json.loads(path.read_text())
        version = doc["flags"][KEY]["metadata"]["canaryctlVersion"] + 1
        doc["flags"][KEY] = {**flag, "defaultVariant": "mixtral"}
        doc["flags"][KEY]["metadata"] = {"canaryctlVersion": version}
        path.write_text(json.dumps(doc, indent=2) + "\n")

    return Backend(
        store=lambda **o: FlagdFlagStore(path, KEY, "turbo", "mini", **o),
        served=served,
        human_edit=human_edit,
        held=path.read_text,
    )


def _launchdarkly(tmp_path: Path, stack: ExitStack) -> Backend:
    project, env = "default", "production"
    server = ld_server.LDServer(SECRET)
    variations = [(f"id-{i}", value, value.upper()) for i, value in enumerate(VALUES)]
    server.add(
        project, ld_server.make_flag(KEY, variations, {env: {"fallthrough": {"variation": 0}}})
    )
    stack.enter_context(ld_server.serve(server))

    def store(**overrides: Any) -> LaunchDarklyFlagStore:
        options = {"project": project, "environment": env, "key": KEY, "token": SECRET}
        options |= {"baseline": VALUES[0], "canary": VALUES[1], "sleep": lambda _: None}
        return LaunchDarklyFlagStore(base_url=server.base_url, **options | overrides)

    runbook = {"key": KEY, "baseline": VALUES[0], "canary": VALUES[1], "base_url": server.base_url}

    def comments() -> list[str]:
        bodies = [json.loads(r[3]) for r in server.requests if r[0] == "PATCH"]
        targeting = [b for b in bodies if {"environmentKey", "patch"} & set(b)]
        return [b["comment"] for b in targeting]

    def claims() -> list[str]:
        held = server.flags[(project, KEY)].get("customProperties") or {}
        return list(held.get(f"canaryctl-claim-{env}", {}).get("value", []))

    def plant_claim(claim: FlagClaim) -> None:
        prop = {"name": "canaryctl claim", "value": [claim.to_json()]}
        server.flags[(project, KEY)]["customProperties"] = {f"canaryctl-claim-{env}": prop}

    return Backend(
        store=store,
        served=lambda: _ld_served(server.env(project, KEY, env)["fallthrough"], list(VALUES)),
        human_edit=lambda: server.edit(project, KEY, env, fallthrough={"variation": 2}),
        held=lambda: copy.deepcopy(server.env(project, KEY, env)),
        server=server,
        write="PATCH",
        rate_limited={"Retry-After": "1"},
        secret_option="token",
        refuse_writes=lambda: setattr(server, "approval_required", True),
        refusals={
            "wrong secret": (FlagBackendError, "HTTP 401: the access token was refused"),
            "approval": (FlagBackendError, "HTTP 405: LaunchDarkly requires an approval"),
            "no such flag": (FlagMismatch, "no such flag or project"),
        },
        flag_spec=lambda: LaunchDarklyFlagSpec.model_validate(
            {"provider": "launchdarkly", "project": project, "environment": env, **runbook}
        ),
        comments=comments,
        claims=claims,
        plant_claim=plant_claim,
        targeting=lambda: {
            k: v for k, v in server.env(project, KEY, env).items() if k != "_version"
        },
    )


def _split(tmp_path: Path, stack: ExitStack) -> Backend:
    ws, env = "ws-1234", "production"
    server = split_server.SplitServer(SECRET)
    definition = split_server.make_definition(list(VALUES), [(VALUES[0], 100)])
    server.add(ws, KEY, {env: definition}, description="Which model the bot answers with.")
    stack.enter_context(split_server.serve(server))

    def store(**overrides: Any) -> SplitFlagStore:
        options = {"workspace": ws, "environment": env, "key": KEY, "api_key": SECRET}
        options |= {"baseline": VALUES[0], "canary": VALUES[1], "sleep": lambda _: None}
        return SplitFlagStore(base_url=server.base_url, **options | overrides)

    prefix = f"canaryctl-claim[{env}]: "
    runbook = {"key": KEY, "baseline": VALUES[0], "canary": VALUES[1], "base_url": server.base_url}

    def claims() -> list[str]:
        lines = server.flags[(ws, KEY)]["description"].splitlines()
        return [line[len(prefix) :] for line in lines if line.startswith(prefix)]

    def plant_claim(claim: FlagClaim) -> None:
        server.flags[(ws, KEY)]["description"] += f"\n{prefix}{claim.to_json()}"

    def served() -> dict[str, float]:
        buckets = server.definition(ws, KEY, env)["defaultRule"]
        return _shares({b["treatment"]: b["size"] for b in buckets})

    return Backend(
        store=store,
        served=served,
        human_edit=lambda: server.edit(
            ws, KEY, env, defaultRule=[{"treatment": VALUES[2], "size": 100}]
        ),
        held=lambda: server.definition(ws, KEY, env),
        server=server,
        write="PUT",
        rate_limited={"X-RateLimit-Reset-Seconds-Org": "1"},
        secret_option="api_key",
        refuse_writes=lambda: setattr(server, "approvals_required", True),
        refusals={
            "wrong secret": (FlagBackendError, "HTTP 401: the Admin API key was refused"),
            "approval": (
                FlagBackendError,
                "HTTP 403: .*requires approvals.*Approvals are required",
            ),
            "no such flag": (FlagMismatch, "no such flag, workspace or environment"),
        },
        flag_spec=lambda: SplitFlagSpec.model_validate(
            {"provider": "split", "workspace": ws, "environment": env, **runbook}
        ),
        comments=lambda: [c for _, _, c, _ in server.history if c != "edited in the UI"],
        claims=claims,
        plant_claim=plant_claim,
        targeting=lambda: {
            k: v for k, v in server.definition(ws, KEY, env).items() if k != "lastUpdateTime"
        },
    )


BACKENDS = {"file": _file, "launchdarkly": _launchdarkly, "flagd": _flagd, "split": _split}
HTTP = ["launchdarkly", "split"]


@pytest.fixture(params=list(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    with ExitStack() as stack:
        yield BACKENDS[request.param](tmp_path, stack)


@pytest.fixture(params=HTTP)
def http_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    with ExitStack() as stack:
        yield BACKENDS[request.param](tmp_path, stack)


def test_a_step_a_promotion_and_a_restore_serve_what_they_say(backend: Backend) -> None:
    store = backend.store()
    before = backend.held()
    saved = store.snapshot()
    assert store.split(saved) == Split(baseline=100.0, canary=0.0)
    assert store.variants(saved) == VALUES[:2]

    step = store.set_canary_weight(10, expect_version=saved.version, comment="step 1: 10%")
    assert backend.served() == {VALUES[1]: 10.0, VALUES[0]: 90.0}
    assert store.split(step) == Split(baseline=90.0, canary=10.0)
    assert step.version > saved.version

    promoted = store.promote(expect_version=step.version, comment="promote")
    assert backend.served() == {VALUES[1]: 100.0}
    assert store.split(promoted) == Split(baseline=0.0, canary=100.0)

    restored = store.restore(saved, expect_version=promoted.version, comment="rollback")
    assert backend.served() == {VALUES[0]: 100.0}
    assert store.split(restored) == Split(baseline=100.0, canary=0.0)
    # The old targeting at a newer version: an SDK that took the promotion takes this too.
    assert restored.version > promoted.version
    assert store.snapshot().version == restored.version
    assert backend.held() != before  # the version moved...
    again = store.restore(saved, expect_version=restored.version, comment="again")
    assert store.split(again) == store.split(restored)  # ...and a restore can be repeated


def test_an_outside_edit_is_a_conflict_and_is_never_overwritten(backend: Backend) -> None:
    store = backend.store()
    saved = store.snapshot()
    step = store.set_canary_weight(10, expect_version=saved.version, comment="step 1")
    backend.human_edit()
    theirs = backend.held()
    with pytest.raises(FlagConflict, match="not overwriting"):
        store.set_canary_weight(25, expect_version=step.version, comment="step 2")
    with pytest.raises(FlagConflict):
        store.promote(expect_version=step.version, comment="promote")
    with pytest.raises(FlagConflict):
        store.restore(saved, expect_version=step.version, comment="rollback")
    assert backend.held() == theirs
    assert backend.served() == {VALUES[2]: 100.0}


def test_a_split_serves_each_variation_its_share_and_restores(backend: Backend) -> None:
    store = backend.store()
    saved = store.snapshot()
    shares = {VALUES[0]: 50.0, VALUES[1]: 30.0, VALUES[2]: 20.0}
    moved = store.set_split(shares, expect_version=saved.version, comment="experiment")
    assert backend.served() == shares
    assert store.weights(moved) == shares
    assert store.values(moved, VALUES) == VALUES
    alone = store.set_split({VALUES[2]: 100.0}, expect_version=moved.version, comment="winner")
    assert backend.served() == {VALUES[2]: 100.0}
    store.restore(saved, expect_version=alone.version, comment="end")
    assert backend.served() == {VALUES[0]: 100.0}


def _claim(token: str, *, pid: int, epoch: int = 0) -> FlagClaim:
    return FlagClaim(token, 7, "/elsewhere/state.db", socket.gethostname(), pid, 0.0, epoch=epoch)


def test_a_live_run_s_claim_is_refused_a_dead_one_s_taken_only_when_asked(
    backend: Backend,
) -> None:
    first, second = backend.store(), backend.store()
    live, other = _claim("live", pid=os.getpid()), _claim("other", pid=os.getpid())
    assert first.claim(live) is None
    assert first.claim(replace(live, run_id=8)) == live  # our own claim, taken again (a resume)
    with pytest.raises(FlagClaimed, match=r"claimed by run 8 .*still running"):
        second.claim(other, take_over=True)  # never from a live process
    second.release(other)  # not its claim: left in place
    with pytest.raises(FlagClaimed):
        second.claim(other)
    first.release(live)
    assert second.claim(other) is None  # released: free to take
    second.release(other)

    gone = _claim("gone", pid=dead_pid())
    assert backend.store().claim(gone) is None
    with pytest.raises(FlagClaimed, match=r"whose process is gone.*--break-claim"):
        backend.store().claim(other)
    assert backend.store().claim(other, take_over=True) == gone


def test_a_driver_whose_claim_was_taken_at_a_newer_epoch_writes_nothing(
    backend: Backend,
) -> None:
    """Fencing at the flag: the run's new driver claims at epoch 2; every write of the stalled
    driver (epoch 1) reads the claim first and is refused without touching the flag."""
    stale, newer = backend.store(), backend.store()
    stale.claim(_claim("run-7", pid=1, epoch=1))
    moved = stale.set_canary_weight(20, expect_version=stale.snapshot().version, comment="20%")
    assert newer.claim(_claim("run-7", pid=1, epoch=2)) == _claim("run-7", pid=1, epoch=1)
    written = backend.held()
    with pytest.raises(ClaimFenced, match="epoch 2 now"):
        stale.set_canary_weight(50, expect_version=moved.version, comment="stale 50%")
    with pytest.raises(ClaimFenced):
        stale.restore(moved, expect_version=moved.version, comment="stale rollback")
    with pytest.raises(ClaimFenced):
        stale.claim(_claim("run-7", pid=1, epoch=1))  # a claim never goes back an epoch
    stale.release(_claim("run-7", pid=1, epoch=1))  # the newer driver's claim: left alone
    assert backend.held() == written
    newer.set_canary_weight(50, expect_version=moved.version, comment="50%")  # it goes on
    assert backend.served() == {VALUES[1]: 50.0, VALUES[0]: 50.0}
    newer.release(_claim("run-7", pid=1, epoch=2))
    assert backend.store().claim(_claim("next", pid=1)) is None  # released


# -- the stores behind an admin API: retries ------------------------------------------------


def test_a_503_burst_is_survived_and_a_conflict_is_read_again(http_backend: Backend) -> None:
    sleeps: list[float] = []
    store = http_backend.store(sleep=sleeps.append)
    saved = store.snapshot()
    any_method = replace(http_backend.fault(503), method=None)
    http_backend.faults(*[any_method] * 3, http_backend.fault(409))
    step = store.set_canary_weight(10, expect_version=saved.version, comment="step 1")
    assert http_backend.served() == {VALUES[1]: 10.0, VALUES[0]: 90.0}
    assert store.split(step) == Split(baseline=90.0, canary=10.0)
    assert len(sleeps) == 4
    assert http_backend.reads() == 1 + 3 + 2  # snapshot, the burst, a read before each write


def test_a_rollback_outlasts_a_burst_a_forward_step_gives_up_on(http_backend: Backend) -> None:
    store = http_backend.store()
    saved = store.snapshot()
    step = store.set_canary_weight(10, expect_version=saved.version, comment="step 1")
    http_backend.faults(*[http_backend.fault(503)] * 8)
    with pytest.raises(FlagBackendError, match="failed after 5 attempts: 503"):
        store.set_canary_weight(25, expect_version=step.version, comment="step 2")
    assert http_backend.served() == {VALUES[1]: 10.0, VALUES[0]: 90.0}
    http_backend.faults(*[http_backend.fault(503)] * 8)
    store.restore(saved, expect_version=step.version, comment="rollback")
    assert http_backend.served() == {VALUES[0]: 100.0}


def test_a_write_whose_answer_was_lost_is_recognised_not_repeated(http_backend: Backend) -> None:
    store = http_backend.store()
    saved = store.snapshot()
    http_backend.faults(http_backend.fault(502, after=True))
    step = store.set_canary_weight(10, expect_version=saved.version, comment="step 1")
    assert step.version > saved.version
    assert store.split(step) == Split(baseline=90.0, canary=10.0)
    assert http_backend.writes() == 1


def test_a_human_edit_during_a_rate_limit_wait_is_not_overwritten(
    http_backend: Backend,
) -> None:
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        http_backend.human_edit()

    store = http_backend.store(sleep=sleep)
    saved = store.snapshot()
    http_backend.faults(http_backend.fault(429, headers=http_backend.rate_limited))
    with pytest.raises(FlagConflict):
        store.set_canary_weight(10, expect_version=saved.version, comment="step 1")
    assert http_backend.served() == {VALUES[2]: 100.0}
    assert http_backend.writes() == 1 and len(sleeps) == 1


@pytest.mark.parametrize("refusal", ["wrong secret", "approval", "no such flag"])
def test_refusals_name_the_cause_and_are_not_retried(http_backend: Backend, refusal: str) -> None:
    sleeps: list[float] = []
    overrides: dict[str, Any] = {
        "wrong secret": {http_backend.secret_option: SECRET + "-wrong"},
        "no such flag": {"key": "no-such-flag"},
    }.get(refusal, {})
    store = http_backend.store(sleep=sleeps.append, **overrides)
    error, cause = http_backend.refusals[refusal]
    if refusal == "approval":
        http_backend.refuse_writes()
        saved = store.snapshot()
        with pytest.raises(error, match=cause):
            store.set_canary_weight(10, expect_version=saved.version, comment="step 1")
    else:
        with pytest.raises(error, match=cause):
            store.snapshot()
    assert sleeps == []
    assert http_backend.writes() == (1 if refusal == "approval" else 0)
    assert http_backend.server is not None  # one try at each step:
    assert len(http_backend.server.requests) == (3 if refusal == "approval" else 1)


def test_the_secret_never_shows(http_backend: Backend, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    store = http_backend.store()
    messages = [repr(store), str(store)]
    saved = store.snapshot()
    http_backend.faults(
        http_backend.fault(503), http_backend.fault(429, headers=http_backend.rate_limited)
    )
    step = store.set_canary_weight(10, expect_version=saved.version, comment="step 1")
    http_backend.human_edit()
    for attempt in (
        lambda: store.promote(expect_version=step.version, comment="promote"),  # a conflict
        lambda: http_backend.store(key="nope").snapshot(),
        lambda: http_backend.store(canary="llama").snapshot(),
        lambda: http_backend.store(**{http_backend.secret_option: SECRET + "x"}).snapshot(),
    ):
        with pytest.raises(Exception) as caught:
            attempt()
        messages += [str(caught.value), repr(caught.value), repr(caught.value.__cause__)]
    http_backend.refuse_writes()
    fresh = store.snapshot()
    with pytest.raises(FlagBackendError) as refused:
        store.restore(saved, expect_version=fresh.version, comment="rollback")
    messages += [str(refused.value), saved.raw, step.raw, fresh.raw, caplog.text]
    assert "retrying in" in caplog.text  # the log was written, and holds no secret either
    assert all(SECRET not in m for m in messages)
    assert "SECRET" not in "".join(messages)


# -- the controller driving the stores behind an admin API ------------------------------------


def scripted_runner(
    flag: RolloutFlag, flags: FlagStore, state: Path, bad_from: float | None = None
) -> RolloutRunner:
    """The real controller on a fake clock and scripted metrics, moving `flag` through `flags`
    and journaling in `state`; from `bad_from` percent on, the canary fails 5% of requests."""
    rollout = make_rollout(hooks=False)
    rollout = rollout.model_copy(update={"spec": rollout.spec.model_copy(update={"flag": flag})})
    clock = FakeClock(T0)

    def script(since: float, now: float) -> Observation:
        canary = flags.split(flags.snapshot()).canary
        failing = bad_from is not None and canary >= bad_from
        return steady(0.05 if failing else 0.0)(since, now)

    return RolloutRunner(
        rollout,
        flags=flags,
        metrics=ScriptedMetricsSource(script, clock.now),
        store=StateStore(state / "state.db"),
        clock=clock,
        poll_interval=5.0,
    )


def _runner(backend: Backend, state: Path, bad_from: float | None = None) -> RolloutRunner:
    assert backend.flag_spec is not None
    return scripted_runner(backend.flag_spec(), backend.store(), state, bad_from)


def _steps(backend: Backend) -> list[str]:
    """The comments of the targeting writes, without the run's name before each."""
    return [comment.split(": ", 1)[1] for comment in backend.comments()]


def test_a_regression_rolls_the_flag_back_to_the_exact_prior_state(
    http_backend: Backend, tmp_path: Path
) -> None:
    before = http_backend.targeting()
    result = _runner(http_backend, tmp_path, bad_from=50).run()
    assert (result.outcome, result.exit_code) == ("rolled_back", 1)
    assert http_backend.targeting() == before
    assert _steps(http_backend) == ["canary to 10%", "canary to 50%", "restore"]
    run = f"canaryctl run {result.run_id} (support-bot): "
    assert all(comment.startswith(run) for comment in http_backend.comments())
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert VALUES[1].encode() in stored  # the snapshots are there...
    assert SECRET.encode() not in stored  # ...the secret is not
    assert http_backend.claims() == []  # released at the end


def test_an_outside_edit_mid_rollout_stops_the_run_with_exit_3(
    http_backend: Backend, tmp_path: Path
) -> None:
    runner = _runner(http_backend, tmp_path)
    runner.clock.call_at(T0 + 30, http_backend.human_edit)
    result = runner.run()
    assert (result.outcome, result.exit_code) == ("error", 3)
    assert "someone else changed it" in result.reason
    assert http_backend.served() == {VALUES[2]: 100.0}
    assert _steps(http_backend) == ["canary to 10%"]


def test_a_second_run_with_another_state_database_is_refused_by_the_claim(
    http_backend: Backend, tmp_path: Path
) -> None:
    first = _runner(http_backend, tmp_path, bad_from=50)
    (tmp_path / "other").mkdir()
    refused: list[str] = []

    def second_run() -> None:
        with pytest.raises(FlagClaimed) as caught:
            _runner(http_backend, tmp_path / "other").run()
        refused.append(str(caught.value))

    first.clock.call_at(T0 + 30, second_run)
    result = first.run()
    assert (result.outcome, result.exit_code) == ("rolled_back", 1)
    assert "claimed by run 1" in refused[0] and "still running" in refused[0]
    assert f"rollout abort 1 --state {(tmp_path / 'state.db').resolve()}" in refused[0]
    # The second run never wrote; the first restored its own prior targeting.
    assert _steps(http_backend) == ["canary to 10%", "canary to 50%", "restore"]
    assert http_backend.served() == {VALUES[0]: 100.0}


def test_a_claim_left_by_a_dead_run_is_refused_until_broken(
    http_backend: Backend, tmp_path: Path
) -> None:
    http_backend.plant_claim(_claim("x", pid=dead_pid()))
    with pytest.raises(FlagClaimed) as caught:
        _runner(http_backend, tmp_path).run()
    message = str(caught.value)
    assert "claimed by run 7" in message and "whose process is gone" in message
    assert "canaryctl rollout resume 7 --state /elsewhere/state.db" in message
    assert "--break-claim" in message
    assert _steps(http_backend) == []

    runner = _runner(http_backend, tmp_path)
    runner._break_claim = True
    assert runner.run().outcome == "promoted"
    assert http_backend.served() == {VALUES[1]: 100.0}
    assert http_backend.claims() == []
