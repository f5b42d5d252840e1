"""The fenced blocks of README.md and docs/*.md, read the way tests/test_docs_blocks.py checks them.

A block's info string is its language, then optional words:

- `not-run: REASON` (shell blocks): the block is not run here, and REASON says why; the rest of
  the info string is the reason.
- `exit=N` (shell blocks): every command of the block exits N (default 0); a command whose
  trailing comment says `exit N` exits N.
- `synopsis` (text blocks): one `canaryctl ...` command a line; each command and each `--option`
  named must exist.

A `console` block shows commands after `$ ` and each command's output below it; the output is
checked by shape against a run (see `shape_matches`). Other shell blocks (`sh`, `bash`, `shell`)
are commands, one a line (a line ending in a backslash continues).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from markdown_it import MarkdownIt

from canaryctl.runbook.addresses import expand

__all__ = [
    "DOC_PORTS",
    "ROOT",
    "SHELL",
    "Block",
    "Command",
    "Ran",
    "address_environment",
    "blocks",
    "commands",
    "inline_commands",
    "pages",
    "prepare_workspace",
    "rewrite_console_blocks",
    "rewrite_ports",
    "session_script",
    "shape_matches",
    "split_session",
]

ROOT = Path(__file__).resolve().parent.parent
SHELL = frozenset({"sh", "bash", "shell", "console"})
_NOT_RUN = "not-run:"
_NUMBER = re.compile(r"\d[\d,.]*")
_EXIT_SAID = re.compile(r"\s#\s.*\bexit (\d+)\b")


@dataclass(frozen=True)
class Block:
    """One fenced block: where it is, its info string read apart, its text."""

    page: str  # relative to the repository, e.g. "docs/cost.md"
    line: int  # 1-based line of the opening fence
    end: int  # 1-based line of the closing fence
    language: str
    words: tuple[str, ...]
    reason: str | None  # the text after `not-run:`, or None when the block is meant to run
    text: str

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def is_shell(self) -> bool:
        return self.language in SHELL

    @property
    def expected_exit(self) -> int:
        codes = [w.removeprefix("exit=") for w in self.words if w.startswith("exit=")]
        return int(codes[0]) if codes else 0


@dataclass
class Command:
    """One shell command of a block and the output the page shows for it (console blocks)."""

    text: str
    shown_output: list[str] = field(default_factory=list)

    def expected_exit(self, block: Block) -> int:
        """The exit code its comment states (`# ...; exit 2 when ...`), else its block's."""
        said = _EXIT_SAID.search(self.text)
        return int(said.group(1)) if said else block.expected_exit


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def blocks(page: Path) -> list[Block]:
    """Every fenced block of one page, in order."""
    found = []
    for token in MarkdownIt().parse(page.read_text(encoding="utf-8")):
        if token.type != "fence" or token.map is None:
            continue
        info = token.info.strip()
        reason = None
        if _NOT_RUN in info:
            info, _, reason = info.partition(_NOT_RUN)
            reason = reason.strip()
        language, *words = info.split() or [""]
        found.append(
            Block(
                page=page.relative_to(ROOT).as_posix(),
                line=token.map[0] + 1,
                end=token.map[1],
                language=language,
                words=tuple(words),
                reason=reason,
                text=token.content,
            )
        )
    return found


def inline_commands(page: Path) -> list[tuple[str, str]]:
    """Each `canaryctl ...` code span in the page's prose, with where it is (page:line)."""
    found = []
    name = page.relative_to(ROOT).as_posix()
    for token in MarkdownIt().parse(page.read_text(encoding="utf-8")):
        for child in token.children or []:
            if child.type == "code_inline" and child.content.startswith("canaryctl "):
                line = token.map[0] + 1 if token.map else 0
                found.append((f"{name}:{line}", child.content))
    return found


def commands(block: Block) -> list[Command]:
    """The commands of a shell block; for a console block, each with the output shown under it."""
    found: list[Command] = []
    continuing = False  # the last line was part of a command and ended in a backslash
    for line in block.text.splitlines():
        if continuing:
            found[-1].text += "\n" + line
        elif block.language == "console" and not line.startswith("$ "):
            if not found:
                raise ValueError(f"{block.where}: output before any `$ ` command: {line!r}")
            found[-1].shown_output.append(line)
            continue
        elif block.language == "console":
            found.append(Command(line[2:]))
        elif line.strip() and not line.lstrip().startswith("#"):
            found.append(Command(line))
        else:
            continue
        continuing = line.endswith("\\")
    return found


