"""What starting up imports: `import sessionmeta`, `sessionmeta --help` and `ddl` stay light.

Measured by the modules a fresh interpreter imports (``python -X importtime``), not by
the clock: Pydantic, the store and SQLAlchemy's asyncio layer and ORM are what made
every command take about a second before the first line of output.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

import sessionmeta

from .test_cli import ROOT, cli_env

HEAVY = ("pydantic", "sqlalchemy.ext.asyncio", "sqlalchemy.orm", "sessionmeta.io", "asyncpg")


def imported_by(*args: str) -> set[str]:
    """Every module a fresh interpreter imports to run ``python -X importtime ARGS``."""
    process = subprocess.run(
        [sys.executable, "-X", "importtime", *args],
        cwd=ROOT,
        env=cli_env(None),
        capture_output=True,
        text=True,
        check=False,
    )
    # Lines read "import time: self | cumulative | <indent>module".
    return {
        line.rsplit("|", 1)[1].strip()
        for line in process.stderr.splitlines()
        if line.startswith("import time:") and not line.rstrip().endswith("imported package")
    }


def heavy(modules: set[str], *prefixes: str) -> list[str]:
    return sorted(
        name
        for name in modules
        for prefix in prefixes
        if name == prefix or name.startswith(prefix + ".")
    )


def test_import_sessionmeta_imports_neither_pydantic_nor_sqlalchemy() -> None:
    modules = imported_by("-c", "import sessionmeta")
    assert "sessionmeta" in modules
    assert heavy(modules, "pydantic", "sqlalchemy") == []


def test_help_imports_neither_pydantic_nor_sqlalchemy() -> None:
    modules = imported_by("-m", "sessionmeta", "--help")
    assert "sessionmeta.cli" in modules
    assert heavy(modules, "pydantic", "sqlalchemy", "asyncio") == []


@pytest.mark.parametrize(
    "options", [["--help"], ["--dialect", "postgresql"], ["--dialect", "mysql", "--if-not-exists"]]
)
def test_ddl_of_the_default_tables_imports_no_sqlalchemy(options: list[str]) -> None:
    modules = imported_by("-m", "sessionmeta", "ddl", *options)
    assert heavy(modules, "pydantic", "sqlalchemy", "asyncio") == []


def test_ddl_of_other_tables_imports_sqlalchemy_core_only() -> None:
    modules = imported_by(
        "-m", "sessionmeta", "ddl", "--dialect", "sqlite", "--metadata-table", "m"
    )
    assert heavy(modules, "sqlalchemy.sql") != []
    assert heavy(modules, *HEAVY) == []


def test_a_database_command_imports_the_store() -> None:
    # The same probe sees the heavy modules where they are needed: it is not blind.
    modules = imported_by("-m", "sessionmeta", "show", "s", "--url", "sqlite:///missing.db")
    assert heavy(modules, "pydantic", "sessionmeta.io.store") != []


def test_every_public_name_resolves() -> None:
    for name in sessionmeta.__all__:
        assert getattr(sessionmeta, name) is not None, name
    assert set(sessionmeta.__all__) <= set(dir(sessionmeta))
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = sessionmeta.Nope  # type: ignore[attr-defined]
