"""The one registry of backends: everything that differs between the databases.

Each :class:`Backend` says how its family of databases spells what standard SQL
leaves open (upserts, insert-or-ignore, key lists), which driver errors mean a
concurrent abort, a missing session row or a lost connection, and the small
habits of its engine (SQLite's write lock, PostgreSQL's arrays). No other
module branches on a dialect name: they ask :func:`backend_for`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    Index,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    cast,
    delete,
    func,
    literal_column,
    select,
)
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.schema import CreateIndex, CreateTable
from sqlalchemy.sql import Executable
from sqlalchemy.sql.dml import Insert
from sqlalchemy.types import TypeEngine

from sessionmeta.errors import UnsupportedDialectError
from sessionmeta.sql.expiry import MYSQL_CLOCK, POSTGRES_CLOCK, SQLITE_CLOCK, Clock, ttl_param
from sessionmeta.sql.schema import Tables

if TYPE_CHECKING:
    # Annotations only: `sessionmeta ddl` builds statements without importing Pydantic.
    from sessionmeta.core.codec import EncodedValue

__all__ = [
    "BACKENDS",
    "Backend",
    "ErrorKind",
    "ParentColumns",
    "Spelling",
    "backend_for",
    "backend_named",
    "create_ddl",
]


def _key_params(prefix: str, count: int) -> list[ColumnElement[Any]]:
    return [bindparam(name) for name in _names(prefix, count)[:count]]


_NAMES: dict[str, tuple[str, ...]] = {}


def _names(prefix: str, count: int) -> tuple[str, ...]:
    """At least ``count`` parameter names ``prefix0``, ``prefix1``...: made once, not per row."""
    names = _NAMES.get(prefix, ())
    if len(names) < count:
        names = tuple(f"{prefix}{index}" for index in range(max(count, 2 * len(names))))
        _NAMES[prefix] = names
    return names


def _named(prefix: str, values: Sequence[Any]) -> Iterator[tuple[str, Any]]:
    """``(prefix0, values[0]), (prefix1, values[1])...``: a multi-row statement's parameters."""
    return zip(_names(prefix, len(values)), values, strict=False)  # the names may run on