def shape_matches(shown: list[str], actual: str) -> str | None:
    """None when each line the page shows appears in the real output, in order, with any number
    in place of each number shown and anything for a `...`; else the first line not found.

    Numbers are free because a run's timings and counts vary, and so is the width of a run of
    spaces or of a table's rule (a column widens with its numbers); the words and units are what
    a reader relies on and what goes stale."""
    actual_lines = [line.rstrip() for line in actual.splitlines()]
    position = 0
    for line in shown:
        if line.strip() in ("", "..."):
            continue
        pattern = _line_pattern(line.rstrip())
        while position < len(actual_lines) and not pattern.fullmatch(actual_lines[position]):
            position += 1
        if position == len(actual_lines):
            return line
        position += 1
    return None


def _line_pattern(line: str) -> re.Pattern[str]:
    parts = []
    for piece in re.split(r"(\.\.\.|\d[\d,.]*|[━─]+)", line):
        if piece == "...":
            parts.append(".*")
        elif piece and piece.strip("━─") == "":  # a table's rule, as wide as its column
            parts.append(f"[{piece[0]}]+")
        elif _NUMBER.fullmatch(piece):
            parts.append(r"[\d,.]+")
        else:  # columns widen with their numbers: any run of spaces matches any other
            parts.append(
                " +".join(re.escape(word) for word in piece.split(" ") if word)
                if piece.strip()
                else " *"
            )
            if piece.strip() and piece.startswith(" "):
                parts[-1] = " +" + parts[-1]
            if piece.strip() and piece.endswith(" "):
                parts[-1] += " +"
    return re.compile("".join(parts))


# --- running a page's shell blocks -------------------------------------------------------------

DOC_PORTS = (8080, 8090, 8091, 8101)
"""The loopback ports the docs name; a run maps each to a free port in the blocks' commands,
and gives the example files theirs through `address_environment`."""
COPIED = ("runbooks", "scenarios", "deploy", "canaryctl/defaults")
"""What the blocks read, relative to the repository: copied as they are, so that a block that
moves a flag or writes a file changes the copy only."""
SERVERS = frozenset(
    {
        ("lab", "serve"),
        ("chaos", "proxy"),
        ("controller", "serve"),
        ("gateway", "serve"),
        ("guard", "run"),
        ("drills", "serve"),
    }
)
"""Commands that serve until stopped: a run starts them in the background, waits for their port
and stops them (SIGTERM) when the page's blocks are done."""
_TRAILING_COMMENT = re.compile(r"\s+#\s.*$")
_LISTEN = re.compile(r"--listen\s+\S*:(\d+)")
_PORT = re.compile(r"--port\s+(\d+)")
_MARK = re.compile(r"^@@(begin|end) (\d+)(?: (\d+))?@@$", re.M)


@dataclass
class Ran:
    """What one command printed (stdout and stderr together) and how it exited."""

    command: Command
    block: Block
    output: str
    exit_code: int | None  # None: the page's run ended before this command did


def rewrite_ports(text: str, ports: dict[int, int]) -> str:
    for doc_port, port in ports.items():
        text = re.sub(rf"(127\.0\.0\.1|localhost):{doc_port}\b", rf"\g<1>:{port}", text)
    return text


def address_environment(ports: dict[int, int]) -> dict[str, str]:
    """The variables the example files take their addresses from (`${CANARYCTL_GATEWAY:-...}`),
    set to the free ports the docs' own are mapped to: how a reader whose ports are taken moves
    the examples, and how a page's run does, without editing a file."""
    return {
        "CANARYCTL_GATEWAY": f"127.0.0.1:{ports[8080]}",
        "CANARYCTL_CHAOS_PROXY": f"http://127.0.0.1:{ports[8091]}",
        "CANARYCTL_CHAOS_UPSTREAM_PORT": str(ports[8101]),
    }


def prepare_workspace(work: Path) -> None:
    """Copy what the blocks read into `work`, byte for byte."""
    for relative in COPIED:
        source = ROOT / relative
        for path in source.rglob("*"):
            if path.is_dir() or "__pycache__" in path.parts:
                continue
            target = work / relative / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())


