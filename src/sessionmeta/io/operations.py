"""One store's reads and writes of session rows, each one unit of work on the seam.

The store, its scoped views, the atomic operations, search and check all come
here (or to the seam itself) for I/O; none reaches into another's internals.
Every write of value rows, whatever asked for it, goes through
:meth:`Operations.write_rows`, or for many sessions at once through
:meth:`Operations.write_many`, which runs the same upsert and items statements
in chunks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, Literal, TypeVar

from sessionmeta.core.codec import EncodedValue, decode_rows
from sessionmeta.core.expiry import field_ttls, with_ttls
from sessionmeta.core.sealing import open_rows, seal_rows
from sessionmeta.core.spec import ModelSpec, ModelT
from sessionmeta.errors import ConcurrencyError, StoredValueError
from sessionmeta.io.claims import ClaimKeeper, ClaimTaken
from sessionmeta.io.database import Connection, Database, SessionRowMissing
from sessionmeta.sql.statements import Batch, Statements

__all__ = ["ITEMS_PER_STATEMENT", "OnInvalid", "Operations", "Row"]

logger = logging.getLogger("sessionmeta")

OnInvalid = Literal["raise", "default"]
T = TypeVar("T")
# (key, stored JSON text, value hash)
Row = tuple[str, str, str]
# In chunks: SQLite takes at most 32,766 parameters per statement.
ITEMS_PER_STATEMENT = 500


class Operations(Generic[ModelT]):
    """What a store does to the database, on one :class:`Database` (pool or caller's)."""

    def __init__(
        self,
        spec: ModelSpec[ModelT],
        statements: Statements,
        db: Database,
        *,
        on_invalid: OnInvalid,
        create_tables: bool,
        replica: Database | None = None,
    ) -> None:
        self.spec = spec
        self.statements = statements
        self.db = db
        # Where queries (finds, listings, counts, bulk reads) run: a read replica, if any.
        self.replica = replica
        self.on_invalid: OnInvalid = on_invalid
        # Fields declared with Expires: their keys' default ttl, in microseconds.
        self.default_ttls = field_ttls(
            spec.model, {field.name: field.key for field in spec.fields.values()}
        )
        self.tables_pending = create_tables
        self._tables_lock = asyncio.Lock()
        # Unique fields' claims, kept in each write's transaction (none without them).
        self.claims = ClaimKeeper(spec, statements, db)

    def on(self, db: Database) -> Operations[ModelT]:
        """The same operations on another database handle (a caller's connection), which
        queries use too: a caller's transaction sees its own writes."""
        joined = Operations(
            self.spec,
            self.statements,
            db,
            on_invalid=self.on_invalid,
            create_tables=self.tables_pending,
        )
        joined._tables_lock = self._tables_lock
        return joined

    def on_primary(self) -> Operations[ModelT]:
        """These operations with queries on the primary too, not on the read replica."""
        return self.on(self.db)

    @property
    def reader(self) -> Database:
        """The database queries run on: the read replica when there is one."""
        return self.replica or self.db

    async def create_tables(self) -> None:
        await self.db.create_tables(self.statements.tables.metadata)
        self.tables_pending = False

    async def ensure_tables(self) -> None:
        if not self.tables_pending:
            return
        async with self._tables_lock:
            if self.tables_pending:
                await self.create_tables()

    def decode(self, session_id: str, rows: Sequence[tuple[str, str]]) -> ModelT:
        """The model of one session's stored ``(key, value)`` rows (undeclared keys ignored)."""
        invalid: list[str] = []
        # An encrypted value that does not decrypt raises whatever on_invalid says: read
        # as a default, a wrong key would go unnoticed until the value was overwritten.
        plain = open_rows(self.spec, session_id, rows)
        try:
            result = decode_rows(
                self.spec, session_id, plain, on_invalid=self.on_invalid, invalid_keys=invalid
            )
        except StoredValueError as exc:
            if exc.key not in self.spec.encrypted:
                raise
            # The message names the key and the reason, never the decrypted text.
            stored = dict(rows)[exc.key]
            raise StoredValueError(session_id, exc.key, stored, exc.reason) from None
        for key in invalid:
            logger.warning(
                "session %r, key %r: stored value does not fit %s; read as the default",
                session_id,
                key,
                self.spec.name,
            )
        return result

    async def fetch(self, statement: Any, params: dict[str, Any]) -> list[Sequence[Any]]:
        """The rows of one read statement on the primary (tables created first when asked)."""
        await self.ensure_tables()
        rows: list[Sequence[Any]] = await self.db.fetch(statement, params)
        return rows

    async def query(
        self, statement: Any, params: dict[str, Any], *, session_id: str | None = None
    ) -> list[Sequence[Any]]:
        """The rows of a query (a find, listing, count or bulk read): on the read replica
        when there is one, which may lag behind the primary."""
        # Tables are created on the primary; the replica has them once it replays that.
        await self.ensure_tables()
        rows: list[Sequence[Any]] = await self.reader.fetch(
            statement, params, session_id=session_id
        )
        return rows

    # Reads

    async def rows(self, session_id: str, keys: list[str] | None) -> list[tuple[str, str]]:
        """The stored ``(key, value)`` rows of one session, every key or ``keys`` only."""
        await self.ensure_tables()
        statement = self.statements.select_values(None if keys is None else len(keys))
        params = self._key_params(session_id, keys)
        found = await self.db.fetch(statement, params, session_id=session_id)
        return [(key, value) for key, value in found]

    async def exists(self, session_id: str) -> bool:
        """Whether the session has its row in the sessions table."""
        await self.ensure_tables()
        statement = self.statements.session_exists()
        found = await self.db.fetch(statement, {"session_id": session_id}, session_id=session_id)
        return bool(found)

    async def session_rows(self, session_id: str) -> list[Row]:
        """Every stored row of one session with its hash, in one statement (one snapshot)."""
        await self.ensure_tables()
        statement = self.statements.session_rows()
        found = await self.db.fetch(statement, {"session_id": session_id}, session_id=session_id)
        return [(key, value, value_hash) for key, value, value_hash in found]

    # Writes

    async def write(
        self, session_id: str, rows: list[EncodedValue], *, fresh: bool = False
    ) -> None:
        """Store ``rows``, creating the session row when missing; other keys stay.

        ``fresh``: the session is new (``get_or_create_by``), so it holds no claims.
        """
        await self.ensure_tables()
        unique_keys = self.claims.affected(row.key for row in rows)
        if unique_keys:
            await self._write_claiming(session_id, rows, unique_keys, fresh=fresh)
            return
        if self.statements.upsert_creates_session:
            # One statement creates the session row and writes the values.
            try:
                await self.db.run(
                    lambda db: self.write_rows(db, session_id, rows), session_id=session_id
                )
            except SessionRowMissing as exc:
                # The seam reports a foreign-key failure so: the session was deleted
                # between the statement's insert and its foreign-key check.
                raise ConcurrencyError(
                    f"session {session_id!r} was deleted during the write",
                    session_id=session_id,
                ) from exc
            return
        if not self.db.in_caller_transaction:
            # Most writes go to a session that exists: try without creating it first
            # (one statement, or a transaction when lists' elements follow).
            try:
                await self.db.run(
                    lambda db: self.write_rows(db, session_id, rows),
                    session_id=session_id,
                    transaction=any(row.items is not None for row in rows),
                )
                return
            except SessionRowMissing:
                pass

        async def create_and_write(db: Connection) -> None:
            create = (self.statements.insert_session(), {"session_id": session_id})
            await db.execute_all([create, *self.write_batch(session_id, rows)])

        await self.db.run(create_and_write, session_id=session_id, transaction=True)

    async def _write_claiming(
        self, session_id: str, rows: list[EncodedValue], unique_keys: list[str], *, fresh: bool
    ) -> None:
        """:meth:`write` of rows that change unique keys: the session row, the values and
        the claims in one transaction."""

        async def create_and_write(db: Connection) -> None:
            batch = self.write_batch(session_id, rows)
            if not self.statements.upsert_creates_session:
                batch.insert(0, (self.statements.insert_session(), {"session_id": session_id}))
            await db.execute_all(batch)
            await self._refresh(db, {session_id: (rows, [])}, unique_keys, fresh=fresh)

        try:
            await self.claims.guarded(
                lambda: self.db.run(create_and_write, session_id=session_id, transaction=True)
            )
        except SessionRowMissing as exc:
            raise ConcurrencyError(
                f"session {session_id!r} was deleted during the write", session_id=session_id
            ) from exc

    async def _refresh(
        self,
        db: Connection,
        changes: dict[str, tuple[list[EncodedValue], list[str] | None]],
        unique_keys: list[str],
        *,
        fresh: bool = False,
    ) -> None:
        """Claim again the unique ``unique_keys`` of the sessions ``changes`` wrote (rows)
        or deleted from (keys), in their transaction; a refusal carries ``changes``."""
        try:
            await self.claims.refresh(db, list(changes), unique_keys, fresh=fresh)
        except ClaimTaken as taken:
            taken.writes = changes
            raise

    async def write_many(self, rows: dict[str, list[EncodedValue]]) -> None:
        """Store each session's ``rows`` in one transaction, creating missing session rows.

        All sessions are written or none; other keys of each session stay. The
        statements come in chunks (``Statements.write_many``): as many for ten
        sessions as for a few thousand.
        """
        if self.default_ttls:
            rows = {
                session_id: with_ttls(session_rows, None, self.default_ttls)
                for session_id, session_rows in rows.items()
            }
        batch = self.statements.write_many(
            {
                session_id: seal_rows(self.spec, session_id, values)
                for session_id, values in rows.items()
            }
        )
        if not batch:
            return
        await self.ensure_tables()
        # Sessions by the unique keys their rows change (most calls: one group).
        claiming: dict[tuple[str, ...], list[str]] = {}
        for session_id, session_rows in rows.items():
            unique_keys = self.claims.affected(row.key for row in session_rows)
            if unique_keys:
                claiming.setdefault(tuple(unique_keys), []).append(session_id)

        async def work(db: Connection) -> None:
            await db.execute_all(batch)
            for unique_keys, ids in claiming.items():
                changes: dict[str, tuple[list[EncodedValue], list[str] | None]] = {
                    session_id: (rows[session_id], []) for session_id in ids
                }
                await self._refresh(db, changes, list(unique_keys))

        try:
            if claiming:
                await self.claims.guarded(lambda: self.db.run(work, transaction=True))
            else:
                await self.db.run(lambda db: db.execute_all(batch), transaction=len(batch) > 1)
        except SessionRowMissing as exc:
            # PostgreSQL: a session was deleted between the statement's insert and its
            # foreign-key check.
            raise ConcurrencyError(
                "a session was deleted during the bulk write; nothing was written"
            ) from exc

    async def delete_many(self, ids: list[str], keys: list[str] | None) -> None:
        """Delete ``keys`` (or every key) of the sessions ``ids``, in one transaction."""
        batch = self.statements.delete_many(ids, keys)
        if not batch:
            return
        await self.ensure_tables()
        unique_keys = self.claims.affected(keys)
        if not unique_keys:
            await self.db.run(lambda db: db.execute_all(batch), transaction=len(batch) > 1)
            return
        changes: dict[str, tuple[list[EncodedValue], list[str] | None]] = {
            session_id: ([], keys) for session_id in ids
        }

        async def work(db: Connection) -> None:
            await db.execute_all(batch)
            await self._refresh(db, changes, unique_keys)

        await self.claims.guarded(lambda: self.db.run(work, transaction=True))

    async def delete(self, session_id: str, keys: list[str] | None) -> None:
        """Delete ``keys`` of one session, or every key (after locking the session, in one
        transaction, where the backend needs that: ``Statements.delete_one``)."""
        await self.ensure_tables()
        batch = self.statements.delete_one(session_id, keys)
        unique_keys = self.claims.affected(keys)
        if not unique_keys:
            await self.db.run(
                lambda db: db.execute_all(batch), session_id=session_id, transaction=len(batch) > 1
            )
            return

        async def work(db: Connection) -> None:
            await db.execute_all(batch)
            await self._refresh(db, {session_id: ([], keys)}, unique_keys)

        await self.claims.guarded(
            lambda: self.db.run(work, session_id=session_id, transaction=True)
        )

    async def delete_rows(self, db: Connection, session_id: str, keys: list[str] | None) -> None:
        """Delete ``keys`` (or every key) of one session, inside the caller's unit of work."""
        params = self._key_params(session_id, keys)
        for statement in self.statements.delete_values(None if keys is None else len(keys)):
            await db.execute(statement, params)
        await self._refresh(db, {session_id: ([], keys)}, self.claims.affected(keys))

    def _key_params(self, session_id: str, keys: list[str] | None) -> dict[str, Any]:
        params: dict[str, Any] = {"session_id": session_id}
        if keys is not None:
            params.update(self.statements.spelling.key_params(keys))
        return params

    async def locked(
        self,
        session_id: str,
        body: Callable[[Connection, list[Row]], Awaitable[T]],
        *,
        create: bool,
    ) -> T | None:
        """Run ``body`` on the session's current rows, in a transaction holding its lock.

        The session row is locked first and then its value rows, so every locked
        transaction on a session queues at one place; a plain write waits for it.
        With ``create`` a missing session row is created first (two transactions on a
        new session still queue on its lock); without it, a missing session skips
        ``body`` and gives ``None``.
        """
        await self.ensure_tables()
        statements = self.statements
        lock_session = statements.lock_session()
        lock_rows = statements.lock_rows()
        params = {"session_id": session_id}

        async def work(db: Connection) -> T | None:
            if create:
                await self.insert_session(db, session_id)
            if not await db.fetch(lock_session, params):
                return None
            found = await db.fetch(lock_rows, params)
            rows = [(key, value, value_hash) for key, value, value_hash in found]
            return await body(db, rows)

        if not self.spec.unique:
            return await self.db.run(work, session_id=session_id, transaction=True)
        return await self.claims.guarded(
            lambda: self.db.run(work, session_id=session_id, transaction=True)
        )

    async def replace_history(
        self, session_id: str, messages_table: str, messages: list[str]
    ) -> bool:
        """Replace a session's whole history (the Agents SDK's messages table) with
        ``messages``, stored JSON texts, in one transaction holding the session's lock.

        The session row stays, and with it the metadata; ``False`` when it is missing.
        The new messages take the time of the newest message they replace, as the SDK's
        own suffix replacement does: a message added after the replacement then follows
        them. (On PostgreSQL a message's time is its transaction's start: one added by a
        transaction that began before the replacement, and waited for its lock, would
        otherwise come before them.)
        """
        statements = self.statements
        params = {"session_id": session_id}

        async def replace(db: Connection, rows: list[Row]) -> bool:
            # The time as the database stored it, bound back unconverted (SQLite: its text).
            found = await db.fetch(statements.history_end(messages_table), params)
            end = found[0][0] if found else None
            await db.execute(statements.delete_history(messages_table), params)
            append = statements.append_history(messages_table)
            for message in messages:
                await db.execute(
                    append, {"session_id": session_id, "message_data": message, "created_at": end}
                )
            await db.execute(statements.touch_session(), params)
            return True

        return await self.locked(session_id, replace, create=False) is True

    async def insert_session(self, db: Connection, session_id: str) -> None:
        """Create the session row if it is missing (inside the caller's unit of work)."""
        await db.execute(self.statements.insert_session(), {"session_id": session_id})

    async def write_rows(self, db: Connection, session_id: str, rows: list[EncodedValue]) -> None:
        """Write the value rows of one session: every write path comes here.

        Plain writes, conditional writes, claims and atomic add/remove all store
        values through this one method. On PostgreSQL it is one statement that also
        keeps the items table in step; elsewhere the items of rewritten lists follow,
        so callers run it in a transaction when a row holds a list.
        """
        await db.execute_all(self.write_batch(session_id, rows))
        unique_keys = self.claims.affected(row.key for row in rows)
        if unique_keys:
            await self._refresh(db, {session_id: (rows, [])}, unique_keys)

    def write_batch(self, session_id: str, rows: list[EncodedValue]) -> Batch:
        """The statements of :meth:`write_rows`: the upsert, then (but on PostgreSQL,
        whose upsert does it) the items of rewritten list and set values."""
        if not rows:
            return []
        rows = seal_rows(self.spec, session_id, with_ttls(rows, None, self.default_ttls))
        statements = self.statements
        upsert = statements.upsert(len(rows))
        batch: Batch = [(upsert, statements.spelling.upsert_params(session_id, rows))]
        if not statements.upsert_creates_session:
            collections = [row for row in rows if row.items is not None]
            if collections:
                batch.extend(self.items_batch(session_id, collections))
        return batch

    def items_batch(self, session_id: str, collections: list[EncodedValue]) -> Batch:
        """Replace the elements of rewritten list and set values: they serve ``contains``."""
        statements = self.statements
        params: dict[str, Any] = {"session_id": session_id}
        params.update({f"key{index}": row.key for index, row in enumerate(collections)})
        batch: Batch = [(statements.delete_items(len(collections)), params)]
        items = [
            (session_id, row.key, row.value_hash, item)
            for row in collections
            for item in row.items or ()
        ]
        for start in range(0, len(items), ITEMS_PER_STATEMENT):
            chunk = items[start : start + ITEMS_PER_STATEMENT]
            insert_items = statements.insert_items(len(chunk))
            batch.append((insert_items, statements.spelling.item_params(chunk)))
        return batch
