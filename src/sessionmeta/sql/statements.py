"""The store's SQL, built once with SQLAlchemy Core and compiled once per dialect.

This module only builds statements; ``sessionmeta.io.database`` runs them.
How each backend spells an upsert or a key list comes from its
:class:`~sessionmeta.sql.dialects.Spelling`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ClauseElement, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import Executable
from sqlalchemy.sql.compiler import SQLCompiler

from sessionmeta.sql.dialects import Backend, Spelling, backend_for
from sessionmeta.sql.schema import Tables

__all__ = ["CompiledStatement", "Statements", "compile_statement", "statements_for"]


@dataclass(frozen=True)
class CompiledStatement:
    """SQL text in the driver's own parameter style, and how to pass it its parameters."""

    sql: str
    # Parameter names in order for a positional style (qmark, format, $n); empty for a
    # named one (psycopg's pyformat), which takes a mapping.
    names: tuple[str, ...]
    positional: bool
    defaults: Mapping[str, Any]

    def args(self, params: Mapping[str, Any]) -> list[Any] | dict[str, Any]:
        defaults = self.defaults
        if self.positional:
            return [params[name] if name in params else defaults[name] for name in self.names]
        return {**defaults, **params}


def compile_statement(statement: Executable, dialect: Dialect) -> CompiledStatement:
    assert isinstance(statement, ClauseElement)
    compiled = statement.compile(dialect=dialect)
    assert isinstance(compiled, SQLCompiler)
    positional = bool(compiled.positional)
    names = tuple(compiled.positiontup or ()) if positional else tuple(compiled.binds)
    defaults = {
        name: compiled.binds[name].value
        for name in names
        if name in compiled.binds and compiled.binds[name].value is not None
    }
    return CompiledStatement(str(compiled), names if positional else (), positional, defaults)


