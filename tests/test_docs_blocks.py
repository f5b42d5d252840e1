"""Every fenced block of README.md and docs/ is checked: each shell block runs here (against the
lab, on free ports, bounded in time, its shown output compared by shape) or says in its info
string why it cannot; each YAML block that is a canaryctl document validates; each JSON block
parses; each command synopsis, and each `canaryctl ...` in the prose, names commands and options
that exist; the sample records the pages show are what the code returns. The blocks and their
info strings are read by tests/doc_blocks.py."""

from __future__ import annotations

import difflib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import click
import pytest
import yaml
from binaries import require_binary
from doc_blocks import (
    DOC_PORTS,
    ROOT,
    Block,
    Command,
    address_environment,
    blocks,
    commands,
    inline_commands,
    pages,
    prepare_workspace,
    rewrite_console_blocks,
    rewrite_ports,
    session_script,
    shape_matches,
    split_session,
)
from loopback import free_port

from canaryctl.cli import main
from canaryctl.errors import InvalidDocument
from canaryctl.runbook import parse_document

ALL = [block for page in pages() for block in blocks(page)]
RUN_PAGES = sorted({b.page for b in ALL if b.is_shell and b.reason is None})
PROGRAMS = {
    "promtool": "prometheus",
    "amtool": "prometheus-alertmanager",
    "curl": "curl",
    "openssl": "openssl",
}
"""Programs the docs' commands use besides canaryctl, and the Debian package of each."""
PAGE_TIMEOUT = 180
"""Seconds one page's blocks may take together: a bound for a hung server, far above a run."""


def test_every_block_names_its_language() -> None:
    """A fence without a language is neither run nor checked: shell could hide in one."""
    unnamed = [b.where for b in ALL if not b.language]
    assert unnamed == [], f"fenced blocks with no language (text, sh, yaml, ...): {unnamed}"


def test_a_block_not_run_says_why_and_the_tests_it_points_to_exist() -> None:
    problems = []
    for block in ALL:
        if block.reason is None:
            continue
        if not block.is_shell:
            problems.append(f"{block.where}: not-run on a {block.language} block, which never runs")
        if len(block.reason.split()) < 3:
            problems.append(f"{block.where}: not-run needs a reason a reader understands")
        for cited in re.findall(r"tests/[\w/]+\.py", block.reason):
            if not (ROOT / cited).is_file():
                problems.append(f"{block.where}: the reason cites {cited}, which does not exist")
    assert problems == []


def test_the_readmes_test_lines_are_what_ci_runs() -> None:
    """The README's setup block is not run here because CI runs it: .ci/run holds its lines."""
    (setup,) = [b for b in ALL if b.page == "README.md" and "python -m pytest" in b.text]
    assert setup.reason is not None and ".ci/run" in setup.reason
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    tests = setup.text.split("# set up and run the tests")[1].splitlines()[1:]
    tests = [line for line in tests if line.strip()]
    assert len(tests) == 2 and tests == ci[-len(tests) :]


def test_the_pages_have_blocks_to_check() -> None:
    """The reader found the blocks: a parser change that finds none would pass everything."""
    assert len(ALL) > 60 and len(RUN_PAGES) >= 5


def _data(block: Block) -> object:
    """The block's YAML, or None when it does not parse (test_a_yaml_block_parses says so)."""
    try:
        return yaml.safe_load(block.text)
    except yaml.YAMLError:
        return None


YAML = [b for b in ALL if b.language == "yaml"]
DOCUMENTS = [
    b for b in YAML if isinstance(d := _data(b), dict) and {"apiVersion", "kind"} <= d.keys()
]


@pytest.mark.parametrize("block", YAML, ids=lambda b: b.where)
def test_a_yaml_block_parses(block: Block) -> None:
    """Fragments too: an elision is a `# ...` comment, so a reader can paste the block."""
    yaml.safe_load(block.text)


@pytest.mark.parametrize("block", DOCUMENTS, ids=lambda b: b.where)
def test_a_canaryctl_document_validates(block: Block) -> None:
    try:
        parse_document(block.text, block.where)
    except InvalidDocument as exc:
        pytest.fail(str(exc))