class Spelling:
    """How one family of databases spells what standard SQL leaves open."""

    # Whether one statement can create the session row and write the values.
    upsert_creates_session = False
    # Whether a list of keys is passed as one array parameter (one statement for any count).
    keys_as_array = False
    # Whether a delete locks its sessions' rows first, in a statement of its own. A
    # PostgreSQL statement deletes the rows of the snapshot it started with: a row a
    # concurrent write inserted while the delete waited for that write's locks would
    # stay, and the delete would take half of the write. The lock waits for such a
    # write (plain writes share the session row), and the delete after it sees its rows.
    # On InnoDB a delete of the session row (the Agents SDK's clear_session) cascades
    # to the items before the values, the opposite of the order a delete of ours takes
    # them in: both queue at the session row instead of deadlocking.
    delete_locks_sessions = False
    # Whether a delete of value rows can delete their items in the same statement (a
    # data-modifying CTE); else the items go in a statement of their own, just before.
    deletes_items_in_statement = False
    # The database's clock, for expiry (sessionmeta.sql.expiry).
    clock: Clock = SQLITE_CLOCK

    def __init__(self, tables: Tables) -> None:
        self.tables = tables

    def now(self) -> ColumnElement[Any]:
        """The database's current instant (moved on by the tables' test offset, if any)."""
        return self.clock.now(self.tables.clock_offset)

    def expires_at(self, micros: ColumnElement[Any]) -> ColumnElement[Any]:
        """The instant a row written now with a ttl of ``micros`` expires (NULL: never)."""
        return self.clock.later(self.tables.clock_offset, micros)

    def key_in(self, count: int, column: ColumnElement[str] | None = None) -> ColumnElement[bool]:
        """``column`` (the value table's ``key`` by default) is one of ``count`` keys."""
        column = self.tables.values.c.key if column is None else column
        return column.in_(_key_params("key", count))

    def key_params(self, keys: Sequence[str]) -> dict[str, Any]:
        return {f"key{index}": key for index, key in enumerate(keys)}

    def id_in(self, column: ColumnElement[str], count: int) -> ColumnElement[bool]:
        """``column`` is one of ``count`` session ids (``id0``...; one array on PostgreSQL)."""
        return column.in_(_key_params("id", count))

    def id_params(self, ids: Sequence[str]) -> dict[str, Any]:
        return dict(_named("id", ids))

    def insert_session(self) -> Executable:
        raise NotImplementedError

    def insert_sessions(self, count: int) -> Executable:
        """Create the missing ones of ``count`` session rows (``id0``...): a bulk write."""
        raise NotImplementedError

    def upsert(self, count: int) -> Executable:
        raise NotImplementedError

    def upsert_many(self, count: int) -> Executable:
        """The upsert of ``count`` rows of any sessions: the same statement as :meth:`upsert`,
        whose rows each name their session."""
        return self.upsert(count)

    def upsert_params(self, session_id: str, rows: Sequence[EncodedValue]) -> dict[str, Any]:
        return self.row_params(session_id, rows)

    def upsert_many_params(self, rows: Sequence[tuple[str, EncodedValue]]) -> dict[str, Any]:
        """The parameters of :meth:`upsert_many` for ``(session_id, row)`` pairs."""
        params: dict[str, Any] = dict(_named("s", [pair[0] for pair in rows]))
        params.update(_named("k", [row.key for _, row in rows]))
        params.update(_named("v", [row.value for _, row in rows]))
        params.update(_named("h", [row.value_hash for _, row in rows]))
        params.update(_named("o", [row.sort_key for _, row in rows]))
        params.update(_named("x", [row.ttl for _, row in rows]))
        return params

    def row_params(self, session_id: str, rows: Sequence[EncodedValue]) -> dict[str, Any]:
        params: dict[str, Any] = {"session_id": session_id}
        params.update(self.upsert_many_params([(session_id, row) for row in rows]))
        return params

    def delete_items(self, key_count: int) -> Executable:
        items = self.tables.items
        return delete(items).where(
            items.c.session_id == bindparam("session_id"),
            items.c.key.in_(_key_params("key", key_count)),
        )

    def delete_key_items(self, count: int) -> Executable:
        """Drop the items of one rewritten key (``key``) of ``count`` sessions (``ps0``...).

        One key per statement, not ``(session, key)`` pairs: MariaDB compares row
        values in a list one by one, for every row it scans.
        """
        items = self.tables.items
        return delete(items).where(
            items.c.key == bindparam("key"),
            items.c.session_id.in_(_key_params("ps", count)),
        )

    def key_items_params(self, key: str, ids: Sequence[str]) -> dict[str, Any]:
        params: dict[str, Any] = {"key": key}
        params.update(_named("ps", ids))
        return params

    def insert_items(self, count: int) -> Executable:
        """Insert ``count`` item rows (``is0``/``ik0``/``ivh0``/``ih0``...), each naming its
        session; one already there is left as it is, so a row may be given twice."""
        raise NotImplementedError

    def item_params(self, items: Sequence[tuple[str, str, str, str]]) -> dict[str, Any]:
        """The parameters of :meth:`insert_items` for (session, key, value hash, item hash)."""
        params: dict[str, Any] = {}
        for column, prefix in enumerate(("is", "ik", "ivh", "ih")):
            params.update(_named(prefix, [item[column] for item in items]))
        return params

    def _item_rows(self, count: int) -> list[dict[str, Any]]:
        return [
            {
                "session_id": bindparam(f"is{index}"),
                "key": bindparam(f"ik{index}"),
                "value_hash": bindparam(f"ivh{index}"),
                "item_hash": bindparam(f"ih{index}"),
            }
            for index in range(count)
        ]

    def _rows(self, count: int) -> list[dict[str, Any]]:
        return [
            {
                "session_id": bindparam(f"s{index}"),
                "key": bindparam(f"k{index}"),
                "value": bindparam(f"v{index}"),
                "value_hash": bindparam(f"h{index}"),
                "sort_key": bindparam(f"o{index}"),
                "expires_at": self.expires_at(ttl_param(f"x{index}")),
            }
            for index in range(count)
        ]