@dataclass
class Statements:
    """Every statement the store runs, compiled for one dialect, built on first use."""

    dialect: Dialect
    backend: Backend
    spelling: Spelling
    _cache: dict[tuple[str, int], CompiledStatement] = field(default_factory=dict)

    @property
    def tables(self) -> Tables:
        return self.spelling.tables

    def compiled(self, name: str, count: int, build: Callable[[], Executable]) -> CompiledStatement:
        """``build()`` compiled once per ``(name, count)``."""
        cache_key = (name, count)
        found = self._cache.get(cache_key)
        if found is None:
            found = self._cache[cache_key] = compile_statement(build(), self.dialect)
        return found

    @property
    def upsert_creates_session(self) -> bool:
        return self.spelling.upsert_creates_session

    def insert_session(self) -> CompiledStatement:
        return self.compiled("insert_session", 0, self.spelling.insert_session)

    def upsert(self, count: int) -> CompiledStatement:
        # PostgreSQL's statement takes arrays: one shape for any count.
        shape = 0 if self.spelling.upsert_creates_session else count
        return self.compiled("upsert", shape, lambda: self.spelling.upsert(count))

    def delete_items(self, key_count: int) -> CompiledStatement:
        """Where the upsert does not keep items in step: drop the items of rewritten keys."""
        return self.compiled(
            "delete_items", key_count, lambda: self.spelling.delete_items(key_count)
        )

    def insert_items(self, count: int) -> CompiledStatement:
        return self.compiled("insert_items", count, lambda: self.spelling.insert_items(count))

    def select_values(self, key_count: int | None) -> CompiledStatement:
        values = self.tables.values

        def build() -> Executable:
            query = select(values.c.key, values.c.value).where(
                values.c.session_id == bindparam("session_id")
            )
            if key_count is not None:
                query = query.where(self.spelling.key_in(key_count))
            return query

        return self.compiled("select_values", self._key_shape(key_count), build)

    def delete_values(self, key_count: int | None) -> CompiledStatement:
        values = self.tables.values

        def build() -> Executable:
            statement = delete(values).where(values.c.session_id == bindparam("session_id"))
            if key_count is not None:
                statement = statement.where(self.spelling.key_in(key_count))
            return statement

        return self.compiled("delete_values", self._key_shape(key_count), build)

    def find_equal(self) -> CompiledStatement:
        values = self.tables.values

        def build() -> Executable:
            return (
                select(values.c.session_id)
                .where(
                    values.c.key == bindparam("key"),
                    values.c.value_hash == bindparam("value_hash"),
                )
                .order_by(values.c.session_id)
                .limit(bindparam("limit"))
            )

        return self.compiled("find_equal", 0, build)

    def session_rows(self) -> CompiledStatement:
        """Every row of one session with its hash, in one statement (one snapshot)."""
        values = self.tables.values
        return self.compiled(
            "session_rows",
            0,
            lambda: select(values.c.key, values.c.value, values.c.value_hash).where(
                values.c.session_id == bindparam("session_id")
            ),
        )

    def delete_history(self, messages_table: str) -> CompiledStatement:
        """Delete one session's messages from the Agents SDK's table; the session stays."""
        messages = self.tables.metadata.tables[messages_table]
        return self.compiled(
            f"delete_history:{messages_table}",
            0,
            lambda: delete(messages).where(messages.c.session_id == bindparam("session_id")),
        )

    def append_history(self, messages_table: str) -> CompiledStatement:
        """Append one message (its stored JSON text) to a session's history."""
        messages = self.tables.metadata.tables[messages_table]
        return self.compiled(
            f"append_history:{messages_table}",
            0,
            lambda: insert(messages).values(
                session_id=bindparam("session_id"), message_data=bindparam("message_data")
            ),
        )

    def touch_session(self) -> CompiledStatement:
        sessions = self.tables.sessions
        return self.compiled(
            "touch_session",
            0,
            lambda: update(sessions)
            .where(sessions.c.session_id == bindparam("session_id"))
            .values(updated_at=func.current_timestamp()),
        )

    def lock_session(self) -> CompiledStatement:
        """Lock the session row: every locked transaction on the session queues here.

        ``FOR UPDATE`` conflicts with the ``FOR KEY SHARE`` a plain write takes on
        PostgreSQL, and with the shared lock of InnoDB's foreign-key check. SQLite
        renders no lock: its write transaction is the lock.
        """
        sessions = self.tables.sessions
        return self.compiled(
            "lock_session",
            0,
            lambda: (
                select(sessions.c.session_id)
                .where(sessions.c.session_id == bindparam("session_id"))
                .with_for_update()
            ),
        )

    def lock_rows(self) -> CompiledStatement:
        """Every row of one session with its hash, the value rows locked against writers."""
        values = self.tables.values
        return self.compiled(
            "lock_rows",
            0,
            lambda: (
                select(values.c.key, values.c.value, values.c.value_hash)
                .where(values.c.session_id == bindparam("session_id"))
                .with_for_update()
            ),
        )

    def scan(self, batch_size: int, *, after: bool) -> CompiledStatement:
        """One batch of every stored row in primary-key order, from the start or after a key."""
        values = self.tables.values

        def build() -> Executable:
            query = select(values.c.session_id, values.c.key, values.c.value, values.c.value_hash)
            if after:
                # Spelled out rather than as a row comparison: MariaDB scans the whole
                # index for `(a, b) > (x, y)`, while `a >= x` is a range on every database.
                query = query.where(
                    values.c.session_id >= bindparam("after_session"),
                    or_(
                        values.c.session_id > bindparam("after_session"),
                        values.c.key > bindparam("after_key"),
                    ),
                )
            return query.order_by(values.c.session_id, values.c.key).limit(batch_size)

        return self.compiled("scan_after" if after else "scan", batch_size, build)

    def rehash(self) -> CompiledStatement:
        """Give a row a recomputed hash, if it still holds the text the hash was made from."""
        values = self.tables.values
        return self.compiled(
            "rehash",
            0,
            lambda: (
                values.update()
                .where(
                    values.c.session_id == bindparam("session_id"),
                    values.c.key == bindparam("key"),
                    values.c.value == bindparam("value"),
                    values.c.value_hash == bindparam("old_hash"),
                )
                .values(value_hash=bindparam("new_hash"))
            ),
        )

    def count_rows(self) -> CompiledStatement:
        values = self.tables.values
        return self.compiled("count_rows", 0, lambda: select(func.count()).select_from(values))

    def _key_shape(self, key_count: int | None) -> int:
        if key_count is None:
            return -1
        return 0 if self.spelling.keys_as_array else key_count


def statements_for(dialect: Dialect, tables: Tables) -> Statements:
    """The statements for ``dialect``; raise :class:`UnsupportedDialectError` for others."""
    backend = backend_for(dialect)
    return Statements(dialect, backend, backend.spelling(tables))
