"""How much of the decision core its tests pin: a mutation run with mutmut, as JSON.

Each mutant is one small change to the code (an operator, a constant, a comparison, a removed
argument); the fast decision-core tests run against it and must fail. A surviving mutant is a
change to the decision that no test notices. Not run in CI: it takes minutes, not seconds.

mutmut mutates a scratch copy of the project (canaryctl/, tests/, pyproject.toml with a
`[tool.mutmut]` section written here), so the worktree gets no `mutants/` folder and the
project's pyproject.toml carries no mutmut settings. It runs with one worker under `nice -n 10`,
since the machine is shared. Install the tool with `pip install -e '.[mutation]'`.

    python benchmarks/mutation.py                             # analysis/ and step.py
    python benchmarks/mutation.py --json docs/mutation.json   # the figures in docs/mutation.md
    python benchmarks/mutation.py --only canaryctl/controller/step.py --only canaryctl/analysis
    python benchmarks/mutation.py --markdown docs/mutation.json   # the tables of docs/mutation.md
    python benchmarks/mutation.py --combine a.json b.json --json all.json  # runs of other files

Runs over disjoint files (started side by side, each with its one worker) combine into one
report: each file's figures are its run's, and the seconds are the runs' sum.

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
from importlib.metadata import version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PATHS = ("canaryctl/analysis", "canaryctl/controller/step.py")
DEFAULT_TESTS = (
    "tests/test_controller.py",
    "tests/test_analysis.py",
    "tests/test_sequential.py",
    "tests/test_decision.py",
    "tests/test_bound.py",
    "tests/test_guard.py",
)
COPIED = ("canaryctl", "tests", "runbooks", "scenarios")
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


def mutmut_section(files: list[str], tests: list[str]) -> str:
    def toml_list(items: list[str]) -> str:
        return "[" + ", ".join(json.dumps(i) for i in items) + "]"

    return (
        "\n[tool.mutmut]\n"
        'source_paths = ["canaryctl"]\n'
        f"only_mutate = {toml_list(files)}\n"
        f"pytest_add_cli_args_test_selection = {toml_list(tests)}\n"
        'pytest_add_cli_args = ["-p", "no:cacheprovider"]\n'
        f"timeout_multiplier = {TIMEOUT_MULTIPLIER}\n"
        f"timeout_constant = {TIMEOUT_CONSTANT}\n"
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


def report(files: list[str], tests: list[str], workdir: Path, seconds: float) -> dict[str, Any]:
    per_file, survivors = collect(workdir, files)
    mutants = sum(f["mutants"] for f in per_file.values())
    killed = sum(f["killed"] for f in per_file.values())
    return {
        "tool": f"mutmut {version('mutmut')}",
        "python": platform.python_version(),
        "tests": tests,
        "workers": 1,
        "seconds": round(seconds, 1),
        "total": {
            "mutants": mutants,
            "killed": killed,
            "score": round(killed / mutants, 4) if mutants else None,
        },
        "files": per_file,
        "survivors": [s.to_dict() for s in survivors],
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
    if data["survivors"]:
        print()
        print("| place | mutation | status |")
        print("| --- | --- | --- |")
        for s in data["survivors"]:
            change = f"`{s['original']}` → `{s['mutated']}`".replace("|", "\\|")
            print(f"| `{s['file']}:{s['line']}` ({s['function']}) | {change} | {s['status']} |")


def combine(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One report from runs over disjoint files with the same tool and tests."""
    first = reports[0]
    for other in reports[1:]:
        for key in ("tool", "python", "tests"):
            if other[key] != first[key]:
                raise SystemExit(f"mutation: the reports differ in {key}; run them alike")
        if set(other["files"]) & set(first["files"]):
            raise SystemExit("mutation: the reports share files; combine runs of other files")
    files = {name: row for r in reports for name, row in r["files"].items()}
    mutants = sum(f["mutants"] for f in files.values())
    killed = sum(f["killed"] for f in files.values())
    survivors = [s for r in reports for s in r["survivors"]]
    survivors.sort(key=lambda s: (s["file"], s["line"] or 0, _natural(s["mutant"])))
    return {
        **{key: first[key] for key in ("tool", "python", "tests", "workers")},
        "runs": sum(r.get("runs", 1) for r in reports),
        "seconds": round(sum(r["seconds"] for r in reports), 1),
        "total": {
            "mutants": mutants,
            "killed": killed,
            "score": round(killed / mutants, 4) if mutants else None,
        },
        "files": files,
        "survivors": survivors,
    }


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
        help=f"a test file to run, repeatable (default: {' '.join(DEFAULT_TESTS)})",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the report to PATH")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copy and print it")
    parser.add_argument(
        "--markdown", metavar="JSON", help="print the Markdown tables of a stored report"
    )
    parser.add_argument(
        "--combine", nargs="+", metavar="JSON", help="combine stored reports of other files"
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
    files = python_files(args.only or list(DEFAULT_PATHS))
    tests = args.tests or [t for t in DEFAULT_TESTS if (ROOT / t).exists()]
    out = None if args.json is None else Path(args.json).resolve()
    workdir = Path(tempfile.mkdtemp(prefix="canaryctl-mutation-"))
    try:
        scratch_copy(workdir, files, tests)
        seconds = run_mutmut(workdir)
        data = report(files, tests, workdir, seconds)
    finally:
        os.chdir(ROOT)
        if args.keep:
            print(f"scratch copy kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    text = json.dumps(data, indent=2, ensure_ascii=False)
    if out is not None:
        out.write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