class _PostgreSQL(Spelling):
    clock = POSTGRES_CLOCK
    upsert_creates_session = True
    keys_as_array = True
    delete_locks_sessions = True
    deletes_items_in_statement = True

    def key_in(self, count: int, column: ColumnElement[str] | None = None) -> ColumnElement[bool]:
        # One statement for any number of keys: the prepared plan is reused.
        keys = bindparam("keys", type_=postgresql.ARRAY(Text))
        return (self.tables.values.c.key if column is None else column) == func.any(keys)

    def key_params(self, keys: Sequence[str]) -> dict[str, Any]:
        return {"keys": list(keys)}

    def id_in(self, column: ColumnElement[str], count: int) -> ColumnElement[bool]:
        return column == func.any(bindparam("ids", type_=postgresql.ARRAY(String())))

    def id_params(self, ids: Sequence[str]) -> dict[str, Any]:
        return {"ids": list(ids)}

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
                bindparam("ttls", type_=postgresql.ARRAY(BigInteger)),
            )
            .table_valued("key", "value", "value_hash", "sort_key", "ttl")
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
            ["session_id", "key", "value", "value_hash", "sort_key", "expires_at"],
            select(
                bindparam("session_id", type_=values.c.session_id.type),
                rows.c.key,
                rows.c.value,
                rows.c.value_hash,
                rows.c.sort_key,
                self.expires_at(rows.c.ttl),
            ).where(select(func.count()).select_from(locked).scalar_subquery() >= 0),
        )
        return _update_on_conflict(insert).add_cte(new_session, *self._item_ctes())

    def insert_items(self, count: int) -> Executable:
        # Only where a row's hash is recomputed in place (check's rehash): the upserts
        # keep the items in step themselves.
        items = postgresql.insert(self.tables.items).values(self._item_rows(count))
        return items.on_conflict_do_nothing()

    def upsert_many(self, count: int) -> Executable:
        """:meth:`upsert` for the rows of many sessions, one statement for any count.

        It creates the missing session rows, locks the existing ones first as
        :meth:`upsert` does, and keeps the items table in step the same way: the
        items of a rewritten value's older hash go, the new value's come.
        """
        values, sessions, items = self.tables.values, self.tables.sessions, self.tables.items
        text_array, id_array = postgresql.ARRAY(Text), postgresql.ARRAY(String())
        session_ids = bindparam("session_ids", type_=id_array)
        new_ids = func.unnest(session_ids).table_valued("session_id").render_derived(name="new_ids")
        new_sessions = (
            postgresql.insert(sessions)
            .from_select(["session_id"], select(new_ids.c.session_id))
            .on_conflict_do_nothing(index_elements=["session_id"])
            .cte("new_sessions")
        )
        locked = (
            select(sessions.c.session_id)
            .where(sessions.c.session_id == func.any(session_ids))
            .with_for_update(read=True, key_share=True)
            .cte("locked_sessions")
        )
        rows = (
            func.unnest(
                bindparam("row_sessions", type_=id_array),
                bindparam("keys", type_=text_array),
                bindparam("vals", type_=text_array),
                bindparam("hashes", type_=text_array),
                bindparam("sort_keys", type_=text_array),
                bindparam("ttls", type_=postgresql.ARRAY(BigInteger)),
            )
            .table_valued("session_id", "key", "value", "value_hash", "sort_key", "ttl")
            .render_derived(name="new_values")
        )
        insert = postgresql.insert(values).from_select(
            ["session_id", "key", "value", "value_hash", "sort_key", "expires_at"],
            select(
                rows.c.session_id,
                rows.c.key,
                rows.c.value,
                rows.c.value_hash,
                rows.c.sort_key,
                self.expires_at(rows.c.ttl),
            ).where(select(func.count()).select_from(locked).scalar_subquery() >= 0),
        )
        rewritten = (
            func.unnest(
                bindparam("collection_sessions", type_=id_array),
                bindparam("collection_keys", type_=text_array),
                bindparam("collection_hashes", type_=text_array),
            )
            .table_valued("session_id", "key", "value_hash")
            .render_derived(name="rewritten")
        )
        gone = delete(items).where(
            items.c.session_id == rewritten.c.session_id,
            items.c.key == rewritten.c.key,
            items.c.value_hash != rewritten.c.value_hash,
        )
        item_rows = (
            func.unnest(
                bindparam("item_sessions", type_=id_array),
                bindparam("item_keys", type_=text_array),
                bindparam("item_value_hashes", type_=text_array),
                bindparam("item_hashes", type_=text_array),
            )
            .table_valued("session_id", "key", "value_hash", "item_hash")
            .render_derived(name="new_item_rows")
        )
        added = (
            postgresql.insert(items)
            .from_select(
                ["session_id", "key", "value_hash", "item_hash"],
                select(
                    item_rows.c.session_id,
                    item_rows.c.key,
                    item_rows.c.value_hash,
                    item_rows.c.item_hash,
                ),
            )
            .on_conflict_do_nothing()
        )
        return _update_on_conflict(insert).add_cte(
            new_sessions, gone.cte("gone_items"), added.cte("new_items")
        )

    def upsert_many_params(self, rows: Sequence[tuple[str, EncodedValue]]) -> dict[str, Any]:
        collections = [(session_id, row) for session_id, row in rows if row.items is not None]
        items = [
            (session_id, row.key, row.value_hash, item)
            for session_id, row in collections
            for item in row.items or ()
        ]
        return {
            "session_ids": list(dict.fromkeys(session_id for session_id, _ in rows)),
            "row_sessions": [session_id for session_id, _ in rows],
            "keys": [row.key for _, row in rows],
            "vals": [row.value for _, row in rows],
            "hashes": [row.value_hash for _, row in rows],
            "sort_keys": [row.sort_key for _, row in rows],
            "ttls": [row.ttl for _, row in rows],
            "collection_sessions": [session_id for session_id, _ in collections],
            "collection_keys": [row.key for _, row in collections],
            "collection_hashes": [row.value_hash for _, row in collections],
            "item_sessions": [item[0] for item in items],
            "item_keys": [item[1] for item in items],
            "item_value_hashes": [item[2] for item in items],
            "item_hashes": [item[3] for item in items],
        }

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
            "ttls": [row.ttl for row in rows],
            "collection_keys": [row.key for row in collections],
            "collection_hashes": [row.value_hash for row in collections],
            "item_keys": [key for key, _, _ in items],
            "item_value_hashes": [value_hash for _, value_hash, _ in items],
            "item_hashes": [item for _, _, item in items],
        }


