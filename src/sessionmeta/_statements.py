"""The store's SQL, built once with SQLAlchemy Core and compiled once per dialect.

Compiled statements are run straight on the driver connection by ``_driver``;
this module only builds them. Dialect differences live in :class:`_Dialect`
subclasses: how to insert-or-ignore, how to upsert, how to match a list of keys.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ClauseElement, ColumnElement, Text, bindparam, delete, func, select
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import Insert

from ._codec import EncodedValue
from ._schema import Tables
from .errors import UnsupportedDialectError

__all__ = ["CompiledStatement", "Statements", "statements_for"]


@dataclass(frozen=True)
class CompiledStatement:
    """SQL text in the driver's own parameter style, and how to order its arguments."""

    sql: str
    names: tuple[str, ...]
    defaults: Mapping[str, Any]

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        defaults = self.defaults
        return [params[name] if name in params else defaults[name] for name in self.names]


def compile_statement(statement: Executable, dialect: Dialect) -> CompiledStatement:
    assert isinstance(statement, ClauseElement)
    compiled = statement.compile(dialect=dialect)
    assert isinstance(compiled, SQLCompiler)
    names = tuple(compiled.positiontup or ())
    defaults = {name: compiled.binds[name].value for name in names if name in compiled.binds}
    return CompiledStatement(str(compiled), names, defaults)


def _key_params(prefix: str, count: int) -> list[ColumnElement[Any]]:
    return [bindparam(f"{prefix}{index}") for index in range(count)]


class _Dialect:
    """How one family of databases spells what standard SQL leaves open."""

    # Whether one statement can create the session row and write the values.
    upsert_creates_session = False
    # Whether a list of keys is passed as one array parameter (one statement for any count).
    keys_as_array = False

    def __init__(self, tables: Tables) -> None:
        self.tables = tables

    def key_in(self, count: int) -> ColumnElement[bool]:
        return self.tables.values.c.key.in_(_key_params("key", count))

    def key_params(self, keys: Sequence[str]) -> dict[str, Any]:
        return {f"key{index}": key for index, key in enumerate(keys)}

    def insert_session(self) -> Executable:
        raise NotImplementedError

    def upsert(self, count: int) -> Executable:
        raise NotImplementedError

    def claim(self, count: int) -> Executable:
        """Insert values whose keys the session lacks; keep stored ones (a scope's claim)."""
        raise NotImplementedError

    def upsert_params(self, session_id: str, rows: Sequence[EncodedValue]) -> dict[str, Any]:
        return self.row_params(session_id, rows)

    def row_params(self, session_id: str, rows: Sequence[EncodedValue]) -> dict[str, Any]:
        params: dict[str, Any] = {"session_id": session_id}
        for index, row in enumerate(rows):
            params[f"s{index}"] = session_id
            params[f"k{index}"] = row.key
            params[f"v{index}"] = row.value
            params[f"h{index}"] = row.value_hash
            params[f"o{index}"] = row.sort_key
        return params

    def delete_items(self, key_count: int) -> Executable:
        items = self.tables.items
        return delete(items).where(
            items.c.session_id == bindparam("session_id"),
            items.c.key.in_(_key_params("key", key_count)),
        )

    def insert_items(self, count: int) -> Executable:
        return self.tables.items.insert().values(
            [
                {
                    "session_id": bindparam("session_id"),
                    "key": bindparam(f"ik{index}"),
                    "value_hash": bindparam(f"ivh{index}"),
                    "item_hash": bindparam(f"ih{index}"),
                }
                for index in range(count)
            ]
        )

    def _rows(self, count: int) -> list[dict[str, Any]]:
        return [
            {
                "session_id": bindparam(f"s{index}"),
                "key": bindparam(f"k{index}"),
                "value": bindparam(f"v{index}"),
                "value_hash": bindparam(f"h{index}"),
                "sort_key": bindparam(f"o{index}"),
            }
            for index in range(count)
        ]