BASES = {
    "Rollout": "runbooks/support-bot-gpt4o-mini.yaml",
    "Gateway": "runbooks/gateway.yaml",
    "Lab": "runbooks/lab.yaml",
}
"""The shipped example of each kind a fragment is checked in (`yaml in=Gateway.spec`), unless
the info string names another (`base=runbooks/litellm-gpt4o-mini.yaml`)."""
FRAGMENTS = [b for b in YAML if any(w.startswith("in=") for w in b.words)]


@pytest.mark.parametrize("block", FRAGMENTS, ids=lambda b: b.where)
def test_a_fragment_validates_inside_the_shipped_example_of_its_kind(block: Block) -> None:
    """A fragment (`spec: {cache: ...}`, `slos: [...]`) put where its info string says, in the
    shipped example of that kind: a field renamed in the product fails here, not for a reader."""
    (where,) = [w.removeprefix("in=") for w in block.words if w.startswith("in=")]
    bases = [w.removeprefix("base=") for w in block.words if w.startswith("base=")]
    kind, *path = where.split(".")
    document = yaml.safe_load((ROOT / (bases or [BASES[kind]])[0]).read_text(encoding="utf-8"))
    assert document["kind"] == kind, f"{block.where}: the base is a {document['kind']}"
    target = document
    for key in path:
        target = target[key]
    _merge(target, _data(block))
    try:
        parse_document(yaml.safe_dump(document), block.where, base_dir=ROOT / "runbooks")
    except InvalidDocument as exc:
        pytest.fail(str(exc))


def _merge(into: dict, fragment: object) -> None:  # type: ignore[type-arg]
    """Mappings merge key by key (but one of another `provider` replaces the example's); a list
    of named items (routes, models) replaces the item of the same name or adds it; any other
    list replaces the example's."""
    assert isinstance(fragment, dict), "a fragment is a mapping"
    for key, value in fragment.items():
        old = into.get(key)
        if isinstance(old, dict) and isinstance(value, dict) and _same_provider(old, value):
            _merge(old, value)
        elif isinstance(old, list) and isinstance(value, list) and _named(old + value):
            names = {item["name"]: item for item in old}
            names.update({item["name"]: item for item in value})
            into[key] = list(names.values())
        else:
            into[key] = value


def _same_provider(old: dict, new: dict) -> bool:  # type: ignore[type-arg]
    """`flags: {provider: launchdarkly, ...}` over a file flag replaces it: no `path` is left."""
    return old.get("provider") == new.get("provider", old.get("provider"))


def _named(items: list[object]) -> bool:
    return all(isinstance(item, dict) and "name" in item for item in items)


def test_the_pages_show_documents_of_each_kind_they_explain() -> None:
    kinds = {str(_data(b)["kind"]) for b in DOCUMENTS}  # type: ignore[index]
    assert {"Rollout", "ChaosScenario", "Guard", "Experiment", "MetricProfile"} <= kinds


@pytest.mark.parametrize(
    "block", [b for b in ALL if b.language in ("json", "jsonl")], ids=lambda b: b.where
)
def test_a_json_block_parses(block: Block) -> None:
    if block.language == "json":
        json.loads(block.text)
    else:
        for line in block.text.splitlines():
            json.loads(line)


def test_the_evidence_record_in_analysis_md_is_what_assess_returns() -> None:
    """docs/analysis.md's sample record, computed: 6% errors against 1%, 1,000 requests each per
    30 s interval, judged until the check fails."""
    from canaryctl.analysis import assess
    from canaryctl.metrics import Observation, VariantStats
    from canaryctl.runbook.rollout import AnalysisSpec, SloSpec

    (shown,) = [b for b in ALL if b.page == "docs/analysis.md" and b.language == "json"]
    slos = [SloSpec(metric="error_rate", compare="baseline", max_ratio=1.2)]
    ledger: dict[str, object] = {}
    for k in range(1, 21):
        counts = {
            "canary": VariantStats(1000 * k, 60 * k, 0),
            "baseline": VariantStats(1000 * k, 10 * k, 0),
        }
        observation = Observation(0.0, 30.0 * k, counts)
        verdict, ledger = assess(slos, AnalysisSpec(interval=30, min_requests=100), observation,
                                 ledger, baseline="baseline", canary="canary")  # fmt: skip
        (check,) = verdict.checks
        if check.outcome != "pass":
            break
    assert k == 7 and "7th analysis" in (ROOT / shown.page).read_text(encoding="utf-8")
    real = json.loads(json.dumps(check.to_dict()))
    assert _as_shown(json.loads(shown.text), real), json.dumps(real)