class _SQLite(Spelling):
    clock = SQLITE_CLOCK

    def insert_session(self) -> Executable:
        return (
            sqlite.insert(self.tables.sessions)
            .values(session_id=bindparam("session_id"))
            .on_conflict_do_nothing(index_elements=["session_id"])
        )

    def insert_sessions(self, count: int) -> Executable:
        rows = [{"session_id": session} for session in _key_params("id", count)]
        return (
            sqlite.insert(self.tables.sessions)
            .values(rows)
            .on_conflict_do_nothing(index_elements=["session_id"])
        )

    def upsert(self, count: int) -> Executable:
        return _update_on_conflict(sqlite.insert(self.tables.values).values(self._rows(count)))

    def insert_items(self, count: int) -> Executable:
        items = sqlite.insert(self.tables.items).values(self._item_rows(count))
        return items.on_conflict_do_nothing()


class _MySQL(Spelling):
    clock = MYSQL_CLOCK
    delete_locks_sessions = True

    def insert_session(self) -> Executable:
        # Not INSERT IGNORE: its duplicate-key warning surfaces as a Python warning.
        sessions = self.tables.sessions
        insert = mysql.insert(sessions).values(session_id=bindparam("session_id"))
        return insert.on_duplicate_key_update(session_id=sessions.c.session_id)

    def insert_sessions(self, count: int) -> Executable:
        sessions = self.tables.sessions
        rows = [{"session_id": session} for session in _key_params("id", count)]
        insert = mysql.insert(sessions).values(rows)
        return insert.on_duplicate_key_update(session_id=sessions.c.session_id)

    def insert_items(self, count: int) -> Executable:
        items = self.tables.items
        insert = mysql.insert(items).values(self._item_rows(count))
        return insert.on_duplicate_key_update(item_hash=items.c.item_hash)

    def upsert(self, count: int) -> Executable:
        insert: Insert = mysql.insert(self.tables.values).values(self._rows(count))
        return insert.on_duplicate_key_update(  # type: ignore[attr-defined,no-any-return]
            value=insert.inserted.value,  # type: ignore[attr-defined]
            value_hash=insert.inserted.value_hash,  # type: ignore[attr-defined]
            sort_key=insert.inserted.sort_key,  # type: ignore[attr-defined]
            expires_at=insert.inserted.expires_at,  # type: ignore[attr-defined]
            updated_at=func.current_timestamp(),
        )