class _PostgreSQL(_Dialect):
    upsert_creates_session = True
    keys_as_array = True

    def key_in(self, count: int) -> ColumnElement[bool]:
        # One statement for any number of keys: the prepared plan is reused.
        keys = bindparam("keys", type_=postgresql.ARRAY(Text))
        return self.tables.values.c.key == func.any(keys)

    def key_params(self, keys: Sequence[str]) -> dict[str, Any]:
        return {"keys": list(keys)}

    def insert_session(self) -> Executable:
        return (
            postgresql.insert(self.tables.sessions)
            .values(session_id=bindparam("session_id"))
            .on_conflict_do_nothing(index_elements=["session_id"])
        )

    def upsert(self, count: int) -> Executable:
        values = self.tables.values
        new_session = self.insert_session().cte("new_session")  # type: ignore[attr-defined]
        rows = (
            func.unnest(
                bindparam("keys", type_=postgresql.ARRAY(Text)),
                bindparam("vals", type_=postgresql.ARRAY(Text)),
                bindparam("hashes", type_=postgresql.ARRAY(Text)),
                bindparam("sort_keys", type_=postgresql.ARRAY(Text)),
            )
            .table_valued("key", "value", "value_hash", "sort_key")
            .render_derived(name="new_values")
        )
        # Lock an existing session row (FOR KEY SHARE, which writers share) before any
        # value row: a concurrent delete of the session then waits for this statement,
        # or this one for it, instead of the two deadlocking over the cascade.
        sessions = self.tables.sessions
        locked = (
            select(sessions.c.session_id)
            .where(sessions.c.session_id == bindparam("session_id"))
            .with_for_update(read=True, key_share=True)
            .cte("locked_session")
        )
        insert = postgresql.insert(values).from_select(
            ["session_id", "key", "value", "value_hash", "sort_key"],
            select(
                bindparam("session_id", type_=values.c.session_id.type),
                rows.c.key,
                rows.c.value,
                rows.c.value_hash,
                rows.c.sort_key,
            ).where(select(func.count()).select_from(locked).scalar_subquery() >= 0),
        )
        return insert.on_conflict_do_update(
            index_elements=["session_id", "key"],
            set_={
                "value": insert.excluded.value,
                "value_hash": insert.excluded.value_hash,
                "sort_key": insert.excluded.sort_key,
                "updated_at": func.current_timestamp(),
            },
        ).add_cte(new_session, *self._item_ctes())

    def claim(self, count: int) -> Executable:
        insert = postgresql.insert(self.tables.values).values(self._rows(count))
        new_session = self.insert_session().cte("new_session")  # type: ignore[attr-defined]
        return insert.on_conflict_do_nothing(index_elements=["session_id", "key"]).add_cte(
            new_session
        )

    def _item_ctes(self) -> list[Any]:
        """Keep the items table in step within the same statement.

        Deleted rows are those of an older value (another value hash), inserted
        rows those of the new one: the two sets never meet, so the order in which
        PostgreSQL runs the sub-statements does not matter.
        """
        items = self.tables.items
        text_array = postgresql.ARRAY(Text)
        session_id = bindparam("session_id", type_=items.c.session_id.type)
        gone = delete(items).where(
            items.c.session_id == session_id,
            items.c.key == func.any(bindparam("collection_keys", type_=text_array)),
            items.c.value_hash != func.all(bindparam("collection_hashes", type_=text_array)),
        )
        rows = (
            func.unnest(
                bindparam("item_keys", type_=text_array),
                bindparam("item_value_hashes", type_=text_array),
                bindparam("item_hashes", type_=text_array),
            )
            .table_valued("key", "value_hash", "item_hash")
            .render_derived(name="new_item_rows")
        )
        added = (
            postgresql.insert(items)
            .from_select(
                ["session_id", "key", "value_hash", "item_hash"],
                select(session_id, rows.c.key, rows.c.value_hash, rows.c.item_hash),
            )
            .on_conflict_do_nothing()
        )
        return [gone.cte("gone_items"), added.cte("new_items")]

    def upsert_params(self, session_id: str, rows: Sequence[EncodedValue]) -> dict[str, Any]:
        collections = [row for row in rows if row.items is not None]
        items = [(row.key, row.value_hash, item) for row in collections for item in row.items or ()]
        return {
            "session_id": session_id,
            "keys": [row.key for row in rows],
            "vals": [row.value for row in rows],
            "hashes": [row.value_hash for row in rows],
            "sort_keys": [row.sort_key for row in rows],
            "collection_keys": [row.key for row in collections],
            "collection_hashes": [row.value_hash for row in collections],
            "item_keys": [key for key, _, _ in items],
            "item_value_hashes": [value_hash for _, value_hash, _ in items],
            "item_hashes": [item for _, _, item in items],
        }


class _SQLite(_Dialect):
    def insert_session(self) -> Executable:
        return (
            sqlite.insert(self.tables.sessions)
            .values(session_id=bindparam("session_id"))
            .on_conflict_do_nothing(index_elements=["session_id"])
        )

    def upsert(self, count: int) -> Executable:
        insert = sqlite.insert(self.tables.values).values(self._rows(count))
        return insert.on_conflict_do_update(
            index_elements=["session_id", "key"],
            set_={
                "value": insert.excluded.value,
                "value_hash": insert.excluded.value_hash,
                "sort_key": insert.excluded.sort_key,
                "updated_at": func.current_timestamp(),
            },
        )

    def claim(self, count: int) -> Executable:
        insert = sqlite.insert(self.tables.values).values(self._rows(count))
        return insert.on_conflict_do_nothing(index_elements=["session_id", "key"])


