"""The documentation holds together: README.md stays short, its two commands are what CI
runs, every link and every repository path it names exists, every command line in it parses,
and nothing in the repository cites a specification file that is not in the repository.

Fast and without Ray: it reads files, asks git which files are tracked, and builds the CLI's
argument parser (which imports no Ray).
"""
from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
MARKDOWN = [README, *DOCS]
CI = ROOT / ".ci" / "run"
MAX_README_LINES = 300
# Specification files that lived outside the repository; nothing tracked may cite them.
# Spelled in pieces so this file does not cite them itself.
FOREIGN_SPECS = ["DESIGN" + ".md", "AUTOAL" + ".md"]

FENCE = re.compile(r"^( *)```[^\n]*\n(.*?)^\1```[ \t]*$", re.S | re.M)
BASH_FENCE = re.compile(r"^( *)```(?:bash|sh)\n(.*?)^\1```[ \t]*$", re.S | re.M)
INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.S)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _prose(text: str) -> str:
    """The markdown without fenced code blocks and inline code spans."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation removed,
    spaces to hyphens."""
    text = re.sub(r"`([^`]*)`", r"\1", heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link keeps its text
    text = re.sub(r"[*_]{2}|(?<!\w)[*_]|[*_](?!\w)", "", text)  # emphasis, not snake_case
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a markdown file (duplicates get -1, -2, ... as on GitHub)."""
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", _text(path)).splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = _slug(m.group(1))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def section(text: str, heading: str) -> str:
    """The `## heading` section, up to the next heading of level 1 or 2 outside code blocks."""
    lines = text.splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.rstrip() == heading)
    fenced = False
    for i in range(start + 1, len(lines)):
        if lines[i].lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"^#{1,2} ", lines[i]):
            return "".join(lines[start:i])
    return "".join(lines[start:])


def _tracked() -> list[str]:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the tracked files are unknown")
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    return [p for p in out.stdout.decode().split("\0") if p]


def _top_level_dirs() -> set[str]:
    """Top-level folders of the repository a path in the docs may start with."""
    return {p.name for p in ROOT.iterdir() if p.is_dir() and p.name not in (".git", ".venv")
            and not p.name.startswith(".venv") and p.name not in ("runs", "build")
            and not p.name.endswith(".egg-info")} | {".ci"}


def _command_lines(text: str) -> list[str]:
    """Logical lines of the bash blocks (backslash continuations joined, comments dropped)."""
    lines = []
    for _, body in BASH_FENCE.findall(text):
        for line in body.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


# ---- README: length, the two commands, the venv ---------------------------------------------

def test_readme_is_short():
    n = len(_text(README).splitlines())
    assert n <= MAX_README_LINES, f"README.md has {n} lines; keep it <= {MAX_README_LINES} " \
                                  "and move long sections into docs/"


def _two_commands() -> list[str]:
    body = section(_text(README), "## Two commands")
    block = BASH_FENCE.search(body)
    assert block, "## Two commands holds no bash block"
    return [line for line in block.group(2).splitlines() if line and not line.startswith("#")]


def _ci_commands() -> list[str]:
    return [line for line in _text(CI).splitlines()
            if line.strip() and not line.startswith("#")
            and not line.startswith("set ") and not line.startswith("cd ")]


def test_readme_test_command_is_what_ci_runs():
    commands = _two_commands()
    assert len(commands) == 2, f"## Two commands should hold exactly two commands: {commands}"
    assert _ci_commands() == [commands[1]], \
        ".ci/run must run exactly README's command 2 (and nothing else)"


def test_readme_main_command_sets_up_the_same_venv():
    main, tests = _two_commands()
    setup = "python3 -m venv .venv && .venv/bin/pip install -e "
    assert main.startswith(setup) and tests.startswith(setup)
    assert " && .venv/bin/autoal-dist run" in main, "command 1 runs the main job from the venv"


def test_readme_activates_the_venv_once_then_uses_bare_commands():
    text = _text(README)
    activate = text.index("source .venv/bin/activate")
    assert activate < text.index("## What a run directory holds")
    later = text[activate:]
    assert ".venv/bin/autoal-dist" not in later and ".venv/bin/python" not in later, \
        "after `source .venv/bin/activate` the README uses bare `autoal-dist` / `python`"


# ---- links and paths ------------------------------------------------------------------------

def _links(path: Path) -> list[str]:
    return [m.group(1) for m in LINK.finditer(_prose(_text(path)))]


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path):
    broken = []
    for target in _links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target} (no heading with that anchor in {dest.name})")
    assert not broken, f"{path.relative_to(ROOT)}: broken links: {broken}"


def _repository_paths(text: str) -> set[str]:
    """Tokens of inline code and code blocks that name a path under a top-level folder."""
    dirs = _top_level_dirs()
    spans = [m.group(2) for m in INLINE_CODE.finditer(FENCE.sub("", text))]
    spans += [body for _, body in FENCE.findall(text)]
    found = set()
    for span in spans:
        for token in re.split(r"[\s=:,()\"'\[\]]+", span):
            token = token.rstrip(".;")
            if "/" not in token or re.search(r"[<>{}*$~]|XXX", token):
                continue  # placeholders (<id>, round_XXX, $PWD/...) are not repository paths
            if token.split("/")[0] in dirs:
                found.add(token)
    return found


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_repository_paths_exist(path):
    paths = _repository_paths(_text(path))
    if path == README:
        assert {"cluster/local.sh", "cluster/aws.yaml"} <= paths  # the scan sees what it should
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert not missing, f"{path.relative_to(ROOT)} names paths that do not exist: {missing}"


# ---- every command line in the docs parses ----------------------------------------------------

def _autoal_dist_argv(line: str) -> list[str] | None:
    """The arguments of the `autoal-dist` command on a shell line (also after `--`)."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        return None
    for i, w in enumerate(words):
        if w == "autoal-dist" and (i == 0 or words[i - 1] in ("--", "&&", "$")):
            return words[i + 1:]
    return None


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_autoal_dist_commands_parse(path):
    from autoal_dist.cli import parser

    p = parser()
    for line in _command_lines(_text(path)):
        argv = _autoal_dist_argv(line)
        if argv is None or (argv and argv[0] == "bench"):  # bench passes its args to a script
            continue
        try:
            p.parse_args(argv)
        except SystemExit:
            pytest.fail(f"{path.relative_to(ROOT)}: `autoal-dist {shlex.join(argv)}` "
                        "does not parse")


def _subcommands(p) -> dict:
    """name -> parser of the subcommands of an argparse parser."""
    return next((a.choices for a in p._actions if isinstance(a.choices, dict)), {})


def _options(p) -> set[str]:
    """Every option string of a parser and of its nested subcommands."""
    out = {o for a in p._actions for o in a.option_strings}
    for nested in _subcommands(p).values():
        out |= _options(nested)
    return out


def test_readme_command_summary_names_only_real_flags():
    from autoal_dist.cli import parser

    subcommands = _subcommands(parser())
    block = FENCE.search(section(_text(README), "## Command line")).group(2)
    sub = None
    for line in block.splitlines():
        m = re.match(r"\s*autoal-dist (\w+)", line)
        if m:
            sub = m.group(1)
        for flag in re.findall(r"(?<![\w-])--[a-z][\w-]*", re.sub(r"\(.*?\)", "", line)):
            if sub == "bench":
                assert flag == "--list", f"bench takes NAME [ARGS...], not {flag}"
                continue
            assert sub in subcommands, f"README names a subcommand autoal-dist has not: {sub}"
            assert flag in _options(subcommands[sub]), f"autoal-dist {sub} has no flag {flag}"


def test_readme_names_every_subcommand():
    from autoal_dist.cli import parser

    block = FENCE.search(section(_text(README), "## Command line")).group(2)
    named = set(re.findall(r"autoal-dist (\w+)", block))
    real = set(_subcommands(parser()))
    assert not real - named, f"README's command summary leaves out: {sorted(real - named)}"
    assert not named - real, f"README's command summary names what does not exist: " \
                             f"{sorted(named - real)}"


# ---- no citation of files outside the repository ----------------------------------------------

def test_no_tracked_file_cites_a_foreign_spec():
    """May fail while other changes remove such citations from the code; it must pass at the end."""
    hits = []
    for rel in _tracked():
        path = ROOT / rel
        if not path.is_file():  # tracked but deleted in the working tree
            continue
        data = path.read_bytes()
        for name in FOREIGN_SPECS:
            if name.encode() in data:
                hits.append(f"{rel}: {name}")
    assert not hits, "files cite specifications that are not in the repository: " + "; ".join(hits)


# ---- docs/design.md's code layout is the code's ----------------------------------------------

def test_design_code_layout_exists():
    """Every module and folder of the layout in docs/design.md exists, and so does every
    `name.py` its description names inside a folder."""
    text = _text(ROOT / "docs" / "design.md")
    block = next(body for _, body in FENCE.findall(section(text, "## Code layout"))
                 if body.startswith("autoal_dist/"))
    missing, folder = [], None
    for line in block.splitlines()[1:]:
        m = re.match(r"^  (\S+)\s*(.*)$", line)
        if m:
            name, rest = m.groups()
            folder = name if name.endswith("/") else None
            if not (ROOT / "autoal_dist" / name).exists():
                missing.append(f"autoal_dist/{name}")
        else:
            rest = line
        for module in re.findall(r"\b(\w+\.py)\b", rest if folder else ""):
            if not (ROOT / "autoal_dist" / folder / module).exists():
                missing.append(f"autoal_dist/{folder}{module}")
    assert not missing, f"docs/design.md's code layout names what does not exist: {missing}"


def test_design_code_layout_is_complete():
    """Every module and folder of the package appears in docs/design.md's layout."""
    text = _text(ROOT / "docs" / "design.md")
    block = next(body for _, body in FENCE.findall(section(text, "## Code layout"))
                 if body.startswith("autoal_dist/"))
    named = set(re.findall(r"^  (\S+)", block, re.M))
    if (ROOT / ".git").exists():  # what is committed, not someone's work in progress
        files = [Path(p) for p in _tracked() if p.startswith("autoal_dist/") and p.endswith(".py")]
    else:
        files = [p.relative_to(ROOT) for p in (ROOT / "autoal_dist").rglob("*.py")]
    present = {f.parts[1] + "/" if len(f.parts) > 2 else f.name for f in files}
    present -= {"__init__.py", "__main__.py"}
    assert not present - named, \
        f"docs/design.md's code layout leaves out: {sorted(present - named)}"
