"""The layering of docs/architecture.md, held against the code's own imports and calls."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import sessionmeta

PACKAGE = Path(sessionmeta.__file__).resolve().parent
MODULES = {
    ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): path
    for path in PACKAGE.rglob("*.py")
}
TREES = {name: ast.parse(path.read_text(), str(path)) for name, path in MODULES.items()}

# What each layer may not import (of ours, and of the outside world).
FORBIDDEN = {
    "sessionmeta.core": (
        "sessionmeta.sql",
        "sessionmeta.io",
        "sessionmeta.agents",
        "sessionmeta.cli",
        "sessionmeta.fastapi",
        "sessionmeta.web",
        "fastapi",
        "starlette",
        "sqlalchemy",
        "asyncpg",
        "aiosqlite",
        "aiomysql",
    ),
    "sessionmeta.sql": (
        "sessionmeta.io",
        "sessionmeta.agents",
        "sessionmeta.cli",
        "sessionmeta.fastapi",
        "sessionmeta.web",
        "fastapi",
        "starlette",
        "asyncpg",
        "aiosqlite",
        "aiomysql",
    ),
    "sessionmeta.io": (
        "sessionmeta.agents",
        "sessionmeta.cli",
        "sessionmeta.fastapi",
        "sessionmeta.web",
        "fastapi",
        "starlette",
    ),
    # The pages are an integration: the store's API, never the command line.
    "sessionmeta.web": ("sessionmeta.cli", "sessionmeta.agents", "sessionmeta.fastapi"),
    "sessionmeta.errors": ("sessionmeta.",),
}
THE_SEAM = {"sessionmeta.io.database", "sessionmeta.io.drivers"}
# SQLAlchemy's and the drivers' own ways in; the seam's fetch/execute/run are the way.
CONNECTION_CALLS = {
    "raw_connection",
    "exec_driver_sql",
    "driver_connection",
    "run_sync",
    "connect",
    "begin",
    "start",
    "scalar",
    "stream",
}
DIALECT_NAMES = {"sqlite", "postgresql", "postgres", "mysql", "mariadb"}


def imports_of(tree: ast.AST, module: str) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.rsplit(".", node.level)[0]
                found.add(f"{base}.{node.module}" if node.module else base)
            elif node.module:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module: str) -> None:
    imported = imports_of(TREES[module], module)
    for layer, forbidden in FORBIDDEN.items():
        if module == layer or module.startswith(layer + "."):
            wrong = sorted(
                name for name in imported for prefix in forbidden if name.startswith(prefix)
            )
            assert not wrong, f"{module} ({layer}) imports {wrong}"


def test_no_import_cycles() -> None:
    graph = {
        module: {
            other
            for name in imports_of(TREES[module], module)
            for other in MODULES
            if other != module and name == other and other != "sessionmeta"
        }
        for module in MODULES
    }
    visiting: list[str] = []
    done: set[str] = set()

    def visit(module: str) -> None:
        if module in done:
            return
        assert module not in visiting, " -> ".join([*visiting[visiting.index(module) :], module])
        visiting.append(module)
        for other in graph[module]:
            visit(other)
        visiting.pop()
        done.add(module)

    for module in graph:
        visit(module)


@pytest.mark.parametrize("module", sorted(set(MODULES) - THE_SEAM))
def test_only_the_seam_talks_to_connections(module: str) -> None:
    # Statements run through Database.run and its Connection; nothing else opens or uses one.
    awaited = [
        node.value.func.attr
        for node in ast.walk(TREES[module])
        if isinstance(node, ast.Await)
        and isinstance(node.value, ast.Call)
        and isinstance(node.value.func, ast.Attribute)
        and node.value.func.attr in CONNECTION_CALLS
    ]
    assert not awaited, f"{module} awaits {awaited} on a connection of its own"


@pytest.mark.parametrize("module", sorted(set(MODULES) - {"sessionmeta.sql.dialects"}))
def test_no_dialect_branches_outside_the_registry(module: str) -> None:
    branches = [
        ast.unparse(node)
        for node in ast.walk(TREES[module])
        if isinstance(node, ast.Compare)
        and any(
            (isinstance(part, ast.Constant) and part.value in DIALECT_NAMES)
            or (
                isinstance(part, (ast.Tuple, ast.List, ast.Set))
                and any(isinstance(e, ast.Constant) and e.value in DIALECT_NAMES for e in part.elts)
            )
            for part in [node.left, *node.comparators]
        )
    ]
    assert not branches, f"{module} branches on a dialect: {branches}"
