"""How much of the decision core its tests pin: a mutation run with mutmut, as JSON.

Each mutant is one small change to the code (an operator, a constant, a comparison, a removed
argument); the decision core's tests run against it and must fail. A surviving mutant is a
change to the decision that no test notices. Not run in CI: it takes tens of minutes.

Which tests: `CORE_TESTS` names the test modules that pin the core, and `LEFT_OUT` every other
test module that imports it, with the reason it is not run here; tests/test_core_pins.py fails
when a test module imports the core and is in neither, so the list cannot go stale. Each file is
mutated in a run of its own, over the modules of `CORE_TESTS` whose import loads that file
(one that never loads it cannot exercise it), minus their `e2e`-marked tests (real servers).

mutmut mutates a scratch copy of the project (canaryctl/, tests/, pyproject.toml with a
`[tool.mutmut]` section written here), so the worktree gets no `mutants/` folder and the
project's pyproject.toml carries no mutmut settings. It runs with one worker under `nice -n 10`,
since the machine is shared. Install the tool with `pip install -e '.[mutation]'`.

    python benchmarks/mutation.py --json docs/mutation.json   # all of analysis/ and step.py
    python benchmarks/mutation.py --only canaryctl/analysis/bound.py --json bound.json
    python benchmarks/mutation.py --markdown docs/mutation.json   # its tables, as Markdown
    python benchmarks/mutation.py --combine a.json b.json --json all.json  # runs of other files
    python benchmarks/mutation.py --select     # each file and the tests its run would use

The report is rewritten after each file, so a run stopped early still says what it measured;
`missing` names the files not measured yet. Each file records the commit it was measured at
(and whether canaryctl/ or tests/ differed from it). Runs started side by side (each with its
one worker) combine into one report; a file measured again is taken from the last.

The score of a file is killed / mutants, where a mutant that made the tests run past their time
limit (an endless loop) counts as killed, and one that no test reaches counts as survived.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PATHS = ("canaryctl/analysis", "canaryctl/controller/step.py")
CORE_MODULES = ("canaryctl.analysis", "canaryctl.controller.step")
"""The decision core, as modules: a test module importing one of these (or below) pins it."""
CORE_TESTS = (
    "tests/test_analysis.py",
    "tests/test_bound.py",
    "tests/test_chaos_step.py",
    "tests/test_controller.py",
    "tests/test_core_pins.py",
    "tests/test_decision.py",
    "tests/test_experiment_analysis.py",
    "tests/test_guard.py",
    "tests/test_relative_bounds.py",
    "tests/test_sequential.py",
    "tests/test_shadow_step.py",
    "tests/test_streaming_latency.py",
    "tests/test_unpriced.py",
)
"""The test modules a mutation run uses (their `e2e`-marked tests left out)."""
LEFT_OUT = {
    "tests/test_cli_first_run.py": "what a newcomer's first commands print (rollout list, the "
    "live view at 80 columns, dry-run hints); imports Verdict and Check only to draw a view",
    "tests/test_controller_service.py": "the controller service's threads, leases and inbox on "
    "SQLite; imports Verdict only to script a hand-back in the middle of an analysis",
    "tests/test_controller_metrics.py": "the controller's /metrics scraped over loopback while a "
    "rollout runs; imports Verdict only to script one",
    "tests/test_docs_blocks.py": "the docs' blocks, run in shells; calls assess once only to "
    "compute docs/analysis.md's sample record",
    "tests/test_cost_optimize.py": "the cost optimizer's LP (Hypothesis, seconds a test); "
    "ticks once only to see a generated runbook promote",
    "tests/test_evals.py": "eval scorers; imports Outcome only to compare an eval's verdict",
    "tests/test_experiment_runner.py": "the experiment runner's exits, in SQLite and a real "
    "PostgreSQL; imports Design only to build one",
    "tests/test_fencing.py": "lease epochs, and hand-backs during an analysis; imports "
    "Verdict only to script an analysis that a hand-back interrupts",
    "tests/test_gate.py": "`canaryctl gate` over real HTTP to the lab; imports Outcome only",
    "tests/test_metric_profiles.py": "documents refused before anything acts; its one judge "
    "call (a custom query SLO) is pinned in test_decision.py",
    "tests/test_prometheus_profiles.py": "a real Prometheus server; imports Verdict only",
}
"""Every other test module that imports the core, and why the mutation run leaves it out."""
COPIED = ("canaryctl", "tests", "runbooks", "scenarios")
ALSO_COPIED = ("runbooks", "scenarios")
"""What mutmut copies beside the code and tests into its mutants/ folder: files tests read."""
KILLED = frozenset({"killed", "timeout", "caught by type check"})
# A mutant's tests get (their clean duration + 2 s) x 3 of CPU time, twice, before it counts as a
# timeout; mutmut's own default (x 15) lets one endless loop cost minutes.
TIMEOUT_MULTIPLIER, TIMEOUT_CONSTANT = 3.0, 2.0


@dataclass(frozen=True)
class Survivor:
    file: str
    line: int | None
    function: str
    status: str
    mutant: str
    original: str
    mutated: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "function": self.function,
            "status": self.status,
            "mutant": self.mutant,
            "original": self.original,
            "mutated": self.mutated,
        }


def python_files(paths: list[str]) -> list[str]:
    """The .py files under each path, relative to the project, `__init__.py` left out."""
    files: list[str] = []
    for given in paths:
        path = ROOT / given
        if not path.exists():
            raise SystemExit(f"mutation: {given}: no such file or folder in {ROOT}")
        found = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        files += [str(f.relative_to(ROOT)) for f in found if f.name != "__init__.py"]
    return files


def _imports_core(tree: ast.Module) -> bool:
    """Whether a module's imports name the decision core or a module below it."""

    def core(name: str) -> bool:
        return any(name == m or name.startswith(m + ".") for m in CORE_MODULES)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(core(alias.name) for alias in node.names):
            return True
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.level == 0
            and (core(node.module) or any(core(f"{node.module}.{a.name}") for a in node.names))
        ):
            return True
    return False


