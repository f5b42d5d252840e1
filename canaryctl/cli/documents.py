"""`validate` and `schema`: check documents before anything acts on them."""

from __future__ import annotations

import gc
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from canaryctl.cli.main import output_option, wants_json
from canaryctl.errors import InvalidDocument, InvalidInput, Problem
from canaryctl.runbook.kinds import KINDS

if TYPE_CHECKING:
    from canaryctl.runbook.gateway import GatewaySpec

# The loader (YAML, pydantic) and the metric profiles are imported when a command runs: `--help`
# lists the kinds from canaryctl.runbook.kinds alone.

_PLUGINS_ENV = "PYDANTIC_DISABLE_PLUGINS"


@contextmanager
def _without_pydantic_plugins() -> Iterator[None]:
    """pydantic's plugins off while a document is checked, unless the user chose otherwise.

    The first pydantic class built looks for plugins among every installed distribution's entry
    points, a tenth of what `validate` spends. Plugins observe validation in a long-running
    process (Logfire's records each one); a check that prints its verdict and exits gives them
    nothing to observe. PYDANTIC_DISABLE_PLUGINS is pydantic's documented switch; a value the
    user set, even an empty one (no plugin disabled), is left as it is."""
    if _PLUGINS_ENV in os.environ:
        yield
        return
    os.environ[_PLUGINS_ENV] = "__all__"
    try:
        yield
    finally:
        os.environ.pop(_PLUGINS_ENV, None)


@click.command()
@click.argument("files", nargs=-1, required=True)
@output_option
def validate(files: tuple[str, ...], output: str | None) -> None:
    """Validate documents of any kind; print every problem with its field path and line.

    A valid Rollout that judges less than it seems to gets warnings on stderr (exit 0)."""
    with _without_pydantic_plugins(), _collector_paused():
        _validate(files, output)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while the models are built and the documents checked.

    Importing pydantic and building a kind's classes allocates tens of thousands of objects
    that live until the process exits; the collector runs dozens of times over them and frees
    nothing, a twentieth of the command's time. A document is bounded (MAX_DOCUMENT_BYTES),
    so what it can allocate meanwhile is too."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _validate(files: tuple[str, ...], output: str | None) -> None:
    from canaryctl.metrics.profile import check_profile_feeds_slos
    from canaryctl.runbook.loader import load_document
    from canaryctl.runbook.rollout import Rollout, rollout_warnings

    problems: list[Problem] = []
    documents = []
    for path in files:
        try:
            documents.append((path, load_document(path)))
        except InvalidDocument as exc:
            problems.extend(exc.problems)
    gateways = _gateways(documents)
    for path, doc in documents:
        if doc.kind in ("Rollout", "Guard"):  # their SLOs read a metric profile
            try:
                check_profile_feeds_slos(doc.spec)  # type: ignore[arg-type]
            except InvalidDocument as exc:
                problems.extend(exc.problems)
                continue
            except InvalidInput as exc:
                problems.append(Problem(path, "", str(exc)))
                continue
        warnings = []
        if isinstance(doc, Rollout):
            warnings = rollout_warnings(doc.spec)
            if gateways:  # validated beside the gateway serving it: are its models priced?
                from canaryctl.runbook.unpriced import unpriced_cost_warnings

                warnings += unpriced_cost_warnings(doc.spec, gateways)
        for warning in warnings:
            click.echo(f"{path}: warning: {warning}", err=True)
        if wants_json(output):
            shown = {"file": path, "kind": doc.kind, "valid": True, "warnings": warnings}
            click.echo(json.dumps(shown))
        else:
            click.echo(f"{path}: valid {doc.kind} '{doc.metadata.name}'")
    if problems:
        raise InvalidDocument(problems)


def _gateways(documents: list[tuple[str, Any]]) -> list[tuple[str, GatewaySpec]]:
    """The gateways among the documents validated together (a Lab's too): where a Rollout's
    models are priced, or not."""
    found = []
    for path, doc in documents:
        if doc.kind == "Gateway":
            found.append((path, doc.spec))
        elif doc.kind == "Lab":
            found.append((path, doc.spec.gateway))
    return found


@click.command()
@click.argument("kind", type=click.Choice(sorted(KINDS)))
def schema(kind: str) -> None:
    """Print the JSON Schema of a document kind, for editors and CI linters."""
    from canaryctl.runbook.loader import json_schema

    click.echo(json_schema(kind))