_Upsert = TypeVar("_Upsert", postgresql.Insert, sqlite.Insert)


def _update_on_conflict(insert: _Upsert) -> _Upsert:
    """``insert`` (PostgreSQL's or SQLite's) that rewrites a key's row when it is there."""
    return insert.on_conflict_do_update(
        index_elements=["session_id", "key"],
        set_={
            "value": insert.excluded.value,
            "value_hash": insert.excluded.value_hash,
            "sort_key": insert.excluded.sort_key,
            "expires_at": insert.excluded.expires_at,
            "updated_at": func.current_timestamp(),
        },
    )


ErrorKind = Literal[
    "transient", "missing_session", "unique", "incompatible_parent", "already_exists"
]

# SQLSTATEs: deadlock_detected, serialization_failure; foreign_key_violation; unique_violation;
# duplicate_table, duplicate_object (an index or type another creator made first).
_POSTGRES_ERRORS: dict[str, ErrorKind] = {
    "40P01": "transient",
    "40001": "transient",
    "23503": "missing_session",
    "23505": "unique",
    "42P07": "already_exists",
    "42710": "already_exists",
}
# Deadlock (1213, also a Galera certification conflict), record changed since last read
# (1020, MariaDB snapshot isolation); no referenced row (1452); duplicate key (1062). A lock
# wait timeout (1205) is not retried: it is a limit the application chose. A foreign key
# refused because the parent column's type or collation differs: MariaDB 1005 "incorrectly
# formed", MySQL 5.7 1215, MySQL 8 3780.
_MYSQL_ERRORS: dict[int, ErrorKind] = {
    1213: "transient",
    1020: "transient",
    1452: "missing_session",
    1062: "unique",
    1005: "incompatible_parent",
    1215: "incompatible_parent",
    3780: "incompatible_parent",
    1050: "already_exists",  # table exists
    1061: "already_exists",  # duplicate key (index) name
}


def _postgres_kind(error: BaseException) -> ErrorKind | None:
    # asyncpg's and psycopg's errors both carry the SQLSTATE.
    code = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
    return _POSTGRES_ERRORS.get(code) if isinstance(code, str) else None


def _mysql_kind(error: BaseException) -> ErrorKind | None:
    args = getattr(error, "args", ())
    code = args[0] if args and isinstance(args[0], int) else None
    return _MYSQL_ERRORS.get(code) if code is not None else None