def test_the_budget_refusal_in_gateway_md_is_what_the_gateway_sends() -> None:
    """docs/gateway.md's 429 body, computed from the page's own `team-daily` budget for team ml
    with 49.981 USD used, on 26 November 2026."""
    import calendar

    from canaryctl.gateway.budgets import MICRO_USD, _refusal, slots
    from canaryctl.runbook.gateway import BudgetSpec

    page = [b for b in ALL if b.page == "docs/gateway.md"]
    (limits,) = [b for b in page if b.language == "yaml" and "team-daily" in b.text]
    budgets = _data(limits)["spec"]["budgets"]["limits"]  # type: ignore[index]
    (spec,) = [budget for budget in budgets if budget["name"] == "team-daily"]
    (shown,) = [b for b in page if b.language == "json" and "budget_exceeded" in b.text]
    now = calendar.timegm((2026, 11, 26, 15, 0, 0))
    (slot,) = slots(BudgetSpec.model_validate(spec), "ml", now, "docs")
    refusal = _refusal(slot, round(49.981 * MICRO_USD), now)
    assert json.loads(shown.text) == refusal.body


def test_the_flag_claim_in_launchdarkly_md_is_one_canaryctl_writes() -> None:
    """docs/launchdarkly.md's claim, read back and written again as a run writes one."""
    from canaryctl.flags.base import FlagClaim

    (shown,) = [b for b in ALL if b.page == "docs/launchdarkly.md" and b.language == "json"]
    assert json.loads(FlagClaim.from_json(shown.text).to_json()) == json.loads(shown.text)


def test_the_gate_json_keys_in_gate_md_are_the_reports() -> None:
    """docs/gate.md's table of the `-o json` object names each key a gate report has."""
    from canaryctl.gate.result import GateReport

    report = GateReport("r", "b", "c", (), None, None, None).to_dict()
    page = (ROOT / "docs" / "gate.md").read_text(encoding="utf-8")
    table = page[page.index("| key | meaning |") :].split("\n\n")[0]
    named = set(re.findall(r"^\| (.*?) \|", table, re.M))
    keys = {key.strip("`[]") for cell in named for key in cell.split(", ")}
    assert set(report) <= keys, set(report) - keys


def test_the_judge_messages_in_judges_md_are_what_the_gateway_sends() -> None:
    """docs/judges.md's user message and both instructions, as verdicts.py writes them."""
    from canaryctl.gateway.verdicts import PAIRWISE, POINTWISE, pointwise_messages

    (shown,) = [b for b in ALL if b.page == "docs/judges.md" and "<question>" in b.text]
    system, user = pointwise_messages("rubric", "What is 17 + 25?", "17 + 25 = 42.")
    assert shown.text.rstrip("\n") == user["content"]
    assert system["content"] == f"rubric\n\n{POINTWISE}"
    prose = " ".join((ROOT / "docs" / "judges.md").read_text(encoding="utf-8").split())
    assert f"`{POINTWISE}`" in prose and f"`{PAIRWISE}`" in prose


def test_the_eval_items_in_gate_md_load_as_a_benchmark(tmp_path: Path) -> None:
    from canaryctl.evals.benchmark import load_benchmark

    (shown,) = [b for b in ALL if b.page == "docs/gate.md" and b.language == "jsonl"]
    (tmp_path / "items.jsonl").write_text(shown.text)
    items = load_benchmark(tmp_path / "items.jsonl")
    assert [item.scorer for item in items] == ["numeric", "contains", "json_schema"]


def _as_shown(shown: object, real: object) -> bool:
    """Equal, each number of `real` rounded to the places `shown` writes it with."""
    if isinstance(shown, dict) and isinstance(real, dict):
        return shown.keys() == real.keys() and all(_as_shown(shown[k], real[k]) for k in shown)
    if isinstance(shown, float) and isinstance(real, (int, float)):
        places = len(repr(shown).partition(".")[2])
        return round(real, places) == shown
    return type(shown) is type(real) and shown == real