def core_importers(root: Path = ROOT) -> list[str]:
    """Every test module (tests/test_*.py) that imports the decision core."""
    return sorted(
        str(path.relative_to(root))
        for path in (root / "tests").glob("test_*.py")
        if _imports_core(ast.parse(path.read_text("utf-8"), str(path)))
    )


def stale(root: Path = ROOT) -> list[str]:
    """What `CORE_TESTS` and `LEFT_OUT` get wrong: a test module importing the core that neither
    names, or one they name that does not import it (or is gone)."""
    importers = set(core_importers(root))
    named = set(CORE_TESTS) | set(LEFT_OUT)
    problems = [
        f"{test} imports the decision core: add it to CORE_TESTS, or to LEFT_OUT with the reason"
        for test in sorted(importers - named)
    ]
    problems += [
        f"{test} is named in benchmarks/mutation.py but does not import the decision core"
        for test in sorted(named - importers)
    ]
    return problems


def loaded_files(test: str) -> set[str]:
    """The project files that importing a test module loads (in a fresh interpreter)."""
    probe = (
        "import importlib, json, sys\n"
        "importlib.import_module(sys.argv[1])\n"
        "print(json.dumps(sorted(getattr(m, '__file__', None) or '' for m in list("
        "sys.modules.values()))))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    done = subprocess.run(
        [sys.executable, "-c", probe, Path(test).stem],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"mutation: importing {test} failed:\n{done.stderr[-2000:]}")
    loaded = set()
    for name in json.loads(done.stdout.splitlines()[-1]):
        path = Path(name)
        if path.is_relative_to(ROOT / "canaryctl"):
            loaded.add(str(path.relative_to(ROOT)))
    return loaded


def select_tests(files: list[str], tests: list[str]) -> dict[str, list[str]]:
    """Each file -> the given test modules whose import loads it: those that can exercise it."""
    loads = {test: loaded_files(test) for test in tests}
    return {file: [t for t in tests if file in loads[t]] for file in files}


