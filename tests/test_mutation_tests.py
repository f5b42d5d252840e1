"""benchmarks/mutation.py runs every test module that pins the decision core: a test module
that imports analysis/ or controller/step.py is run, or left out with its reason, and each file
is mutated under the modules that load it (docs/mutation.md)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def mutation() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mutation", ROOT / "benchmarks" / "mutation.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["mutation"] = module
    spec.loader.exec_module(module)
    return module


# -- the mutation run's list of tests --------------------------------------------------------------


def test_every_test_module_importing_the_core_is_run_or_left_out_with_a_reason(
    mutation: ModuleType,
) -> None:
    assert mutation.stale() == []
    assert "tests/test_shadow_step.py" in mutation.CORE_TESTS
    assert all(reason.strip() for reason in mutation.LEFT_OUT.values())


def test_a_new_test_module_importing_the_core_makes_the_list_stale(
    mutation: ModuleType, tmp_path: Path
) -> None:
    (tmp_path / "tests").mkdir()
    for test in (*mutation.CORE_TESTS, *mutation.LEFT_OUT):
        (tmp_path / test).write_text((ROOT / test).read_text())
    assert mutation.stale(tmp_path) == []
    written = {
        "test_new_a.py": "from canaryctl.analysis.bound import BoundTest\n",
        "test_new_b.py": "from canaryctl.controller import step\n",
        "test_new_c.py": "import canaryctl.analysis\n",
        "test_unrelated.py": "from canaryctl.controller.store import Store\nimport canaryctl\n",
    }
    for name, text in written.items():
        (tmp_path / "tests" / name).write_text(text)
    assert mutation.stale(tmp_path) == [
        f"tests/{name} imports the decision core: add it to CORE_TESTS, or to LEFT_OUT with the "
        "reason"
        for name in ("test_new_a.py", "test_new_b.py", "test_new_c.py")
    ]
    (tmp_path / "tests" / "test_shadow_step.py").unlink()
    assert mutation.stale(tmp_path)[-1] == (
        "tests/test_shadow_step.py is named in benchmarks/mutation.py but does not import the "
        "decision core"
    )


def test_each_file_is_mutated_under_the_tests_that_load_it(mutation: ModuleType) -> None:
    chosen = mutation.select_tests(
        ["canaryctl/analysis/experiment.py", "canaryctl/controller/step.py"],
        ["tests/test_experiment_analysis.py", "tests/test_shadow_step.py"],
    )
    assert chosen == {
        "canaryctl/analysis/experiment.py": ["tests/test_experiment_analysis.py"],
        "canaryctl/controller/step.py": ["tests/test_shadow_step.py"],
    }


def report(file: str, mutants: int, killed: int, commit: str) -> dict[str, object]:
    survivor = {"file": file, "line": 3, "function": "f", "status": "survived",
                "mutant": "m__mutmut_1", "original": "a < b", "mutated": "a <= b"}  # fmt: skip
    row = {"mutants": mutants, "killed": killed, "score": killed / mutants,
           "statuses": {"killed": killed, "survived": mutants - killed},
           "tests": ["tests/test_x.py"], "commit": commit, "uncommitted_changes": False,
           "seconds": 10.0}  # fmt: skip
    return {"tool": "mutmut 3.8.1", "python": "3.11.7", "tests": ["tests/test_x.py"],
            "commits": [commit], "workers": 1, "runs": 1, "seconds": 10.0,
            "total": {"mutants": mutants, "killed": killed, "score": killed / mutants},
            "files": {file: row}, "missing": [],
            "survivors": [survivor] * (mutants - killed)}  # fmt: skip


def test_runs_combine_into_one_report_with_each_files_commit_the_latest_kept(
    mutation: ModuleType,
) -> None:
    first, second = report("a.py", 40, 39, "1" * 40), report("b.py", 60, 57, "2" * 40)
    first["missing"] = ["b.py", "c.py"]
    both = mutation.combine([first, second])
    assert both["total"] == {"mutants": 100, "killed": 96, "score": 0.96}
    assert both["commits"] == ["1" * 40, "2" * 40] and both["runs"] == 2
    assert both["files"]["a.py"]["commit"] == "1" * 40 and both["seconds"] == 20.0
    assert both["missing"] == ["c.py"] and len(both["survivors"]) == 4
    again = report("a.py", 40, 40, "3" * 40)
    latest = mutation.combine([first, second, again])
    assert latest["total"] == {"mutants": 100, "killed": 97, "score": 0.97}
    assert latest["files"]["a.py"]["commit"] == "3" * 40 and latest["runs"] == 2
    assert [s["file"] for s in latest["survivors"]] == ["b.py"] * 3


def test_the_caption_says_which_commit_each_file_was_measured_at(mutation: ModuleType) -> None:
    spec = importlib.util.spec_from_file_location("tables", ROOT / "benchmarks" / "tables.py")
    assert spec is not None and spec.loader is not None
    tables = importlib.util.module_from_spec(spec)
    sys.modules["tables"] = tables
    spec.loader.exec_module(tables)
    one = report("a.py", 40, 39, "1234567890" + "0" * 30)
    assert ", at canaryctl `123456789`;" in tables.caption(one, "x.json")
    two = mutation.combine([one, report("b.py", 60, 57, "abcdef1234" + "0" * 30)])
    two["missing"] = ["c.py"]
    text = tables.caption(two, "x.json")
    assert "at canaryctl `123456789` (a.py); `abcdef123` (b.py)" in text
    assert text.endswith("Not measured: `c.py`.")


def test_select_prints_each_files_tests_from_the_command_line() -> None:
    done = subprocess.run(
        [sys.executable, "benchmarks/mutation.py", "--select", "--only",
         "canaryctl/analysis/experiment.py"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        "canaryctl/analysis/experiment.py: "
        "tests/test_core_pins.py tests/test_experiment_analysis.py\n"
    )


def test_mutmut_runs_the_tests_in_its_own_process(mutation: ModuleType) -> None:
    """The project's addopts start xdist workers (`-n auto`); mutmut records which tests reach a
    function only in its own process, so with workers it finds none and stops: the section it
    is given turns them off, after the addopts."""
    section = mutation.mutmut_section(["canaryctl/analysis/bound.py"], ["tests/test_bound.py"])
    line = next(x for x in section.splitlines() if x.startswith("pytest_add_cli_args ="))
    assert line.endswith('"-n", "0"]')
