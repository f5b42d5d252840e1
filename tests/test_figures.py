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


def _target(max_rps: float, rates: dict[str, tuple[list[float], list[float]] | None]) -> dict:
    """A target's figures as benchmarks/gateway_overhead.py stores them, from its rounds."""
    figures: dict = {"max_rps": max_rps, "errors": 0, "rates": {}, "rounds": {}}
    for rate, rounds in rates.items():
        if rounds is None:
            figures["rates"][rate] = None
            continue
        p50s, p99s = rounds
        figures["rates"][rate] = {"p50_ms": sorted(p50s)[1], "p99_ms": sorted(p99s)[1]}
        figures["rounds"][rate] = {"p50_ms": p50s, "p99_ms": p99s}
    return figures


def test_gateway_overhead_shows_negative_differences_noise_and_what_was_not_run(
    tables: ModuleType,
) -> None:
    data = {
        "config": {"rate": 200, "low_rate": 20, "seconds": 6, "rounds": 3},
        "targets": {
            "direct": {
                "plain": _target(
                    6000, {"200": ([1.0, 1.2, 1.4], [5.0, 5.5, 6.0]), "20": ([2, 2, 2], [5, 5, 5])}
                )
            },
            "canaryctl": {
                "plain": _target(
                    2000, {"200": ([2.0, 2.2, 2.3], [4.0, 5.0, 7.0]), "20": ([3, 3, 3], [6, 6, 6])}
                )
            },
            "litellm": {"plain": _target(100, {"200": None, "20": ([13, 14, 15], [25, 26, 27])})},
        },
    }
    record = {"results": data, "versions": {"litellm": "1.110.2"}}
    added = tables.gateway_overhead_added(record)
    # canaryctl at 200 req/s: p50 2.2 - 1.2, noise (0.3 + 0.4) / 2; p99 5.0 - 5.5, noise (3 + 1) / 2
    assert f"| canaryctl gateway | plain | 1.00 ±0.35 / {tables.MINUS}0.50 ±2.00 |" in added
    assert (
        "| LiteLLM proxy 1.110.2 | plain | not run: above 80% of its 100 req/s maximum |" in added
    )
    ratios = tables.gateway_overhead_ratios(record)
    assert "At 200 req/s LiteLLM cannot sustain it on plain requests." in ratios
    # at 20 req/s canaryctl adds 1 ms (p50) and 1 ms (p99) with no spread: LiteLLM 12x and 21x
    x = tables.TIMES
    assert f"LiteLLM adds 12.0{x} canaryctl's p50 and 21.0{x} canaryctl's p99" in ratios
    assert f"20.0{x} on plain requests" in ratios


def test_gateway_servers_and_profile_give_shares_and_milliseconds(tables: ModuleType) -> None:
    rates = {"200": ([1.0, 1.2, 1.4], [5, 5, 5]), "20": ([2, 2, 2], [5, 5, 5])}
    ours = {
        **_target(1000, {"200": ([2.0, 2.2, 2.4], [6, 6, 6]), "20": None}),
        "cpu_ms_per_request": 0.5,
    }
    granian = {**_target(1500, rates), "cpu_ms_per_request": 0.25}
    data = {
        "config": {"rate": 200, "low_rate": 20, "seconds": 6, "rounds": 3},
        "targets": {"direct": {"plain": _target(4000, rates)}, "canaryctl": {"plain": ours}},
        "servers": {"granian": {"plain": granian}},
        "profile": {"plain": {"samples": 1000, "parts": {"aiohttp": 0.3, "uvicorn": 0.7}}},
    }
    record = {"results": data, "versions": {}}
    servers = tables.gateway_servers(record)
    # CPU per request as measured; max req/s beside its share of direct's 4,000
    assert (
        "| uvicorn + httptools (`canaryctl gateway serve`) | plain | 0.500 | 1,000 (25%) |"
        in servers
    )
    assert "| granian (Rust, ASGI) | plain | 0.250 | 1,500 (38%) | 0 |" in servers
    profile = tables.gateway_profile(record)
    # the shares times the CPU per request measured without sampling (0.5 ms), largest first
    assert profile.index("| uvicorn | 70% (0.350 ms) |") < profile.index(
        "| aiohttp | 30% (0.150 ms) |"
    )


def test_chaos_proxy_overhead_names_the_rate_it_did_not_run(tables: ModuleType) -> None:
    path = {"requests": 100, "failed": 0, "p50_ms": 2.0, "p90_ms": 4.0, "p99_ms": 9.0}
    slower = {**path, "p50_ms": 1.5, "p99_ms": 7.0}
    data = {
        "config": {"rounds": 3, "seconds": 5, "concurrency": 16},
        "modes": {
            "stream": {
                "max_rps": {"direct": 400.0, "proxy": 180.0},
                "rates": {
                    "200": None,
                    "20": {"direct": path, "proxy": slower, "proxy_cpu_ms_per_request": 3.0},
                },
            }
        },
    }
    table = tables.chaos_proxy_overhead(data)
    assert "| stream | 200 | not run: above 80% of 180 req/s, the proxy path's maximum |" in table
    assert f"| 2.00 → 1.50 ms ({tables.MINUS}0.50) |" in table
    assert "| 3.00 ms | 400 / 180 |" in table


def test_no_figure_is_typed_by_hand_outside_a_generated_region(tables: ModuleType) -> None:
    typed = [
        f"{path.relative_to(ROOT)}: {line}"
        for path in tables.documents()
        for line in tables.hand_typed(path.read_text())
    ]
    assert typed == [], "print it from a benchmark's JSON through a region of benchmarks/tables.py"


def test_the_hand_typed_check_sees_figures_in_prose_only(tables: ModuleType) -> None:
    prose = "It rolled back 1.2% of them, caught in a median 1,020 s, 1.27 times the bound."
    assert tables.hand_typed(prose) == [prose]
    region = (
        "<!-- generated by benchmarks/tables.py from docs/detection.json: detection -->\n"
        "| sequential | 1.2% | 1.27 times |\n<!-- end generated -->"
    )
    settings = "Steps of 5% every 30 s, `error_rate max 0.015` (`1.5%`), pause: 5m."
    assert tables.hand_typed(f"{region}\n{settings}\n```\nran in 198 s\n```") == []