def provenance() -> tuple[str, bool]:
    """The commit measured, and whether canaryctl/ or tests/ differed from it."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "HEAD") or "unknown"
    return commit, bool(git("status", "--porcelain", "--", "canaryctl", "tests"))


def mutmut_section(files: list[str], tests: list[str]) -> str:
    def toml_list(items: list[str]) -> str:
        return "[" + ", ".join(json.dumps(i) for i in items) + "]"

    return (
        "\n[tool.mutmut]\n"
        'source_paths = ["canaryctl"]\n'
        f"only_mutate = {toml_list(files)}\n"
        f"pytest_add_cli_args_test_selection = {toml_list(tests)}\n"
        # `-n 0`: the project's addopts start xdist workers, whose test runs mutmut cannot see
        # (it records which tests reach each function in its own process).
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-m", "not e2e", "-n", "0"]\n'
        f"timeout_multiplier = {TIMEOUT_MULTIPLIER}\n"
        f"timeout_constant = {TIMEOUT_CONSTANT}\n"
        f"also_copy = {toml_list(list(ALSO_COPIED))}\n"
        "use_git_change_detection = false\n"
    )


def scratch_copy(workdir: Path, files: list[str], tests: list[str]) -> None:
    for name in COPIED:
        source = ROOT / name
        if source.exists():
            shutil.copytree(source, workdir / name, ignore=shutil.ignore_patterns("__pycache__"))
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    (workdir / "pyproject.toml").write_text(pyproject + mutmut_section(files, tests), "utf-8")


def run_mutmut(workdir: Path) -> float:
    """Run mutmut in `workdir` with one worker at low priority; its spinner goes to a log."""
    started = time.monotonic()
    log_path = workdir / "mutmut.log"
    command = ["nice", "-n", "10", sys.executable, "-m", "mutmut", "run", "--max-children", "1"]
    with log_path.open("w", encoding="utf-8") as log:
        code = subprocess.call(command, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    if code != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise SystemExit(f"mutation: mutmut run exited {code}; the end of {log_path}:\n{tail}")
    return time.monotonic() - started


def function_spans(source: str) -> dict[str, tuple[int, int]]:
    """mutmut's mangled name of each function and method -> its first and last line."""
    spans: dict[str, tuple[int, int]] = {}

    def span(node: ast.FunctionDef | ast.AsyncFunctionDef) -> tuple[int, int]:
        first = min([node.lineno] + [d.lineno for d in node.decorator_list])
        return first, node.end_lineno or node.lineno

    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            spans[f"x_{node.name}"] = span(node)
        elif isinstance(node, ast.ClassDef):
            for member in node.body:
                if isinstance(member, ast.FunctionDef | ast.AsyncFunctionDef):
                    spans[f"x\u01c1{node.name}\u01c1{member.name}"] = span(member)
    return spans


_HUNK = re.compile(r"^@@ -(\d+)")


def changed_lines(diff: str) -> tuple[int | None, str, str]:
    """The first removed line's offset in the function, the removed and the added text."""
    offset: int | None = None
    removed: list[str] = []
    added: list[str] = []
    position = 0
    for line in diff.splitlines():
        if line.startswith(("---", "+++")):
            continue
        hunk = _HUNK.match(line)
        if hunk:
            position = int(hunk.group(1)) - 1
        elif line.startswith("-"):
            if offset is None:
                offset = position
            removed.append(line[1:].strip())
            position += 1
        elif line.startswith("+"):
            added.append(line[1:].strip())
        else:
            position += 1
    return offset, " / ".join(removed), " / ".join(added)


def locate(source_lines: list[str], span: tuple[int, int], offset: int | None, text: str) -> int:
    """The source line of a mutation: where its removed text stands in the function, nearest
    the diff's offset when the text occurs more than once."""
    first, last = span
    guess = first + (offset or 0)
    wanted = text.split(" / ")[0]
    matches = [n for n in range(first, last + 1) if source_lines[n - 1].strip() == wanted]
    return min(matches, key=lambda n: abs(n - guess)) if matches else guess


