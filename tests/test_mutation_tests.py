"""benchmarks/mutation.py runs every test module that pins the decision core: a test module
that imports analysis/ or controller/step.py is run, or left out with its reason, and each file
is mutated under the modules that load it (docs/mutation.md)."""

from __future__ import annotations

import importlib.util
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
