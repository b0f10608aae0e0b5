"""The store's SQL, built once with SQLAlchemy Core and compiled once per dialect.

This module only builds statements; ``sessionmeta.io.database`` runs them.
How each backend spells an upsert or a key list comes from its
:class:`~sessionmeta.sql.dialects.Spelling`.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import (
    ClauseElement,
    ColumnElement,
    Delete,
    Table,
    bindparam,
    delete,
    func,
    insert,
    null,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import Executable
from sqlalchemy.sql.compiler import SQLCompiler

from sessionmeta.core.codec import EncodedValue
from sessionmeta.sql.claims import ClaimSQL
from sessionmeta.sql.dialects import Backend, Spelling, backend_for
from sessionmeta.sql.expiry import live
from sessionmeta.sql.schema import Tables

__all__ = [
    "BULK_BYTES",
    "BULK_ROWS",
    "Batch",
    "CompiledStatement",
    "Statements",
    "compile_statement",
    "statements_for",
]

# A bulk write or delete goes in chunks of at most this many rows per statement. The
# widest row binds five parameters: 20,480 per statement, under SQLite's 32,766 (and
# asyncpg's 32,767; PostgreSQL binds arrays, one parameter per column).
BULK_ROWS = 4096
# ... and at most about this much stored text, so a statement of large values stays
# well under MySQL/MariaDB's max_allowed_packet (16 MiB by default on MariaDB); a
# value larger than this goes alone.
BULK_BYTES = 4 * 1024 * 1024
# Chunks shorter than BULK_ROWS are padded to a power of two (repeating a row, which
# writes or deletes it again): a few shapes, each compiled once, serve any count. (Where
# the statement binds arrays there is one shape, and no padding.)

T = TypeVar("T")


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


# Statements to run in order, each with its parameters.
Batch = list[tuple[CompiledStatement, dict[str, Any]]]


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

    def compiled_rows(
        self, name: str, count: int, build: Callable[[int], Executable]
    ) -> CompiledStatement:
        """``build(count)`` compiled once per ``(name, count)``, for statements of
        ``count`` rows of parameters (``VALUES (...), (...)``, ``IN (?, ?)``) named by
        row (``s0``, ``s1``...). SQLAlchemy takes up to a second to compile thousands
        of rows: the text repeats the row of the one-row statement instead, once that
        is seen to give exactly what SQLAlchemy compiles for three rows."""
        cache_key = (name, count)
        found = self._cache.get(cache_key)
        if found is not None:
            return found
        if count > 3:
            one = self.compiled(name, 1, lambda: build(1))
            two = self.compiled(name, 2, lambda: build(2))
            three = self.compiled(name, 3, lambda: build(3))
            if _repeated(one, two, 3) == three:
                found = _repeated(one, two, count)
        if found is None:
            found = compile_statement(build(count), self.dialect)
        self._cache[cache_key] = found
        return found

    def live(self, table: Any) -> ColumnElement[bool]:
        """``table``'s value row (the values table or an alias) has not expired."""
        return live(table, self.spelling.now())

    @property
    def upsert_creates_session(self) -> bool:
        return self.spelling.upsert_creates_session

    def insert_session(self) -> CompiledStatement:
        return self.compiled("insert_session", 0, self.spelling.insert_session)

    def upsert(self, count: int) -> CompiledStatement:
        # PostgreSQL's statement takes arrays: one shape for any count.
        if self.spelling.upsert_creates_session:
            return self.compiled("upsert", 0, lambda: self.spelling.upsert(count))
        return self.compiled_rows("upsert", count, self.spelling.upsert)

    def delete_items(self, key_count: int) -> CompiledStatement:
        """Where the upsert does not keep items in step: drop the items of rewritten keys."""
        return self.compiled(
            "delete_items", key_count, lambda: self.spelling.delete_items(key_count)
        )

    def insert_items(self, count: int) -> CompiledStatement:
        return self.compiled_rows("insert_items", count, self.spelling.insert_items)

    def select_values(self, key_count: int | None) -> CompiledStatement:
        values = self.tables.values

        def build() -> Executable:
            query = select(values.c.key, values.c.value).where(
                values.c.session_id == bindparam("session_id"), self.live(values)
            )
            if key_count is not None:
                query = query.where(self.spelling.key_in(key_count))
            return query

        return self.compiled("select_values", self._key_shape(key_count), build)

    def delete_values(self, key_count: int | None) -> list[CompiledStatement]:
        """Delete ``key_count`` keys (``key0``... or ``keys``), or every key, of one session
        (``session_id``) with their items: :meth:`_deleting_items`."""
        return self._deleting_items(
            "delete_values",
            self._key_shape(key_count),
            lambda table: table.c.session_id == bindparam("session_id"),
            key_count,
        )

    def find_equal(self) -> CompiledStatement:
        values = self.tables.values

        def build() -> Executable:
            return (
                select(values.c.session_id)
                .where(
                    values.c.key == bindparam("key"),
                    values.c.value_hash == bindparam("value_hash"),
                    self.live(values),
                )
                .order_by(values.c.session_id)
                .limit(bindparam("limit"))
            )

        return self.compiled("find_equal", 0, build)

    def session_rows(self) -> CompiledStatement:
        """Every live row of one session with its hash, in one statement (one snapshot)."""
        values = self.tables.values
        return self.compiled(
            "session_rows",
            0,
            lambda: select(values.c.key, values.c.value, values.c.value_hash).where(
                values.c.session_id == bindparam("session_id"), self.live(values)
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

    def history_end(self, messages_table: str) -> CompiledStatement:
        """The time of a session's newest message (``NULL`` when it has none)."""
        messages = self.tables.metadata.tables[messages_table]
        return self.compiled(
            f"history_end:{messages_table}",
            0,
            lambda: select(func.max(messages.c.created_at)).where(
                messages.c.session_id == bindparam("session_id")
            ),
        )

    def append_history(self, messages_table: str) -> CompiledStatement:
        """Append one message (its stored JSON text) to a session's history, at the time
        ``created_at`` (as :meth:`history_end` read it), or now when that is ``NULL``."""
        messages = self.tables.metadata.tables[messages_table]
        return self.compiled(
            f"append_history:{messages_table}",
            0,
            lambda: insert(messages).values(
                session_id=bindparam("session_id"),
                message_data=bindparam("message_data"),
                created_at=func.coalesce(
                    bindparam("created_at", type_=messages.c.created_at.type),
                    func.current_timestamp(),
                ),
            ),
        )

    def touch_session(self) -> CompiledStatement:
        sessions = self.tables.sessions
        return self.compiled(
            "touch_session",
            0,
            lambda: (
                update(sessions)
                .where(sessions.c.session_id == bindparam("session_id"))
                .values(updated_at=func.current_timestamp())
            ),
        )

    def session_exists(self) -> CompiledStatement:
        """The session's row in the sessions table, if it has one (its primary key)."""
        sessions = self.tables.sessions
        return self.compiled(
            "session_exists",
            0,
            lambda: select(sessions.c.session_id).where(
                sessions.c.session_id == bindparam("session_id")
            ),
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

    def lock_sessions(self, count: int) -> CompiledStatement:
        """Lock the rows of ``count`` sessions (``id0``..., one array where the backend
        binds arrays), in id order: what a delete does first where
        ``Spelling.delete_locks_sessions`` says so."""
        sessions = self.tables.sessions

        def build() -> Executable:
            return (
                select(sessions.c.session_id)
                .where(self.spelling.id_in(sessions.c.session_id, count))
                .order_by(sessions.c.session_id)
                .with_for_update()
            )

        return self.compiled("lock_sessions", 0 if self.backend.arrays else count, build)

    def lock_rows(self) -> CompiledStatement:
        """Every live row of one session with its hash, the value rows (expired ones too)
        locked against writers."""
        values = self.tables.values
        return self.compiled(
            "lock_rows",
            0,
            lambda: (
                select(values.c.key, values.c.value, values.c.value_hash)
                .where(values.c.session_id == bindparam("session_id"), self.live(values))
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
            query = query.where(self.live(values))
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

    def reseal(self) -> CompiledStatement:
        """Give a row a new stored text and hash (and no sort key), if it still holds the
        text read: an encrypted value re-encrypted under the current key, never over a
        value written meanwhile."""
        values = self.tables.values
        return self.compiled(
            "reseal",
            0,
            lambda: (
                values.update()
                .where(
                    values.c.session_id == bindparam("session_id"),
                    values.c.key == bindparam("key"),
                    values.c.value == bindparam("old_value"),
                )
                .values(
                    value=bindparam("new_value"),
                    value_hash=bindparam("new_hash"),
                    sort_key=null(),
                )
            ),
        )

    def count_rows(self) -> CompiledStatement:
        values = self.tables.values
        return self.compiled(
            "count_rows",
            0,
            lambda: select(func.count()).select_from(values).where(self.live(values)),
        )

    # Bulk writes and deletes

    def upsert_many(self, count: int) -> CompiledStatement:
        """The upsert of ``count`` rows of any sessions (:meth:`Spelling.upsert_many`)."""
        if not self.spelling.upsert_creates_session:
            # Each row of the plain upsert names its session already: the same statement.
            return self.upsert(count)
        return self.compiled("upsert_many", 0, lambda: self.spelling.upsert_many(count))

    def insert_sessions(self, count: int) -> CompiledStatement:
        return self.compiled_rows("insert_sessions", count, self.spelling.insert_sessions)

    def delete_key_items(self, count: int) -> CompiledStatement:
        return self.compiled_rows("delete_key_items", count, self.spelling.delete_key_items)

    def delete_values_many(self, id_count: int, key_count: int | None) -> list[CompiledStatement]:
        """Delete ``key_count`` keys (or every key) of ``id_count`` sessions with their items."""
        id_shape = 0 if self.backend.arrays else id_count
        return self._deleting_items(
            f"delete_values_many:{self._key_shape(key_count)}",
            id_shape,
            lambda table: self.spelling.id_in(table.c.session_id, id_count),
            key_count,
        )

    def _deleting_items(
        self,
        name: str,
        shape: int,
        sessions: Callable[[Table], ColumnElement[bool]],
        key_count: int | None,
    ) -> list[CompiledStatement]:
        """The delete of the value rows of ``sessions`` (and ``key_count`` keys) and of their
        items: one statement where the dialect deletes from two tables in one (PostgreSQL),
        else the values' statement, then the items'. That is the order in which a write
        takes the same rows' locks, so a delete and a write queue rather than deadlock.

        The items' foreign key is to the session, so a key's items do not go with its
        value row by themselves.
        """
        values, items = self.tables.values, self.tables.items
        spelling = self.spelling

        def rows_of(table: Table) -> Delete:
            statement = delete(table).where(sessions(table))
            if key_count is not None:
                statement = statement.where(spelling.key_in(key_count, table.c.key))
            return statement

        if spelling.deletes_items_in_statement:

            def both() -> Executable:
                return rows_of(values).add_cte(rows_of(items).cte("gone_items"))

            return [self.compiled(name, shape, both)]
        return [
            self.compiled(name, shape, lambda: rows_of(values)),
            self.compiled(f"{name}:items", shape, lambda: rows_of(items)),
        ]

    def write_many(self, rows: dict[str, list[EncodedValue]]) -> Batch:
        """The statements that write every session's ``rows``, creating missing sessions.

        In chunks of :data:`BULK_ROWS` rows (and :data:`BULK_BYTES` of text): as many
        statements for ten sessions as for a few thousand. Where one statement
        creates sessions and keeps items in step (PostgreSQL), one per chunk; else
        the session rows, the value rows, then the items of rewritten list and set
        values (dropped, one statement per key, then inserted), as
        :meth:`Operations.write_rows` does for one session.
        """
        spelling = self.spelling
        pairs = [
            (session_id, row) for session_id, session_rows in rows.items() for row in session_rows
        ]
        # Only value rows can be large; ids, keys and hashes are at most 255 characters.
        sizes = [
            len(session_id) + len(row.key) + len(row.value) + len(row.sort_key or "")
            for session_id, row in pairs
        ]
        batch: Batch = []
        if spelling.upsert_creates_session:
            for chunk in _chunks(pairs, sizes):
                batch.append((self.upsert_many(0), spelling.upsert_many_params(chunk)))
            return batch
        for ids in _chunks(list(rows)):
            ids = _padded(ids)
            batch.append((self.insert_sessions(len(ids)), spelling.id_params(ids)))
        for chunk in _chunks(pairs, sizes):
            # Repeat the smallest row: padding adds as little text as it can.
            chunk = _padded(chunk, min(chunk, key=lambda pair: len(pair[1].value)))
            batch.append((self.upsert_many(len(chunk)), spelling.upsert_many_params(chunk)))
        collections = [(session_id, row) for session_id, row in pairs if row.items is not None]
        rewritten: dict[str, list[str]] = {}
        for session_id, row in collections:
            rewritten.setdefault(row.key, []).append(session_id)
        for key, key_sessions in sorted(rewritten.items()):
            for ids in _chunks(key_sessions):
                ids = _padded(ids)
                batch.append((self.delete_key_items(len(ids)), spelling.key_items_params(key, ids)))
        items = [
            (session_id, row.key, row.value_hash, item)
            for session_id, row in collections
            for item in row.items or ()
        ]
        for item_chunk in _chunks(items):
            item_chunk = _padded(item_chunk)
            batch.append((self.insert_items(len(item_chunk)), spelling.item_params(item_chunk)))
        return batch

    def delete_many(self, ids: list[str], keys: list[str] | None) -> Batch:
        """The statements that delete ``keys`` (or every key) of the sessions ``ids``;
        first, where the backend needs it, those that lock the sessions, in id order."""
        spelling = self.spelling
        key_params = {} if keys is None else spelling.key_params(keys)
        key_count = None if keys is None else len(keys)
        batch: Batch = []
        if spelling.delete_locks_sessions:
            for chunk in _chunks(sorted(ids)):
                chunk = chunk if self.backend.arrays else _padded(chunk)
                batch.append((self.lock_sessions(len(chunk)), spelling.id_params(chunk)))
        for chunk in _chunks(ids):
            chunk = chunk if self.backend.arrays else _padded(chunk)
            params = {**spelling.id_params(chunk), **key_params}
            for statement in self.delete_values_many(len(chunk), key_count):
                batch.append((statement, params))
        return batch

    def delete_one(self, session_id: str, keys: list[str] | None) -> Batch:
        """The statements that delete ``keys`` (or every key) of one session; first, where
        the backend needs it, the one that locks the session."""
        params: dict[str, Any] = {"session_id": session_id}
        if keys is not None:
            params.update(self.spelling.key_params(keys))
        batch: Batch = [
            (statement, params)
            for statement in self.delete_values(None if keys is None else len(keys))
        ]
        if self.spelling.delete_locks_sessions:
            batch.insert(0, (self.lock_session(), {"session_id": session_id}))
        return batch

    # The claims of unique fields (built in ``sql/claims.py``)

    def release_claims(self, id_count: int, key_count: int) -> CompiledStatement:
        """Drop what ``id_count`` sessions (``id0``... or ``ids``) claim under ``key_count``
        keys (``key0``... or ``keys``): before they claim their new values."""
        key_shape = 0 if self.spelling.keys_as_array else key_count
        return self.compiled(
            f"release_claims:{key_shape}",
            0 if self.backend.arrays else id_count,
            lambda: ClaimSQL(self.spelling).release_claims(id_count, key_count),
        )

    def claim_values(self, id_count: int, *, scoped: bool) -> CompiledStatement:
        """Claim the stored value of one unique key (``key``) of ``id_count`` sessions, read
        from the value table in the writing transaction (:meth:`ClaimSQL.claim_values`)."""
        return self.compiled(
            "claim_values:scoped" if scoped else "claim_values",
            0 if self.backend.arrays else id_count,
            lambda: ClaimSQL(self.spelling).claim_values(id_count, scoped=scoped),
        )

    def claim_holder(self) -> CompiledStatement:
        """The holder of a claim, and whether its value row still holds the value."""
        return self.compiled("claim_holder", 0, ClaimSQL(self.spelling).claim_holder)

    def release_stale_claim(self) -> CompiledStatement:
        """Drop one claim whose session no longer stores the value."""
        return self.compiled("release_stale_claim", 0, ClaimSQL(self.spelling).release_stale_claim)

    def _key_shape(self, key_count: int | None) -> int:
        if key_count is None:
            return -1
        return 0 if self.spelling.keys_as_array else key_count


def _repeated(
    one: CompiledStatement, two: CompiledStatement, count: int
) -> CompiledStatement | None:
    """The ``count``-row form of a statement whose one- and two-row forms are ``one`` and
    ``two``, made by repeating the row; ``None`` when they do not differ by one row."""
    if not (one.positional and two.positional):
        return None
    row_length = len(two.sql) - len(one.sql) - len(", ")
    width = len(two.names) - len(one.names)
    for start in range(len(one.sql) - row_length + 1):
        row = one.sql[start : start + row_length]
        head, tail = one.sql[:start], one.sql[start + row_length :]
        if two.sql != f"{head}{row}, {row}{tail}":
            continue
        for at in range(len(one.names) - width + 1):
            first = one.names[at : at + width]
            if two.names != (
                *one.names[: at + width],
                *_indexed(first, 1),
                *one.names[at + width :],
            ):
                continue
            rows = [name for index in range(count) for name in _indexed(first, index)]
            return CompiledStatement(
                head + ", ".join([row] * count) + tail,
                (*one.names[:at], *rows, *one.names[at + width :]),
                True,
                one.defaults,
            )
    return None


def _indexed(names: Sequence[str], index: int) -> tuple[str, ...]:
    """``names`` of row 0 (``s0``, ``k0``...) as row ``index``'s."""
    return tuple(name[:-1] + str(index) for name in names if name.endswith("0"))


def _chunks(entries: list[T], sizes: list[int] | None = None) -> list[list[T]]:
    """``entries`` in runs of at most :data:`BULK_ROWS`, and of :data:`BULK_BYTES` by their
    ``sizes`` when given (a run of one entry may be larger)."""
    chunks: list[list[T]] = []
    ends = list(itertools.accumulate(sizes, initial=0)) if sizes is not None else None
    start = 0
    while start < len(entries):
        end = min(start + BULK_ROWS, len(entries))
        if ends is not None and ends[end] - ends[start] > BULK_BYTES:
            # The last entry that still fits, but at least one.
            fits = bisect.bisect_right(ends, ends[start] + BULK_BYTES, start + 1, end) - 1
            end = max(fits, start + 1)
        chunks.append(entries[start:end])
        start = end
    return chunks


def _padded(chunk: list[T], filler: T | None = None) -> list[T]:
    """``chunk`` padded to a power of two (under :data:`BULK_ROWS`) by repeating ``filler``
    (else its last entry)."""
    count = 1
    while count < len(chunk):
        count *= 2
    if count == len(chunk) or len(chunk) >= BULK_ROWS:
        return chunk
    return chunk + [chunk[-1] if filler is None else filler] * (count - len(chunk))


def statements_for(dialect: Dialect, tables: Tables) -> Statements:
    """The statements for ``dialect``; raise :class:`UnsupportedDialectError` for others."""
    backend = backend_for(dialect)
    return Statements(dialect, backend, backend.spelling(tables))