@pytest.mark.parametrize("block", [b for b in ALL if "synopsis" in b.words], ids=lambda b: b.where)
def test_a_synopsis_names_commands_and_options_that_exist(block: Block) -> None:
    """`canaryctl rollout status|list ...`: each command of each line resolves, and each
    `--option` on the line (its comment and the indented lines under it too) is one of them."""
    problems: list[str] = []
    current: list[click.Command] = []
    for line in block.text.splitlines():
        if line.split()[:1] == ["canaryctl"]:
            current = _commands(line.split()[1:], problems, line)
        elif not line[:1].isspace():
            problems.append(f"not a canaryctl command, nor indented under one: {line!r}")
            continue
        problems += _unknown_options(line, current)
    assert problems == [], block.where


def test_the_commands_in_the_prose_name_commands_and_options_that_exist() -> None:
    """Every `canaryctl ...` code span of README.md and docs/, and every such string in a YAML
    block (a CI job's `run:`), read as a synopsis line."""
    spans = [span for page in pages() for span in inline_commands(page)]
    spans += [
        (b.where, text)
        for b in YAML
        for text in _strings(_data(b))
        if text.startswith("canaryctl ")
    ]
    spans = [(where, text) for where, text in spans if _meant_as_a_command(text)]
    problems: list[str] = []
    for where, text in spans:
        found: list[str] = []
        found += _unknown_options(text, _commands(text.split()[1:], found, text))
        problems += [f"{where}: {problem}" for problem in found]
    assert len(spans) > 50 and problems == []


def _meant_as_a_command(text: str) -> bool:
    """`canaryctl rollout list`, or a near miss of a command (`canaryctl budget show`); not a
    message that starts with the name (`canaryctl run 12 (support-bot): canary to 25%`)."""
    words = text.split()
    if len(words) < 2 or words[1].startswith("-"):
        return True
    names = main.list_commands(click.Context(main))
    return words[1] in names or bool(difflib.get_close_matches(words[1], names, cutoff=0.8))


def _strings(data: object) -> list[str]:
    if isinstance(data, dict):
        return [s for value in data.values() for s in _strings(value)]
    if isinstance(data, list):
        return [s for value in data for s in _strings(value)]
    return [data] if isinstance(data, str) else []


def _unknown_options(line: str, commands: list[click.Command]) -> list[str]:
    problems = []
    for option in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", line):
        missing = [c.name for c in commands if option != "--help" and not _has_option(c, option)]
        if missing:
            problems.append(f"{option} is not an option of {', '.join(map(str, missing))}")
    return problems


def _commands(words: list[str], problems: list[str], line: str) -> list[click.Command]:
    """The commands `rollout status|list` names: a group's word, then alternatives."""
    found: list[click.Command] = [main]
    for word in words:
        groups = [c for c in found if isinstance(c, click.Group)]
        if len(groups) < len(found) or not re.fullmatch(r"[a-z][a-z|-]*", word):
            break
        found = [_sub(group, name, problems, line) for group in groups for name in word.split("|")]
    return found


def _sub(group: click.Group, name: str, problems: list[str], line: str) -> click.Command:
    command = group.get_command(click.Context(group), name)
    if command is None:
        problems.append(f"no command {name!r} under {group.name!r}: {line!r}")
        return group
    return command


def _has_option(command: click.Command, option: str) -> bool:
    return any(option in p.opts or option in p.secondary_opts for p in command.params)


# --- the shell blocks ---------------------------------------------------------------------------