def server_port(command: str, work: Path, environ: dict[str, str]) -> int | None:
    """The port a serving command listens on once ready: its `--listen` or `--port`, else its
    document's (a Lab's gateway, a Gateway's own, read in `environ` as canaryctl reads it);
    None for one with no port (`drills serve`)."""
    words = command.split()
    if (listen := _LISTEN.search(command)) is not None:
        return int(listen.group(1))
    if (port := _PORT.search(command)) is not None:
        return int(port.group(1))
    if words[1:3] in (["lab", "serve"], ["gateway", "serve"]):
        spec = yaml.safe_load((work / words[3]).read_text(encoding="utf-8"))["spec"]
        address = spec["gateway"]["listen"] if words[1] == "lab" else spec["listen"]
        return int(expand(str(address), environ).rsplit(":", 1)[1])
    return None


def is_server(command: str) -> bool:
    words = command.split()
    return len(words) >= 3 and words[0] == "canaryctl" and (words[1], words[2]) in SERVERS


def session_script(
    runs: list[tuple[Block, Command]], work: Path, environ: dict[str, str] | None = None
) -> str:
    """One bash script running a page's commands in order, in one shell (an `export` carries on
    to the next block), each between markers carrying its index and exit code."""
    lines = [
        "wait_port() {  # PORT PID: until PORT answers; fail when PID ends first or after 60 s",
        "  local deadline=$((SECONDS + 60))",
        "  until (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null; do",
        "    kill -0 $2 2>/dev/null && [ $SECONDS -lt $deadline ] || return 1",
        "    sleep 0.1",
        "  done",
        "}",
        "stop_servers() { kill $(jobs -p) 2>/dev/null; wait; }",
        "trap stop_servers EXIT",
    ]
    for index, (_, command) in enumerate(runs):
        lines.append(f"printf '\\n@@begin {index}@@\\n'")
        if is_server(command.text):
            bare = _TRAILING_COMMENT.sub("", command.text)
            lines.append(f"{bare} > server-{index}.log 2>&1 &")
            lines.append("server=$!")
            port = server_port(bare, work, environ or {})
            if port is None:
                lines.append("true")
            else:  # the server's own exit code when it ended; 1 when it never listened
                lines.append(
                    f"wait_port {port} $server || {{ cat server-{index}.log; "
                    "! kill -0 $server 2>/dev/null && wait $server; }"
                )
        else:
            lines.append(f"{{\n{command.text}\n}} < /dev/null 2>&1")
        lines.append(f"printf '\\n@@end {index} %d@@\\n' $?")
    return "\n".join(lines) + "\n"


def split_session(runs: list[tuple[Block, Command]], output: str) -> list[Ran]:
    """Each command's output and exit code from the markers of a session's output."""
    results = [Ran(command, block, "", None) for block, command in runs]
    begun: tuple[int, int] | None = None
    for mark in _MARK.finditer(output):
        index = int(mark.group(2))
        if mark.group(1) == "begin":
            begun = (index, mark.end())
        elif begun is not None and begun[0] == index:
            results[index].output = output[begun[1] : mark.start()].strip("\n")
            results[index].exit_code = int(mark.group(3))
            begun = None
    if begun is not None:
        results[begun[0]].output = output[begun[1] :]
    return results


def rewrite_console_blocks(results: list[Ran], ports: dict[int, int]) -> None:
    """Write each console block that ran back into its page with the output its run printed
    (the docs' ports put back): how a page's sample output is made, never typed."""
    back = {port: doc_port for doc_port, port in ports.items()}
    ran_blocks: dict[Block, list[Ran]] = {}
    for ran in results:
        if ran.block.language == "console":
            ran_blocks.setdefault(ran.block, []).append(ran)
    for block in sorted(ran_blocks, key=lambda b: (b.page, -b.line)):  # bottom up: lines hold
        text = "".join(
            f"$ {rewrite_ports(ran.command.text, back)}\n"
            + "".join(f"{line.rstrip()}\n" for line in rewrite_ports(ran.output, back).splitlines())
            for ran in ran_blocks[block]
        )
        path = ROOT / block.page
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        lines[block.line : block.end - 1] = [text]
        path.write_text("".join(lines), encoding="utf-8")
