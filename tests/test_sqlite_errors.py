"""SQLite's errors are told apart by their code, and on Python 3.10, whose sqlite3 errors
carry no code (``sqlite_errorcode`` came in 3.11), by SQLite's own message: the same kinds
either way, so a write to a new session and a busy database behave alike on every Python."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from sessionmeta.sql.dialects import backend_named


def missing_parent(db: sqlite3.Connection) -> None:
    db.execute("INSERT INTO child VALUES ('nobody')")


def duplicate_key(db: sqlite3.Connection) -> None:
    db.execute("INSERT INTO parent VALUES ('a')")
    db.execute("INSERT INTO parent VALUES ('a')")


def table_exists(db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE parent (id TEXT PRIMARY KEY)")


CASES: dict[str, tuple[Callable[[sqlite3.Connection], None], str]] = {
    "foreign key": (missing_parent, "missing_session"),
    "primary key": (duplicate_key, "unique"),
    "create": (table_exists, "already_exists"),
}


def raised(action: Callable[[sqlite3.Connection], None], path: Path) -> sqlite3.Error:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA foreign_keys = ON")
        db.execute("CREATE TABLE parent (id TEXT PRIMARY KEY)")
        db.execute("CREATE TABLE child (id TEXT REFERENCES parent (id))")
        with pytest.raises(sqlite3.Error) as caught:
            action(db)
        return caught.value
    finally:
        db.close()


def without_code(error: sqlite3.Error) -> sqlite3.Error:
    """The error as Python 3.10 raises it: its class and message, no code."""
    copy = type(error)(*error.args)
    assert getattr(copy, "sqlite_errorcode", None) is None
    return copy


@pytest.mark.parametrize("case", list(CASES))
def test_errors_are_classified_with_or_without_their_code(case: str, tmp_path: Path) -> None:
    action, kind = CASES[case]
    error = raised(action, tmp_path / "errors.sqlite3")
    classify = backend_named("sqlite").error_kind
    assert classify(error) == kind
    assert classify(without_code(error)) == kind


def test_a_busy_database_is_transient_with_or_without_its_code(tmp_path: Path) -> None:
    path = tmp_path / "busy.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None)
    waiter = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        holder.execute("CREATE TABLE t (x)")
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(sqlite3.OperationalError) as caught:
            waiter.execute("BEGIN IMMEDIATE")
    finally:
        holder.close()
        waiter.close()
    classify = backend_named("sqlite").error_kind
    assert classify(caught.value) == "transient"
    assert classify(without_code(caught.value)) == "transient"


def test_other_errors_are_left_unclassified() -> None:
    error = sqlite3.OperationalError('near "SELEC": syntax error')
    assert backend_named("sqlite").error_kind(error) is None
