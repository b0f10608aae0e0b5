"""schemas/*.sql is the DDL the code creates: regenerate with scripts/write_schemas.py."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _expected() -> dict[str, str]:
    spec = importlib.util.spec_from_file_location(
        "write_schemas", ROOT / "scripts/write_schemas.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    expected: dict[str, str] = module.expected_schemas()
    return expected


@pytest.mark.parametrize("file_name", ["postgresql.sql", "mysql.sql", "sqlite.sql"])
def test_schema_files_match_the_code(file_name: str) -> None:
    written = (ROOT / "schemas" / file_name).read_text()
    assert written == _expected()[file_name], (
        f"schemas/{file_name} is out of date: run `python scripts/write_schemas.py`"
    )


def test_the_packaged_ddl_matches_the_code() -> None:
    """`sessionmeta ddl` prints the default tables from the package's rendered copy."""
    spec = importlib.util.spec_from_file_location(
        "write_schemas", ROOT / "scripts/write_schemas.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    packaged = ROOT / "src/sessionmeta/cli/rendered_ddl.json"
    assert packaged.read_text() == module.rendered_ddl(), (
        "src/sessionmeta/cli/rendered_ddl.json is out of date: run "
        "`python scripts/write_schemas.py`"
    )
