"""The import direction of docs/ARCHITECTURE.md, read from the source (no import runs).

    commands, plugin  ->  ui_overlay  ->  flows, blocks  ->  core features  ->  platform

A lower layer never imports a higher one; a feature's `prefect.py` (its one door to Prefect)
is imported only inside its own feature (and by `commands`, which starts everything); no
module imports another inside a function (that was how cycles hid); no cycles; no module over
400 lines; Prefect's server and private modules are imported in one wrapper each.

Only the command line imports inside functions: each command loads what it needs."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "scriptflow_prefect"
# Folders at the top of the repository that install as subpackages (pyproject.toml).
MAPPED = {"flows": "flows", "blocks": "blocks", "ui_overlay": "ui_overlay"}
CORE = (
    "accounts",
    "scripts",
    "execution",
    "runs",
    "schedules",
    "history",
    "notifications",
    "monitoring",
    "environments",
)
RANK = {"platform": 0, **dict.fromkeys(CORE, 1), "flows": 2, "blocks": 2, "ui_overlay": 3}
TOP = ("commands", "plugin", "__init__")  # the composition root may import anything
MAX_LINES = 400
# Prefect modules that are not its public client API, and the one module allowed each.
PRIVATE_PREFECT = {
    "prefect.server.schemas.schedules": f"{PACKAGE}.schedules.spec",
    # Runs in Prefect's server process only: its SQLite write transactions that read first
    # start IMMEDIATE, and a 503 says Retry-After (burst stalls, issue 13).
    "prefect.server.api.server": f"{PACKAGE}.commands.prefect_sqlite",
    "prefect.server.database.configurations": f"{PACKAGE}.commands.prefect_sqlite",
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        if "migrations" in path.parts:
            continue
        found[_name(path.relative_to(ROOT / PACKAGE), PACKAGE)] = path
    for folder, sub in MAPPED.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            found[_name(path.relative_to(ROOT / folder), f"{PACKAGE}.{sub}")] = path
    return found


def _name(relative: Path, prefix: str) -> str:
    parts = list(relative.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([prefix, *parts])


MODULES = _modules()


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(module imported, line, inside a function?) for every import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, in_function) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module:
                assert child.level == 0, f"{path}:{child.lineno}: use absolute imports"
                found.append((child.module, child.lineno, in_function))
                # `from scriptflow_prefect.runs import service` imports a module too
                found.extend(
                    (f"{child.module}.{a.name}", child.lineno, in_function)
                    for a in child.names
                    if f"{child.module}.{a.name}" in MODULES
                )
            visit(child, nested)

    visit(tree, False)
    return found


def _part(module: str) -> str:
    """The part of the design a module belongs to: platform, a feature, flows... or top."""
    rest = module.removeprefix(PACKAGE).lstrip(".").split(".")
    return rest[0] or "__init__"


def _edges() -> list[tuple[str, str, int, bool]]:
    return [
        (source, target, line, in_function)
        for source, path in MODULES.items()
        for target, line, in_function in _imports(path)
        if target in MODULES
    ]


EDGES = _edges()


def _where(source: str, line: int) -> str:
    return f"{MODULES[source].relative_to(ROOT)}:{line}"


def test_it_finds_every_part_of_the_design():
    parts = {_part(m) for m in MODULES}
    assert set(RANK) | {"commands", "plugin"} <= parts


def test_lower_layers_never_import_higher_ones():
    wrong = [
        f"{_where(s, line)} imports {t}"
        for s, t, line, _f in EDGES
        if _part(s) not in TOP
        and _part(t) not in RANK
        and _part(t) != "__init__"
        or _part(s) in RANK
        and _part(t) in RANK
        and RANK[_part(t)] > RANK[_part(s)]
    ]
    assert not wrong, "\n".join(wrong)


def test_a_features_prefect_module_is_used_only_inside_its_feature():
    wrong = [
        f"{_where(s, line)} imports {t}"
        for s, t, line, _f in EDGES
        if t.endswith(".prefect")
        and _part(t) != "platform"
        and _part(s) not in (_part(t), "commands")
    ]
    assert not wrong, "\n".join(wrong)


def test_no_module_imports_another_inside_a_function():
    # Except the command line: `scriptflow user add` must not pay for Prefect's import.
    wrong = [
        f"{_where(s, line)} imports {t}"
        for s, t, line, in_function in EDGES
        if in_function and _part(s) != "commands"
    ]
    assert not wrong, "\n".join(wrong)


def test_there_is_no_import_cycle():
    graph = defaultdict(set)
    for s, t, _line, _f in EDGES:
        if s != t and not s.startswith(t + "."):  # a package's own __init__ is not a cycle
            graph[s].add(t)
    cycles, state = [], {}

    def walk(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join([*stack[stack.index(nxt) :], nxt]))
            elif nxt not in state:
                walk(nxt, [*stack, nxt])
        state[node] = "done"

    for module in sorted(MODULES):
        if module not in state:
            walk(module, [module])
    assert not cycles, "\n".join(cycles)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_it_keeps_modules_small(module):
    lines = len(MODULES[module].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{MODULES[module].relative_to(ROOT)} has {lines} lines"


def test_prefects_private_modules_are_wrapped_in_one_place():
    wrong = []
    for source, path in MODULES.items():
        for target, line, _f in _imports(path):
            if target.startswith(("prefect.server", "prefect._internal")):
                if PRIVATE_PREFECT.get(target) != source:
                    wrong.append(f"{_where(source, line)} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_the_command_line_loads_without_prefect():
    """Prefect reads its settings when imported: the stack must point it at ScriptFlow's
    server first (an early import made every client start a temporary server of its own)."""
    import subprocess
    import sys

    code = (
        "import sys, scriptflow_prefect.commands.cli, scriptflow_prefect.commands.stack; "
        "print(sorted(m for m in sys.modules if m == 'prefect' or m.startswith('prefect.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
