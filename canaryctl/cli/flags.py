"""`flags show`: look at a flag file the way the SDK will read it, before a rollout moves it."""

from __future__ import annotations

import json
from typing import Any

import click

from canaryctl.cli.main import output_option, wants_json

__all__ = ["flags"]


@click.group()
def flags() -> None:
    """Inspect routing flags."""


def _label(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


@flags.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.argument("key")
@output_option
def show(file: str, key: str, output: str | None) -> None:
    """Version, on/off, variations and default-rule weights of flag KEY in a flag FILE."""
    from rich.console import Console
    from rich.table import Table

    from canaryctl.flags.file import default_rule_weights, read_flag

    _, flag = read_flag(file, key)
    variations = flag.get("variations") or []
    weights = default_rule_weights(flag)
    default_rule = "rollout" if "rollout" in (flag.get("fallthrough") or {}) else "variation"
    # Rules and individual targets are evaluated first: the default rule only gets what is left.
    rules = len(flag.get("rules") or [])
    targeted = sum(len(t.get("values") or []) for t in flag.get("targets") or [])
    if wants_json(output):
        record = {
            "file": file,
            "key": key,
            "version": flag.get("version", 1),
            "on": flag.get("on") is True,
            "variations": variations,
            "rules": rules,
            "targeted_keys": targeted,
            "default_rule": default_rule,
            "weights": [
                {"variation": i, "value": v, "percent": weights.get(i, 0.0)}
                for i, v in enumerate(variations)
            ],
        }
        click.echo(json.dumps(record))
        return
    state = "on" if flag.get("on") is True else "OFF (everyone gets the off variation)"
    click.echo(f"{key} in {file}: version {flag.get('version', 1)}, {state}")
    if rules or targeted:
        click.echo(f"{rules} rule(s) and {targeted} targeted key(s) match before the default rule")
    table = Table(title=f"default rule ({default_rule})", title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("variation")
    table.add_column("weight %", justify="right")
    for i, value in enumerate(variations):
        table.add_row(str(i), _label(value), f"{weights.get(i, 0.0):g}")
    Console(highlight=False).print(table)