@pytest.mark.parametrize("page", RUN_PAGES)
def test_the_shell_blocks_of_a_page_run_as_written(page: str, tmp_path: Path) -> None:
    """The page's blocks in order in one shell, in a fresh directory with copies of the example
    files, the docs' ports mapped to free ones (in the commands; the files take theirs from the
    variables they name); each command exits as its block says, and a console block's shown
    output is the shape of what the command printed.

    `CANARYCTL_DOCS_WRITE_OUTPUT=1 python -m pytest tests/test_docs_blocks.py -k shell` writes
    each console block's output from its run into the page."""
    text = "\n".join(b.text for b in ALL if b.page == page and b.is_shell and b.reason is None)
    for program, package in PROGRAMS.items():
        if re.search(rf"(^|[\s(|;&]){program}\s", text, re.M):
            require_binary(program, package=package)
    ports = {doc_port: free_port() for doc_port in DOC_PORTS}
    addresses = address_environment(ports)
    prepare_workspace(tmp_path)
    runs = [
        (block, Command(rewrite_ports(command.text, ports), command.shown_output))
        for block in ALL
        if block.page == page and block.is_shell and block.reason is None
        for command in commands(block)
    ]
    script = tmp_path / "page.sh"
    script.write_text(session_script(runs, tmp_path, addresses))
    env = {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "COLUMNS": "120",
        "PYTHONDONTWRITEBYTECODE": "1",
        **addresses,
    }
    process = subprocess.Popen(
        ["bash", str(script)],
        cwd=tmp_path,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=PAGE_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
    results = split_session(runs, output)
    if os.environ.get("CANARYCTL_DOCS_WRITE_OUTPUT") == "1":
        rewrite_console_blocks(results, ports)
    failures = []
    for ran in results:
        where = f"{ran.block.where}: `{ran.command.text}`"
        expected = ran.command.expected_exit(ran.block)
        if ran.exit_code != expected:
            failures.append(f"{where} exited {ran.exit_code}, not {expected}:\n{ran.output}")
        elif (missing := shape_matches(ran.command.shown_output, ran.output)) is not None:
            failures.append(f"{where}: the page shows {missing!r}; the run printed:\n{ran.output}")
    assert not failures, "\n\n".join(failures)


# --- the reader and the runner themselves --------------------------------------------------------


def _block(language: str, text: str, info: str = "") -> Block:
    return Block("docs/x.md", 1, 9, language, tuple(info.split()), None, text)


def test_a_console_block_reads_as_commands_each_with_the_output_shown_under_it() -> None:
    block = _block("console", "$ canaryctl plan a.yaml \\\n    --rps 10\nplan for a\n\n$ true\n")
    (plan, true) = commands(block)
    assert plan.text == "canaryctl plan a.yaml \\\n    --rps 10"
    assert plan.shown_output == ["plan for a", ""] and true.shown_output == []
    bash = _block(
        "bash", "# a comment\nexport X=1   # set\n\ncanaryctl guard rearm g.yaml  # exit 2\n"
    )
    assert [c.text for c in commands(bash)] == [
        "export X=1   # set",
        "canaryctl guard rearm g.yaml  # exit 2",
    ]
    assert [c.expected_exit(bash) for c in commands(bash)] == [0, 2]


def test_shown_output_matches_by_shape_numbers_free_and_words_not() -> None:
    real = "plan at 10 req/s\n\ncanary      promoted\nequal          100%\nwarning: too short\n"
    assert shape_matches(["plan at 40 req/s", "...", "equal   90%"], real) is None
    assert shape_matches(["equal 90%", "plan at 40 req/s"], real) == "plan at 40 req/s"  # order
    assert shape_matches(["warning: long enough"], real) == "warning: long enough"


def test_the_runner_reports_each_commands_exit_and_output_in_one_shell(tmp_path: Path) -> None:
    """A server that ends instead of listening is reported with its own exit code and output."""
    port = free_port()
    text = (
        "export WORD=kept\necho $WORD\nsh -c 'exit 3'\n"
        f"canaryctl chaos proxy --listen 127.0.0.1:{port} --upstream http://127.0.0.1:{port}\n"
        "echo after\n"
    )
    block = _block("bash", text)
    runs = [(block, command) for command in commands(block)]
    script = tmp_path / "page.sh"
    script.write_text(session_script(runs, tmp_path))
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    done = subprocess.run(
        ["bash", str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": path},
    )
    results = split_session(runs, done.stdout)
    assert [r.exit_code for r in results] == [0, 0, 3, 2, 0]
    assert [r.output for r in results[:3]] == ["", "kept", ""] and results[4].output == "after"
    assert "CANARYCTL_CHAOS_TOKEN" in results[3].output
