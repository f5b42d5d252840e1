"""Every figure region in README.md and docs/ is what benchmarks/tables.py renders from the
committed JSON: a figure edited by hand, or JSON updated without its tables, fails here."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tables() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tables", ROOT / "benchmarks" / "tables.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["tables"] = module
    spec.loader.exec_module(module)
    return module


def test_generated_regions_match_the_committed_json(tables: ModuleType) -> None:
    assert tables.check() == [], "run `python benchmarks/tables.py` and commit the result"


def test_every_region_names_a_known_table_and_figure_file(tables: ModuleType) -> None:
    found = list(tables.regions())
    assert {r.file for r in found} >= {"README.md", "docs/benchmarks.md", "docs/gateway.md"}
    for region in found:
        assert region.table in tables.RENDERERS or region.table == "index", region
        assert region.source in tables.BENCHMARKS or region.table == "index", region


def test_a_hand_edited_figure_is_caught(tables: ModuleType, monkeypatch, tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    readme = (ROOT / "README.md").read_text()
    region = next(r for r in tables.regions() if r.file == "README.md")
    edited = readme.replace(region.body, region.body.replace("1", "2", 1) + " (edited)", 1)
    assert edited != readme
    (tmp_path / "README.md").write_text(edited)
    monkeypatch.setattr(tables, "ROOT", tmp_path)
    for source in tables.BENCHMARKS:  # the figures stay those committed
        target = tmp_path / source
        target.parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / source).exists():
            target.write_text((ROOT / source).read_text())
    assert tables.check() == ["README.md"]
    tables.rewrite()
    assert tables.check() == []
    assert (tmp_path / "README.md").read_text() == readme


def test_negative_differences_keep_their_sign(tables: ModuleType) -> None:
    assert tables.num(-0.35, 2) == f"{tables.MINUS}0.35"
    assert tables.num(-0.001, 2) == "0.00"
    assert tables.num(1234.5) == "1,234"
    added = tables.Added(value=-0.4, noise=1.2)
    assert str(added) == f"{tables.MINUS}0.40 ±1.20" and added.within_noise