# Python 3.10's sqlite3 errors carry no code (sqlite_errorcode came in 3.11); their
# messages are SQLite's fixed text for each code (sqlite3_errstr and the constraint's).
_SQLITE_MESSAGES: tuple[tuple[str, ErrorKind], ...] = (
    ("database is locked", "transient"),  # SQLITE_BUSY
    ("database table is locked", "transient"),  # SQLITE_LOCKED
    ("database schema is locked", "transient"),  # SQLITE_LOCKED_SHAREDCACHE
    ("FOREIGN KEY constraint failed", "missing_session"),
    ("UNIQUE constraint failed", "unique"),  # primary keys report this too
    ("already exists", "already_exists"),
)


def _sqlite_kind(error: BaseException) -> ErrorKind | None:
    code = getattr(error, "sqlite_errorcode", None)
    if not isinstance(code, int):
        text = str(error)
        return next((kind for message, kind in _SQLITE_MESSAGES if message in text), None)
    primary = code & 0xFF
    if primary in (5, 6):  # SQLITE_BUSY, SQLITE_LOCKED: the busy timeout ran out
        return "transient"
    if code == 787:  # SQLITE_CONSTRAINT_FOREIGNKEY
        return "missing_session"
    if code in (1555, 2067):  # SQLITE_CONSTRAINT_PRIMARYKEY, _UNIQUE
        return "unique"
    # A CREATE that another connection's CREATE beat: SQLITE_ERROR, or SQLITE_SCHEMA when
    # the schema changed under the statement.
    if primary in (1, 17) and "already exists" in str(error):
        return "already_exists"
    return None


class ParentColumns:
    """Reads existing columns' types, for a database whose foreign keys need the
    referenced column's own type (see :func:`sessionmeta.sql.schema.adapt_to_parents`)."""

    def query(self, tables: Collection[str]) -> Executable:
        """Rows of (table, column, ...) describing every column of ``tables``."""
        raise NotImplementedError

    def column_type(self, row: Sequence[Any]) -> TypeEngine[Any] | None:
        """The type of the column one row describes; ``None`` to keep sessionmeta's own."""
        raise NotImplementedError


_INFORMATION_SCHEMA_COLUMNS = Table(
    "COLUMNS",
    MetaData(),
    *(
        Column(name)
        for name in (
            "TABLE_SCHEMA",
            "TABLE_NAME",
            "COLUMN_NAME",
            "DATA_TYPE",
            "CHARACTER_MAXIMUM_LENGTH",
            "CHARACTER_SET_NAME",
            "COLLATION_NAME",
        )
    ),
    schema="information_schema",
)


class _MySQLParentColumns(ParentColumns):
    # InnoDB refuses (errno 150) a foreign key between string columns whose charset or
    # collation differ, and a hand-made or newer-SDK sessions table has its own.
    _TYPES: Mapping[str, Callable[..., TypeEngine[Any]]] = {
        "varchar": mysql.VARCHAR,
        "char": mysql.CHAR,
    }

    def query(self, tables: Collection[str]) -> Executable:
        columns = _INFORMATION_SCHEMA_COLUMNS.c
        return select(
            columns.TABLE_NAME,
            columns.COLUMN_NAME,
            columns.DATA_TYPE,
            columns.CHARACTER_MAXIMUM_LENGTH,
            columns.CHARACTER_SET_NAME,
            columns.COLLATION_NAME,
        ).where(func.database() == columns.TABLE_SCHEMA, columns.TABLE_NAME.in_(sorted(tables)))

    def column_type(self, row: Sequence[Any]) -> TypeEngine[Any] | None:
        _, _, data_type, length, charset, collation = row
        make = self._TYPES.get(str(data_type).lower())
        if make is None or length is None:
            return None
        return make(int(length), charset=charset, collation=collation)


