"""`flags show`: look at a flag the way its SDK will read it, before a rollout moves it.

Two ways in. A flag file and a KEY: LaunchDarkly's file data source or flagd's flag definitions
(told apart by the flag's entry: flagd's has `variants`), shown with what is matched before the
default rule. Or a runbook (Rollout, Guard, Experiment): the flag its `flag:` section names,
whatever the provider (file, flagd, LaunchDarkly, Split), read through the flag store a run
would use, so what is shown is what the run would see.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click

from canaryctl.cli.main import output_option, wants_json
from canaryctl.errors import CanaryError, InvalidInput

__all__ = ["flags"]

_DOCUMENT_SUFFIXES = (".yaml", ".yml")


@click.group()
def flags() -> None:
    """Inspect routing flags."""


@dataclass
class _Shown:
    """One flag as `show` prints it; a field left None is one the source does not have."""

    key: str
    version: int
    weights: list[dict[str, Any]]
    """Per variation: `value` (what the gateway serves and labels), `percent` of the default
    rule, and for flagd the variant's key as `variation`."""
    format: str | None = None
    provider: str | None = None
    on: bool | None = None
    rules: int | None = None
    targeted_keys: int | None = None
    default_rule: str | None = None
    variations: list[Any] = field(default_factory=list)
    baseline: str | None = None
    canary: str | None = None
    rule: str | None = None
    """The rule a runbook moves (`rule: tier=free`) when not the default rule."""


def _label(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


@flags.command()
@click.argument("source", type=click.Path(dir_okay=False))
@click.argument("key", required=False)
@output_option
def show(source: str, key: str | None, output: str | None) -> None:
    """The version and default-rule split of a flag: flag KEY in a flag file SOURCE
    (LaunchDarkly's file format or flagd's), or the flag a runbook SOURCE moves (any provider)."""
    if source.endswith(_DOCUMENT_SUFFIXES):
        shown = _from_runbook(source, key)
        where = "file" if shown.provider in ("file", "flagd") else "source"
    else:
        if key is None:
            raise InvalidInput(f"{source}: a flag file needs the flag's KEY: flags show FILE KEY")
        shown = _from_file(source, key)
        where = "file"
    if wants_json(output):
        record = {where: source, **{k: v for k, v in asdict(shown).items() if v is not None}}
        click.echo(json.dumps(record))
        return
    _print(source, shown)


def _from_file(path: str, key: str) -> _Shown:
    if _is_flagd(path, key):
        return _flagd_file(path, key)
    from canaryctl.flags.file import default_rule_weights, read_flag

    _, flag = read_flag(path, key)
    variations = flag.get("variations") or []
    weights = default_rule_weights(flag)
    return _Shown(
        key=key,
        format="file",
        version=flag.get("version", 1),
        on=flag.get("on") is True,
        variations=variations,
        # Rules and individual targets are evaluated first: the default rule gets what is left.
        rules=len(flag.get("rules") or []),
        targeted_keys=sum(len(t.get("values") or []) for t in flag.get("targets") or []),
        default_rule="rollout" if "rollout" in (flag.get("fallthrough") or {}) else "variation",
        weights=[
            {"variation": i, "value": v, "percent": weights.get(i, 0.0)}
            for i, v in enumerate(variations)
        ],
    )


def _is_flagd(path: str, key: str) -> bool:
    """Whether the file looks like flagd's definitions; anything unreadable goes to the
    LaunchDarkly reader, whose errors name the file and the problem."""
    from canaryctl import fastjson
    from canaryctl.flags.jsonfile import read_exact

    try:  # read as the stores read: a FIFO, a device or a huge file is refused, not waited on
        entry = fastjson.loads(read_exact(Path(path)))["flags"][key]
    except (CanaryError, ValueError, TypeError, KeyError):
        return False
    return isinstance(entry, dict) and "variants" in entry and "variations" not in entry


def _flagd_file(path: str, key: str) -> _Shown:
    from canaryctl.flags.flagd import VERSION_KEY, default_rule_kind, fractional_weights, read_flag

    flag = read_flag(path, key)
    weights = fractional_weights(path, key, flag)
    depth, rule = default_rule_kind(flag)
    variants: dict[str, Any] = flag["variants"]
    return _Shown(
        key=key,
        format="flagd",
        version=int((flag.get("metadata") or {}).get(VERSION_KEY, 0)),
        on=flag["state"] == "ENABLED",
        variations=list(variants),
        rules=depth,
        targeted_keys=0,
        default_rule=rule,
        weights=[
            {"variation": name, "value": value, "percent": weights.get(name, 0.0)}
            for name, value in variants.items()
        ],
    )


def _from_runbook(path: str, key: str | None) -> _Shown:
    from canaryctl.flags.base import SplitStore
    from canaryctl.flags.factory import flag_store_for, split_store_for
    from canaryctl.runbook import Experiment, load_document

    doc: Any = load_document(path)
    flag = getattr(doc.spec, "flag", None)
    if flag is None:
        raise InvalidInput(
            f"{path}: a {doc.kind} names no flag to show; give a Rollout, Guard or Experiment, "
            "or a flag file and its KEY"
        )
    if key is not None and key != flag.key:
        raise InvalidInput(f"{path}: the runbook moves flag '{flag.key}', not '{key}'")
    if isinstance(doc, Experiment):
        named = [v.value for v in doc.spec.variations]
        store: Any = split_store_for(flag, named[0], named[1])
    else:
        named = [flag.baseline, flag.canary]
        store = flag_store_for(flag)
    assert isinstance(store, SplitStore)  # every provider reads its weights per variation
    snapshot = store.snapshot()
    values = list(store.values(snapshot, named))
    weights = store.weights(snapshot)
    order = values + [v for v in weights if v not in values]
    baseline, canary = (None, None) if isinstance(doc, Experiment) else store.variants(snapshot)
    return _Shown(
        key=flag.key,
        provider=flag.provider,
        version=snapshot.version,
        variations=values,
        baseline=baseline,
        canary=canary,
        rule=getattr(flag, "rule", None),
        weights=[{"value": v, "percent": weights.get(v, 0.0)} for v in order],
    )


def _print(source: str, shown: _Shown) -> None:
    from rich.console import Console
    from rich.table import Table

    kind = f" ({shown.format or shown.provider})" if shown.format != "file" else ""
    state = ""
    if shown.on is not None:
        state = ", on" if shown.on else ", OFF (everyone gets the off variation)"
    click.echo(f"{shown.key} in {source}{kind}: version {shown.version}{state}")
    if shown.rules or shown.targeted_keys:
        click.echo(
            f"{shown.rules} rule(s) and {shown.targeted_keys} targeted key(s) match before "
            "the default rule"
        )
    title = f"rule {shown.rule}" if shown.rule else "default rule"
    title += f" ({shown.default_rule})" if shown.default_rule else ""
    table = Table(title=title, title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("variation")
    table.add_column("weight %", justify="right")
    roles = {shown.baseline: "baseline", shown.canary: "canary"}
    for i, weight in enumerate(shown.weights):
        label = _label(weight["value"])
        if shown.format == "flagd":
            label = f"{weight['variation']} = {label}"
        role = roles.get(weight["value"])
        table.add_row(str(i), label + (f" ({role})" if role else ""), f"{weight['percent']:g}")
    Console(highlight=False).print(table)