def collect(workdir: Path, files: list[str]) -> tuple[dict[str, dict[str, Any]], list[Survivor]]:
    """Per file, how many mutants ended how; and every one not killed, with its place."""
    os.chdir(workdir)  # mutmut reads its configuration and its mutants from the working folder
    from mutmut.mutation.diff_apply import get_diff_for_mutant
    from mutmut.stats import status_by_exit_code

    per_file: dict[str, dict[str, Any]] = {}
    survivors: list[Survivor] = []
    for file in files:
        meta_path = workdir / "mutants" / (file + ".meta")
        if not meta_path.exists():
            per_file[file] = {"mutants": 0, "killed": 0, "score": None, "statuses": {}}
            continue
        exit_codes: dict[str, int | None] = json.loads(meta_path.read_text("utf-8"))[
            "exit_code_by_key"
        ]
        statuses = {name: status_by_exit_code[code] for name, code in exit_codes.items()}
        counts = Counter(statuses.values())
        killed = sum(n for status, n in counts.items() if status in KILLED)
        per_file[file] = {
            "mutants": len(statuses),
            "killed": killed,
            "score": round(killed / len(statuses), 4) if statuses else None,
            "statuses": dict(sorted(counts.items())),
        }
        source = (workdir / file).read_text("utf-8")
        spans = function_spans(source)
        source_lines = source.splitlines()
        for name, status in sorted(statuses.items(), key=lambda item: _natural(item[0])):
            if status in KILLED:
                continue
            mangled = name.rpartition(".")[2].partition("__mutmut_")[0]
            offset, original, mutated = changed_lines(get_diff_for_mutant(name, path=file))
            span = spans.get(mangled)
            line = None if span is None else locate(source_lines, span, offset, original)
            function = mangled.removeprefix("x_").replace("x\u01c1", "", 1).replace("\u01c1", ".")
            survivors.append(Survivor(file, line, function, status, name, original, mutated))
    survivors.sort(key=lambda s: (s.file, s.line or 0, _natural(s.mutant)))
    return per_file, survivors


def _natural(name: str) -> tuple[str, int]:
    stem, _, number = name.rpartition("__mutmut_")
    return stem, int(number) if number.isdigit() else 0


def report(
    file: str, tests: list[str], workdir: Path, seconds: float, commit: tuple[str, bool]
) -> dict[str, Any]:
    """The report of one file's run: its figures, the tests and commit it was measured with."""
    per_file, survivors = collect(workdir, [file])
    row = per_file[file] | {
        "tests": tests,
        "commit": commit[0],
        "uncommitted_changes": commit[1],
        "seconds": round(seconds, 1),
    }
    return summary(tool(), {file: row}, [s.to_dict() for s in survivors], [], seconds)


def tool() -> str:
    """The mutation tester and its version, asked only when it ran: reading, combining and
    printing stored reports must work where mutmut is not installed (CI installs `.[test]`)."""
    from importlib.metadata import version

    return f"mutmut {version('mutmut')}"


def summary(
    tool: str,
    files: dict[str, dict[str, Any]],
    survivors: list[dict[str, Any]],
    missing: list[str],
    seconds: float,
    runs: int = 1,
) -> dict[str, Any]:
    mutants = sum(f["mutants"] for f in files.values())
    killed = sum(f["killed"] for f in files.values())
    return {
        "tool": tool,
        "python": platform.python_version(),
        "tests": sorted({t for f in files.values() for t in f.get("tests", [])}),
        "commits": sorted({f["commit"] for f in files.values() if "commit" in f}),
        "workers": 1,
        "runs": runs,
        "seconds": round(seconds, 1),
        "total": {
            "mutants": mutants,
            "killed": killed,
            "score": round(killed / mutants, 4) if mutants else None,
        },
        "files": files,
        "missing": [m for m in missing if m not in files],
        "survivors": sorted(
            survivors, key=lambda s: (s["file"], s["line"] or 0, _natural(s["mutant"]))
        ),
    }


def print_markdown(data: dict[str, Any]) -> None:
    """The score table and the survivors of a stored report, for docs/mutation.md."""
    print("| file | mutants | killed | score |")
    print("| --- | ---: | ---: | ---: |")
    for file, row in data["files"].items():
        score = "—" if row["score"] is None else f"{row['score']:.1%}"
        print(f"| `{file}` | {row['mutants']} | {row['killed']} | {score} |")
    total = data["total"]
    print(f"| all | {total['mutants']} | {total['killed']} | {total['score']:.1%} |")
    print()
    print(f"{data['tool']}, Python {data['python']}, one worker: {data['seconds']:.0f} s.")
    if data.get("missing"):
        print(f"Not measured: {', '.join(data['missing'])}.")
    if data["survivors"]:
        print()
        print("| place | mutation | status |")
        print("| --- | --- | --- |")
        for s in data["survivors"]:
            change = f"`{s['original']}` → `{s['mutated']}`".replace("|", "\\|")
            print(f"| `{s['file']}:{s['line']}` ({s['function']}) | {change} | {s['status']} |")