@dataclass(frozen=True)
class Backend:
    """One family of databases sessionmeta supports."""

    name: str
    # Dialect names SQLAlchemy gives this family.
    dialect_names: tuple[str, ...]
    # The async driver a plain ``name://`` URL gets, and the extra that installs it.
    default_driver: str
    extra: str
    # Every async driver sessionmeta runs on, with the connect argument (and whether it
    # takes whole seconds) that bounds its connection handshake.
    drivers: Mapping[str, tuple[str, bool] | None]
    spelling: type[Spelling]
    ddl_dialect: Callable[[], Dialect]
    error_kind: Callable[[BaseException], ErrorKind | None]
    # Lists of values bind as one array parameter (one statement shape for any count).
    arrays: bool = False
    # The statement that opens a write transaction, where the default would not take the
    # write lock up front (SQLite: two deferred writers would deadlock on the upgrade).
    begin_write: str | None = None
    # Statements that run outside a transaction may use autocommit at no cost.
    cheap_autocommit: bool = False
    # SQLite: foreign keys (and so ON DELETE CASCADE) are off unless each connection asks.
    foreign_keys_pragma: bool = False
    # SQLite: a database file keeps a rollback journal unless switched to write-ahead
    # logging (persistent, per file), where commits append to the log instead.
    write_ahead_log: bool = False
    # Whether the planner knows how many rows each key has (SQLite's statistics are
    # averages over all keys).
    per_key_statistics: bool = True
    # The database is a file the process opens itself (no server).
    embedded: bool = False
    # Foreign keys need the referenced column's exact type: tables created beside an
    # existing one take its columns' types from here.
    parent_columns: ParentColumns | None = None
    # Whether ``CREATE INDEX IF NOT EXISTS`` exists (MySQL has none; MariaDB has).
    create_index_if_not_exists: bool = True
    # Whether ALTER TABLE drops and adds constraints (SQLite's rebuilds the table instead).
    alters_constraints: bool = True
    # The server may be a node of a Galera cluster (MariaDB's multi-primary cluster), whose
    # connections need wsrep_sync_wait to see every write the cluster acknowledged.
    galera: bool = False
    # The aggregate that gathers a session's (key, value) rows into the JSON object a
    # read validates, each value's stored text pasted in as it is (as ``object_text``
    # does in Python); ``None`` where the text could be cut short (MySQL's
    # GROUP_CONCAT stops at group_concat_max_len, 1,024 bytes by default).
    object_of_rows: (
        Callable[[ColumnElement[str], ColumnElement[str]], ColumnElement[str]] | None
    ) = None

    def connect_timeout_args(self, driver: str, seconds: float) -> dict[str, Any]:
        """``connect_args`` that bound ``driver``'s handshake to ``seconds``."""
        argument = self.drivers.get(driver)
        if argument is None:
            return {}
        name, whole_seconds = argument
        return {name: max(1, math.ceil(seconds)) if whole_seconds else seconds}


_COLON = literal_column("':'", Text)
_COMMA = literal_column("','", Text)


def _braced(members: ColumnElement[str]) -> ColumnElement[str]:
    # NULL (no rows) stays NULL: the reader takes it for an empty object.
    return literal_column("'{'", Text).concat(members).concat(literal_column("'}'", Text))


def _postgres_object(key: ColumnElement[str], value: ColumnElement[str]) -> ColumnElement[str]:
    # Text pasted together, not json_object_agg over value::json: no value is parsed (the
    # model's validation reads each one once), and a text that is not JSON at all fails
    # that validation, which names its session and key, not the statement.
    member = cast(func.to_json(key), Text).concat(_COLON).concat(value)
    return _braced(func.string_agg(member, _COMMA))


def _sqlite_object(key: ColumnElement[str], value: ColumnElement[str]) -> ColumnElement[str]:
    # As on PostgreSQL; json_group_object would need json(value), which parses each value
    # and refuses a malformed one with an error that names no session.
    member = func.json_quote(key).concat(_COLON).concat(value)
    return _braced(func.group_concat(member, _COMMA))


def _mariadb_dialect() -> Dialect:
    dialect = mysql.dialect()
    dialect.is_mariadb = True
    return dialect


