"""The package's import graph: no cycle, and every import runs down the layers below.

Imports inside functions count (a lazy import is still a dependency); imports under
`if TYPE_CHECKING:` do not (they never run).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "autoal_dist"

# Lowest first: a module may import its own layer (without a cycle) and the layers below.
LAYERS: list[tuple[str, ...]] = [
    ("__init__", "config", "seeds", "faults", "outputs", "remote", "ray_cluster", "placement",
     "lazy", "dirlock",
     "errors",
     "progress"),  # leaves
    ("store", "data", "models", "strategies"),  # files, datasets, networks, strategy math
    ("scoring", "training", "labeling"),  # one pass, fitting, people's labels
    ("autoal", "albl", "rounds", "fitting"),  # round policies, where networks are fitted
    ("policies", "registry", "execution", "run"),  # registries; the run directory
    ("campaign", "report", "compare"),  # the round loop, a run's report, runs compared
    ("sweep", "cli", "__main__"),  # commands
]


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def imports_of(name: str) -> set[str]:
    """The package modules `name` imports at runtime."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("autoal_dist"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.startswith("autoal_dist"):
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                found.add(sub if sub in MODULES else node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: imports_of(name) for name in MODULES}


def layer_of(name: str) -> int:
    top = name.split(".")[1] if "." in name else "__init__"
    for i, group in enumerate(LAYERS):
        if top in group:
            return i
    raise AssertionError(f"{name}: no layer in tests/test_layout.py LAYERS; add its folder")


def test_every_module_has_a_layer():
    for name in MODULES:
        layer_of(name)


def test_no_import_cycle():
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def dfs(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                dfs(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(GRAPH):
        if name not in state:
            dfs(name)


def test_no_upward_import():
    upward = [f"{a} -> {b}" for a, targets in GRAPH.items() for b in targets
              if layer_of(b) > layer_of(a)]
    assert not upward, "imports that run up the layers: " + ", ".join(sorted(upward))


def test_config_is_a_leaf():
    """config.py imports nothing of the package but the user-error base class."""
    assert GRAPH["autoal_dist.config"] <= {"autoal_dist.errors"}
    assert GRAPH["autoal_dist.errors"] == set()


def test_the_graph_is_walked():
    """A guard against a walker that finds nothing: known edges are seen."""
    assert "autoal_dist.run" in GRAPH["autoal_dist.campaign"]
    assert "autoal_dist.autoal.ray_job" in GRAPH["autoal_dist.fitting"]  # a lazy import
    assert "autoal_dist.lazy" in GRAPH["autoal_dist.policies"]


# ---- the run directory is one object ----------------------------------------------------------

RUN_PACKAGE = "autoal_dist.run"
# Modules that read or write files of their own directories, never a run directory's: the
# user's config and dataset files, stored pools, label files, the export folder, the sweep
# directory, a comparison's output folder, and the write and lock machinery itself.
OTHER_DIRECTORIES = ("autoal_dist.config", "autoal_dist.data", "autoal_dist.labeling.export",
                     "autoal_dist.labeling.files", "autoal_dist.sweep.runner",
                     "autoal_dist.remote", "autoal_dist.store", "autoal_dist.ray_cluster",
                     "autoal_dist.scoring.actors", "autoal_dist.compare",
                     "autoal_dist.dirlock")
FILE_CALLS = {"read_table", "write_table", "ParquetFile", "write_atomic", "write_json",
              "write_text", "read_text", "read_bytes", "write_bytes", "read_json"}


def _file_access(name: str) -> list[str]:
    """Calls in module `name` that open a file other than through a `Run` (a receiver named
    `run`: `run.write_table(...)`), as "line: call"."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Name) and f.id == "open":
            found.append(f"{node.lineno}: open(...)")
        elif isinstance(f, ast.Attribute) and f.attr in FILE_CALLS and not (
                isinstance(f.value, ast.Name) and f.value.id == "run"):
            found.append(f"{node.lineno}: {ast.unparse(f)}(...)")
    return found


def test_only_the_run_object_opens_run_directory_files():
    """Every read and write of a run directory's files goes through `Run` (run/): atomic
    writes, the upload of a staged run, the checks. A module that opened them itself would
    write around all three (a staged run's file never uploaded)."""
    bad = {name: calls for name in MODULES
           if not name.startswith(RUN_PACKAGE) and not name.startswith(OTHER_DIRECTORIES)
           and (calls := _file_access(name))}
    assert not bad, f"file access outside the run object: {bad}"


def test_the_run_directory_travels_as_a_run_object():
    """No module outside run/ passes a run directory around as a path (`run_dir`)."""
    bad = [name for name in MODULES if not name.startswith(RUN_PACKAGE)
           and any(isinstance(n, (ast.Name, ast.arg)) and getattr(n, "id", getattr(n, "arg", ""))
                   == "run_dir" for n in ast.walk(ast.parse(MODULES[name].read_text())))]
    assert not bad, f"run directories as paths in: {bad}"


def test_the_file_access_check_sees_calls():
    assert _file_access("autoal_dist.store") and _file_access("autoal_dist.data.pool_read")


def test_execution_decides_where_networks_are_fitted():
    """The round loop and the policies fit through the fitter their execution hands them
    (fitting.py); none of them asks whether it runs on Ray Train (`jobs is None`, `.jobs`)."""
    allowed = ("autoal_dist.execution", "autoal_dist.fitting", "autoal_dist.training",
               "autoal_dist.autoal.ray_job")
    bad = []
    for name in MODULES:
        if name.startswith(allowed):
            continue
        for node in ast.walk(ast.parse(MODULES[name].read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Attribute) and node.attr == "jobs") or (
                    isinstance(node, ast.Name) and node.id == "jobs"):
                bad.append(f"{name}:{node.lineno}")
    assert not bad, f"modules that ask where training runs: {bad}"
