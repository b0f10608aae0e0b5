"""schemas/*.sql is the DDL the code creates: regenerate with scripts/write_schemas.py."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent

# MySQL's table options after CREATE TABLE's closing parenthesis. SQLAlchemy before 2.1
# renders them in an order that varies with the interpreter's string hashing (a set): the
# same options in another order are the same table.
_TABLE_OPTIONS = re.compile(r"\)((?:ENGINE=|CHARSET=|COLLATE )[^;]*);")
_OPTION = re.compile(r"ENGINE=\S+|CHARSET=\S+|COLLATE \S+")


def _in_one_order(ddl: str) -> str:
    def sort(match: re.Match[str]) -> str:
        return ")" + " ".join(sorted(_OPTION.findall(match.group(1)))) + ";"

    return _TABLE_OPTIONS.sub(sort, ddl)


def _write_schemas() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "write_schemas", ROOT / "scripts/write_schemas.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("file_name", ["postgresql.sql", "mysql.sql", "sqlite.sql"])
def test_schema_files_match_the_code(file_name: str) -> None:
    written = (ROOT / "schemas" / file_name).read_text()
    expected: str = _write_schemas().expected_schemas()[file_name]
    assert _in_one_order(written) == _in_one_order(expected), (
        f"schemas/{file_name} is out of date: run `python scripts/write_schemas.py`"
    )


def test_the_packaged_ddl_matches_the_code() -> None:
    """`sessionmeta ddl` prints the default tables from the package's rendered copy."""
    packaged = ROOT / "src/sessionmeta/cli/rendered_ddl.json"
    rendered: str = _write_schemas().rendered_ddl()
    assert _in_one_order(packaged.read_text()) == _in_one_order(rendered), (
        "src/sessionmeta/cli/rendered_ddl.json is out of date: run "
        "`python scripts/write_schemas.py`"
    )


def test_table_options_in_another_order_are_the_same_table() -> None:
    one = "CREATE TABLE t (\n\tx INT\n)ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_bin;\n"
    other = "CREATE TABLE t (\n\tx INT\n)CHARSET=utf8mb4 ENGINE=InnoDB COLLATE utf8mb4_bin;\n"
    changed = "CREATE TABLE t (\n\tx INT\n)ENGINE=InnoDB CHARSET=latin1 COLLATE utf8mb4_bin;\n"
    assert _in_one_order(one) == _in_one_order(other)
    assert _in_one_order(one) != _in_one_order(changed)