class _MySQL(_Dialect):
    def insert_session(self) -> Executable:
        # Not INSERT IGNORE: its duplicate-key warning surfaces as a Python warning.
        sessions = self.tables.sessions
        insert = mysql.insert(sessions).values(session_id=bindparam("session_id"))
        return insert.on_duplicate_key_update(session_id=sessions.c.session_id)

    def upsert(self, count: int) -> Executable:
        insert: Insert = mysql.insert(self.tables.values).values(self._rows(count))
        return insert.on_duplicate_key_update(  # type: ignore[attr-defined,no-any-return]
            value=insert.inserted.value,  # type: ignore[attr-defined]
            value_hash=insert.inserted.value_hash,  # type: ignore[attr-defined]
            sort_key=insert.inserted.sort_key,  # type: ignore[attr-defined]
            updated_at=func.current_timestamp(),
        )

    def claim(self, count: int) -> Executable:
        values = self.tables.values
        insert = mysql.insert(values).values(self._rows(count))
        return insert.on_duplicate_key_update(session_id=values.c.session_id)


_DIALECTS: dict[str, type[_Dialect]] = {
    "postgresql": _PostgreSQL,
    "sqlite": _SQLite,
    "mysql": _MySQL,
    "mariadb": _MySQL,
}


@dataclass
class Statements:
    """Every statement the store runs, compiled for one dialect, built on first use."""

    dialect: Dialect
    spelling: _Dialect
    _cache: dict[tuple[str, int], CompiledStatement] = field(default_factory=dict)

    def _compiled(self, name: str, count: int, build: Any) -> CompiledStatement:
        cache_key = (name, count)
        compiled = self._cache.get(cache_key)
        if compiled is None:
            compiled = self._cache[cache_key] = compile_statement(build(), self.dialect)
        return compiled

    @property
    def upsert_creates_session(self) -> bool:
        return self.spelling.upsert_creates_session

    def insert_session(self) -> CompiledStatement:
        return self._compiled("insert_session", 0, self.spelling.insert_session)

    def upsert(self, count: int) -> CompiledStatement:
        # PostgreSQL's statement takes arrays: one shape for any count.
        shape = 0 if self.spelling.upsert_creates_session else count
        return self._compiled("upsert", shape, lambda: self.spelling.upsert(count))

    def claim(self, count: int) -> CompiledStatement:
        return self._compiled("claim", count, lambda: self.spelling.claim(count))

    def delete_items(self, key_count: int) -> CompiledStatement:
        """Where the upsert does not keep items in step: drop the items of rewritten keys."""
        build = lambda: self.spelling.delete_items(key_count)  # noqa: E731
        return self._compiled("delete_items", key_count, build)

    def insert_items(self, count: int) -> CompiledStatement:
        return self._compiled("insert_items", count, lambda: self.spelling.insert_items(count))

    def select_values(self, key_count: int | None) -> CompiledStatement:
        values = self.tables.values

        def build() -> Executable:
            query = select(values.c.key, values.c.value).where(
                values.c.session_id == bindparam("session_id")
            )
            if key_count is not None:
                query = query.where(self.spelling.key_in(key_count))
            return query

        return self._compiled("select_values", self._key_shape(key_count), build)

    def delete_values(self, key_count: int | None) -> CompiledStatement:
        values = self.tables.values

        def build() -> Executable:
            statement = delete(values).where(values.c.session_id == bindparam("session_id"))
            if key_count is not None:
                statement = statement.where(self.spelling.key_in(key_count))
            return statement

        return self._compiled("delete_values", self._key_shape(key_count), build)

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

        return self._compiled("find_equal", 0, build)

    @property
    def tables(self) -> Tables:
        return self.spelling.tables

    def _key_shape(self, key_count: int | None) -> int:
        if key_count is None:
            return -1
        return 0 if self.spelling.keys_as_array else key_count


def statements_for(dialect: Dialect, tables: Tables) -> Statements:
    """The statements for ``dialect``; raise :class:`UnsupportedDialectError` for others."""
    spelling = _DIALECTS.get(dialect.name)
    if spelling is None:
        supported = ", ".join(sorted(_DIALECTS))
        raise UnsupportedDialectError(
            f"sessionmeta does not support the {dialect.name!r} database; it supports {supported}"
        )
    return Statements(dialect, spelling(tables))