BACKENDS: tuple[Backend, ...] = (
    Backend(
        "postgresql",
        ("postgresql", "postgres"),
        "postgresql+asyncpg",
        "postgres",
        {"asyncpg": ("timeout", False), "psycopg": ("connect_timeout", True)},
        _PostgreSQL,
        postgresql.dialect,
        _postgres_kind,
        arrays=True,
        cheap_autocommit=True,
        object_of_rows=_postgres_object,
    ),
    Backend(
        "mysql",
        ("mysql",),
        "mysql+aiomysql",
        "mysql",
        {"aiomysql": ("connect_timeout", True), "asyncmy": ("connect_timeout", True)},
        _MySQL,
        mysql.dialect,
        _mysql_kind,
        parent_columns=_MySQLParentColumns(),
        create_index_if_not_exists=False,
        galera=True,
    ),
    Backend(
        "mariadb",
        ("mariadb",),
        "mariadb+aiomysql",
        "mysql",
        {"aiomysql": ("connect_timeout", True), "asyncmy": ("connect_timeout", True)},
        _MySQL,
        _mariadb_dialect,
        _mysql_kind,
        parent_columns=_MySQLParentColumns(),
        galera=True,
    ),
    Backend(
        "sqlite",
        ("sqlite",),
        "sqlite+aiosqlite",
        "sqlite",
        {"aiosqlite": None},
        _SQLite,
        sqlite.dialect,
        _sqlite_kind,
        begin_write="BEGIN IMMEDIATE",
        foreign_keys_pragma=True,
        write_ahead_log=True,
        per_key_statistics=False,
        embedded=True,
        alters_constraints=False,
        object_of_rows=_sqlite_object,
    ),
)
_BY_DIALECT = {name: backend for backend in BACKENDS for name in backend.dialect_names}


def backend_named(name: str) -> Backend:
    """The backend of a SQLAlchemy dialect name; :class:`UnsupportedDialectError` for others."""
    backend = _BY_DIALECT.get(name)
    if backend is None:
        supported = ", ".join(sorted(_BY_DIALECT))
        raise UnsupportedDialectError(
            f"sessionmeta does not support the {name!r} database; it supports {supported}"
        )
    return backend


def backend_for(dialect: Dialect) -> Backend:
    """The backend serving ``dialect``."""
    return backend_named(dialect.name)


def create_ddl(
    tables: Tables, dialect_name: str, *, if_not_exists: bool = False, only_metadata: bool = False
) -> str:
    """The ``CREATE`` statements for ``tables`` in ``dialect_name``, as one SQL script.

    ``if_not_exists`` makes every statement skip what exists already, so the script
    runs on a database holding some of the tables and runs again; ``only_metadata``
    leaves out the sessions table (the Agents SDK's own).
    """
    backend = backend_named(dialect_name)
    dialect = backend.ddl_dialect()
    parts: list[str] = []
    for table in tables.metadata.sorted_tables:
        if only_metadata and table is tables.sessions:
            continue
        indexes = sorted(table.indexes, key=lambda index: index.name or "")
        create = str(CreateTable(table, if_not_exists=if_not_exists).compile(dialect=dialect))
        if if_not_exists and not backend.create_index_if_not_exists:
            create, indexes = _inline_indexes(create.strip(), indexes, dialect), []
        parts.append(create.strip() + ";")
        for index in indexes:
            statement = CreateIndex(index, if_not_exists=if_not_exists)
            parts.append(str(statement.compile(dialect=dialect)).strip() + ";")
    return "\n\n".join(parts) + "\n"


def _inline_indexes(create_table: str, indexes: Sequence[Index], dialect: Dialect) -> str:
    """``create_table`` with ``indexes`` declared inside it, for a database without
    ``CREATE INDEX IF NOT EXISTS``: ``CREATE TABLE IF NOT EXISTS`` then covers both."""
    if not indexes:
        return create_table
    preparer = dialect.identifier_preparer
    declared = [
        f"INDEX {preparer.format_index(index)} "
        f"({', '.join(preparer.quote(column.name) for column in index.columns)})"
        for index in indexes
    ]
    # SQLAlchemy ends the column list with a line holding the closing parenthesis.
    head, closing, tail = create_table.rpartition("\n)")
    return head + ", \n\t" + ", \n\t".join(declared) + closing + tail
