"""`validate` and `schema`: check documents before anything acts on them."""

from __future__ import annotations

import json

import click

from canaryctl.cli.main import output_option, wants_json
from canaryctl.errors import InvalidDocument, InvalidInput, Problem
from canaryctl.runbook.kinds import KINDS

# The loader (YAML, pydantic) and the metric profiles are imported when a command runs: `--help`
# lists the kinds from canaryctl.runbook.kinds alone.


@click.command()
@click.argument("files", nargs=-1, required=True)
@output_option
def validate(files: tuple[str, ...], output: str | None) -> None:
    """Validate documents of any kind; print every problem with its field path and line.

    A valid Rollout that judges less than it seems to gets warnings on stderr (exit 0)."""
    from canaryctl.metrics.profile import check_profile_feeds_slos
    from canaryctl.runbook.loader import load_document
    from canaryctl.runbook.rollout import Rollout, rollout_warnings

    problems: list[Problem] = []
    for path in files:
        try:
            doc = load_document(path)
        except InvalidDocument as exc:
            problems.extend(exc.problems)
            continue
        if doc.kind in ("Rollout", "Guard"):  # their SLOs read a metric profile
            try:
                check_profile_feeds_slos(doc.spec)  # type: ignore[arg-type]
            except InvalidDocument as exc:
                problems.extend(exc.problems)
                continue
            except InvalidInput as exc:
                problems.append(Problem(path, "", str(exc)))
                continue
        warnings = rollout_warnings(doc.spec) if isinstance(doc, Rollout) else []
        for warning in warnings:
            click.echo(f"{path}: warning: {warning}", err=True)
        if wants_json(output):
            shown = {"file": path, "kind": doc.kind, "valid": True, "warnings": warnings}
            click.echo(json.dumps(shown))
        else:
            click.echo(f"{path}: valid {doc.kind} '{doc.metadata.name}'")
    if problems:
        raise InvalidDocument(problems)


@click.command()
@click.argument("kind", type=click.Choice(sorted(KINDS)))
def schema(kind: str) -> None:
    """Print the JSON Schema of a document kind, for editors and CI linters."""
    from canaryctl.runbook.loader import json_schema

    click.echo(json_schema(kind))