def combine(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One report from runs with the same tool: a file measured in more than one is taken from
    the last (a file measured again after its tests changed); seconds and runs count the
    figures kept."""
    first = reports[0]
    for other in reports[1:]:
        for key in ("tool", "python"):
            if other[key] != first[key]:
                raise SystemExit(f"mutation: the reports differ in {key}; run them alike")
    source: dict[str, int] = {}
    for index, r in enumerate(reports):
        for name in r["files"]:
            source[name] = index
    files = {
        name: row | {"tests": row.get("tests", r["tests"])}
        for index, r in enumerate(reports)
        for name, row in r["files"].items()
        if source[name] == index
    }
    # A file measured in a run of its own carries its seconds; older reports, only the whole.
    per_file = [row["seconds"] for row in files.values() if "seconds" in row]
    older = {source[name] for name, row in files.items() if "seconds" not in row}
    return summary(
        first["tool"],
        dict(sorted(files.items(), key=lambda item: _order(item[0]))),
        [s for i, r in enumerate(reports) for s in r["survivors"] if source.get(s["file"]) == i],
        sorted({m for r in reports for m in r.get("missing", [])}),
        sum(per_file) + sum(reports[i]["seconds"] for i in older),
        len(per_file) + sum(reports[i].get("runs", 1) for i in older),
    )


def _order(file: str) -> tuple[int, str]:
    """The report's file order: step.py first, then analysis/ by name."""
    return (0 if file.endswith("controller/step.py") else 1, file)


def measure(files: list[str], tests: list[str] | None, out: Path | None, keep: bool) -> None:
    """One mutmut run per file over the tests that load it; the report rewritten after each."""
    selected = select_tests(files, tests or list(CORE_TESTS))
    done: list[dict[str, Any]] = []
    for file in files:
        if not selected[file]:
            raise SystemExit(f"mutation: no test module of the selection loads {file}")
        workdir = Path(tempfile.mkdtemp(prefix="canaryctl-mutation-"))
        commit = provenance()
        try:
            scratch_copy(workdir, [file], selected[file])
            seconds = run_mutmut(workdir)
            done.append(report(file, selected[file], workdir, seconds, commit))
        finally:
            os.chdir(ROOT)
            if keep:
                print(f"scratch copy of {file} kept in {workdir}", file=sys.stderr)
            else:
                shutil.rmtree(workdir, ignore_errors=True)
        data = combine(done)
        data["missing"] = [f for f in files if f not in data["files"]]
        text = json.dumps(data, indent=2, ensure_ascii=False)
        if out is not None:
            out.write_text(text + "\n", encoding="utf-8")
        row = data["files"][file]
        print(f"{file}: {row['killed']}/{row['mutants']} killed", file=sys.stderr)
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--only",
        action="append",
        metavar="PATH",
        help=f"a file or folder to mutate, repeatable (default: {' '.join(DEFAULT_PATHS)})",
    )
    parser.add_argument(
        "--tests",
        action="append",
        metavar="PATH",
        help="a test module to choose from, repeatable (default: CORE_TESTS)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the report to PATH")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copies")
    parser.add_argument(
        "--markdown", metavar="JSON", help="print the Markdown tables of a stored report"
    )
    parser.add_argument(
        "--combine", nargs="+", metavar="JSON", help="combine stored reports of other files"
    )
    parser.add_argument(
        "--select", action="store_true", help="print each file's tests and run nothing"
    )
    args = parser.parse_args()
    if args.combine:
        reports = []
        for path in args.combine:
            with open(path, encoding="utf-8") as stored:
                reports.append(json.load(stored))
        text = json.dumps(combine(reports), indent=2, ensure_ascii=False)
        if args.json:
            Path(args.json).write_text(text + "\n", encoding="utf-8")
        print(text)
        return
    if args.markdown:
        with open(args.markdown, encoding="utf-8") as stored:
            print_markdown(json.load(stored))
        return
    problems = [] if args.tests else stale()
    if problems:
        raise SystemExit("mutation: the list of tests is stale:\n" + "\n".join(problems))
    files = python_files(args.only or list(DEFAULT_PATHS))
    if args.select:
        for file, tests in select_tests(files, args.tests or list(CORE_TESTS)).items():
            print(f"{file}: {' '.join(tests) or '(none)'}")
        return
    out = None if args.json is None else Path(args.json).resolve()
    measure(files, args.tests, out, args.keep)


if __name__ == "__main__":
    main()
