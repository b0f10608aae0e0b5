"""The store: typed metadata of many sessions, and the handle bound to one of them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Literal

from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ._atomic import Versioned, change_items, read_versioned, set_if_version
from ._codec import EncodedValue, decode_rows, encode_model
from ._driver import Driver, TransientError, connect, driver_class
from ._filters import FilterArg, OrderArg
from ._lock_statements import lock_statements
from ._model import HasSessionId, ModelSpec, ModelT, check_session_id
from ._page import Page, SessionListing
from ._retry import retrying
from ._schema import build_tables
from ._search import Searcher
from ._sql import QuerySQL
from ._statements import statements_for
from .errors import DatabaseError

if TYPE_CHECKING:
    from ._scoped import ScopedStore

__all__ = ["BoundMetadata", "MetadataStore", "OnInvalid"]

logger = logging.getLogger("sessionmeta")

OnInvalid = Literal["raise", "default"]
ITEMS_PER_STATEMENT = 500


class MetadataStore(Generic[ModelT]):
    """Typed metadata for the sessions of one database, one row per key.

    ``model`` is the application's :class:`~sessionmeta.SessionMeta` subclass;
    ``engine`` an async SQLAlchemy engine on SQLite (aiosqlite), PostgreSQL
    (asyncpg) or MySQL/MariaDB (aiomysql). With ``create_tables=True`` the
    sessions table (when missing) and the metadata table are created on first
    use; an existing sessions table is never altered. ``on_invalid="default"``
    reads a stored value that no longer validates as the field's default, with
    a warning, instead of raising :class:`~sessionmeta.StoredValueError`.
    ``connect_timeout`` (seconds, ``None`` for none) bounds each wait for a
    connection, so a database that is down or silent raises
    :class:`~sessionmeta.DatabaseError` instead of hanging.
    """

    def __init__(
        self,
        model: type[ModelT],
        engine: AsyncEngine,
        *,
        create_tables: bool = False,
        sessions_table: str = "agent_sessions",
        metadata_table: str = "agent_sessions_metadata",
        on_invalid: OnInvalid = "raise",
        connect_timeout: float | None = 30.0,
    ) -> None:
        if on_invalid not in ("raise", "default"):
            raise ValueError(f"on_invalid must be 'raise' or 'default', not {on_invalid!r}")
        self.model = model
        self.spec = ModelSpec(model)
        self.engine = engine
        self.on_invalid: OnInvalid = on_invalid
        self.connect_timeout = connect_timeout
        self.tables = build_tables(sessions_table, metadata_table)
        self.statements = statements_for(engine.dialect, self.tables)
        self.lock_statements = lock_statements(self.statements)
        self._driver = driver_class(engine)
        self._tables_pending = create_tables
        self._tables_lock = asyncio.Lock()
        self._owns_engine = False
        self._search: Searcher[ModelT] = Searcher(self, QuerySQL(engine.dialect, self.tables))

    @classmethod
    def from_url(
        cls,
        model: type[ModelT],
        url: str,
        *,
        engine_kwargs: Mapping[str, Any] | None = None,
        create_tables: bool = False,
        sessions_table: str = "agent_sessions",
        metadata_table: str = "agent_sessions_metadata",
        on_invalid: OnInvalid = "raise",
        connect_timeout: float | None = 30.0,
    ) -> MetadataStore[ModelT]:
        """A store on a new engine for ``url``, disposed of by :meth:`close`."""
        try:
            engine = create_async_engine(url, **dict(engine_kwargs or {}))
        except Exception as exc:
            raise DatabaseError(f"cannot use database URL {url!r}: {exc}") from exc
        store = cls(
            model,
            engine,
            create_tables=create_tables,
            sessions_table=sessions_table,
            metadata_table=metadata_table,
            on_invalid=on_invalid,
            connect_timeout=connect_timeout,
        )
        store._owns_engine = True
        return store

    @property
    def sql_metadata(self) -> MetaData:
        """The SQLAlchemy ``MetaData`` of the tables, e.g. as Alembic's ``target_metadata``."""
        return self.tables.metadata

    def _connect(self, session_id: str | None = None) -> AbstractAsyncContextManager[Driver]:
        """A pooled driver connection, within ``connect_timeout``."""
        return connect(
            self.engine, self._driver, session_id=session_id, timeout=self.connect_timeout
        )

    async def create_tables(self) -> None:
        """Create the sessions table (when missing) and the metadata table, with indexes."""

        async def create() -> None:
            async with self.engine.begin() as connection:
                await connection.run_sync(self.tables.metadata.create_all)

        try:
            await asyncio.wait_for(create(), self.connect_timeout)
        except asyncio.TimeoutError as exc:
            raise DatabaseError(
                f"cannot create the tables: no answer within {self.connect_timeout} s "
                "(the store's connect_timeout)"
            ) from exc
        except Exception as exc:
            raise DatabaseError(f"cannot create the tables: {exc}") from exc
        self._tables_pending = False

    async def _ensure_tables(self) -> None:
        if not self._tables_pending:
            return
        async with self._tables_lock:
            if self._tables_pending:
                await self.create_tables()

    async def close(self) -> None:
        """Dispose of the engine if this store created it (:meth:`from_url`)."""
        if self._owns_engine:
            await self.engine.dispose()

    async def __aenter__(self) -> MetadataStore[ModelT]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def bind(self, session: str | HasSessionId) -> BoundMetadata[ModelT]:
        """The metadata of one session, given its id or an object with ``session_id``."""
        return BoundMetadata(self, check_session_id(session))

    async def find_sessions_by_metadata(
        self, key: str, value: Any, *, limit: int = 100
    ) -> list[str]:
        """Ids of sessions whose stored ``key`` equals ``value``, in id order, at most ``limit``.

        ``value`` is validated and encoded through the field's type first, so it
        matches exactly what :meth:`BoundMetadata.set_metadata` stored.
        """
        _check_limit(limit)
        field = self.spec.field(key)
        (row,) = encode_model(self.spec, self.spec.validate_values({field.key: value}))
        await self._ensure_tables()
        statement = self.statements.find_equal()
        args = statement.args({"key": row.key, "value_hash": row.value_hash, "limit": limit})
        async with self._connect() as db:
            rows = await db.fetch(statement, args)
            await db.end_read()
        return [session_id for (session_id,) in rows]

    async def find_sessions(
        self,
        *filters: FilterArg,
        order_by: OrderArg = "session_id",
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[str]:
        """Ids of the sessions matching every filter, in order, at most ``limit``.

        Filters are conditions (``Condition`` or ``field(...)`` expressions), groups
        from :func:`all_of`/:func:`any_of`, mappings of keys to values (equality),
        or lists of those. ``order_by`` is ``"session_id"`` (default), ``"created_at"``,
        ``"updated_at"`` or a metadata key, with ``-`` in front for descending, or an
        :class:`OrderBy`. The page's ``next_cursor``, passed back as ``cursor``,
        continues after its last session. Everything is checked before any I/O.
        """
        return await self._search.find(filters, order_by=order_by, limit=limit, cursor=cursor)

    async def list_sessions(
        self,
        *filters: FilterArg,
        order_by: OrderArg = "session_id",
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[SessionListing[ModelT]]:
        """Like :meth:`find_sessions`, with each session's typed metadata, in one query."""
        return await self._search.listing(filters, order_by=order_by, limit=limit, cursor=cursor)

    async def count_sessions(self, *filters: FilterArg) -> int:
        """How many sessions match every filter (all sessions when none are given)."""
        return await self._search.count(filters)

    async def get_many(self, sessions: Iterable[str | HasSessionId]) -> dict[str, ModelT]:
        """The metadata of several sessions in one query, keyed by session id.

        Every requested id is in the result; a session with nothing stored reads
        as the model's defaults, as :meth:`BoundMetadata.get_metadata` does.
        """
        return await self._search.many(sessions)

    def scoped(
        self, scope: Mapping[str, Any] | None = None, /, **pairs: Any
    ) -> ScopedStore[ModelT]:
        """A view that only sees sessions whose given keys hold the given values.

        ``store.scoped(owner_id="u1")`` (or ``store.scoped({"owner-id": "u1"})`` for
        keys that are not identifiers): its finds, listings, counts and bulk reads
        only return that tenant's sessions, and its ``bind`` refuses another
        tenant's session with :class:`~sessionmeta.SessionNotInScopeError`.
        """
        from ._scoped import ScopedStore

        return ScopedStore(self, {**(scope or {}), **pairs})

    async def _write(self, session_id: str, rows: list[EncodedValue]) -> None:
        await self._ensure_tables()
        await retrying(lambda: self._write_once(session_id, rows))

    async def _write_once(self, session_id: str, rows: list[EncodedValue]) -> None:
        async with self._connect(session_id) as db:
            if self.statements.upsert_creates_session:
                try:
                    await self._write_rows(db, session_id, rows)
                except Exception as exc:
                    # The session row was deleted between the statement's insert and its
                    # foreign-key check: the next attempt creates it again.
                    if db.is_foreign_key_violation(exc):
                        raise TransientError(
                            f"session {session_id!r} was deleted during the write",
                            session_id=session_id,
                        ) from exc
                    raise
                return
            if any(row.items is not None for row in rows):
                # Values and their elements (the items table): several statements,
                # so one transaction.
                await db.begin()
                await self._insert_session(db, session_id)
                await self._write_rows(db, session_id, rows)
                await db.commit()
                return
            # Most writes go to a session that exists: try the one statement first.
            try:
                await self._write_rows(db, session_id, rows)
                await db.end_write()
                return
            except Exception as exc:
                if not db.is_foreign_key_violation(exc):
                    raise
                await db.rollback()
            await db.begin()
            await self._insert_session(db, session_id)
            await self._write_rows(db, session_id, rows)
            await db.commit()

    async def _insert_session(self, db: Driver, session_id: str) -> None:
        """Create the session row if it is missing."""
        insert_session = self.statements.insert_session()
        await db.execute(insert_session, insert_session.args({"session_id": session_id}))

    async def _write_rows(self, db: Driver, session_id: str, rows: list[EncodedValue]) -> None:
        """Write the value rows of one session: every write path comes here.

        Plain writes, conditional writes and atomic add/remove all store values
        through this one method, so a change to how values are stored (a side
        table, say) goes here and nowhere else. Callers run it inside a
        transaction, except the plain write on PostgreSQL, which runs it as one
        autocommitted statement: adding a second statement here means opening a
        transaction there too.
        """
        upsert = self.statements.upsert(len(rows))
        params = self.statements.spelling.upsert_params(session_id, rows)
        await db.execute(upsert, upsert.args(params))
        if self.statements.upsert_creates_session:
            return  # PostgreSQL's upsert keeps the items table in step itself
        collections = [row for row in rows if row.items is not None]
        if collections:
            await self._write_items(db, session_id, collections)

    async def _write_items(
        self, db: Driver, session_id: str, collections: list[EncodedValue]
    ) -> None:
        """Replace the elements of rewritten list and set values (inside the caller's
        transaction): they serve ``contains`` through the items table."""
        statements = self.statements
        delete_items = statements.delete_items(len(collections))
        params: dict[str, Any] = {"session_id": session_id}
        params.update({f"key{index}": row.key for index, row in enumerate(collections)})
        await db.execute(delete_items, delete_items.args(params))
        items = [(row.key, row.value_hash, item) for row in collections for item in row.items or ()]
        # In chunks: SQLite takes at most 32,766 parameters per statement.
        for start in range(0, len(items), ITEMS_PER_STATEMENT):
            chunk = items[start : start + ITEMS_PER_STATEMENT]
            insert_items = statements.insert_items(len(chunk))
            chunk_params: dict[str, Any] = {"session_id": session_id}
            for index, (key, value_hash, item) in enumerate(chunk):
                chunk_params[f"ik{index}"] = key
                chunk_params[f"ivh{index}"] = value_hash
                chunk_params[f"ih{index}"] = item
            await db.execute(insert_items, insert_items.args(chunk_params))

    async def _claim(self, session_id: str, rows: list[EncodedValue]) -> None:
        """Store ``rows`` for the keys the session lacks, leaving stored keys alone."""
        await self._ensure_tables()
        await retrying(lambda: self._claim_once(session_id, rows))

    async def _claim_once(self, session_id: str, rows: list[EncodedValue]) -> None:
        statements = self.statements
        claim = statements.claim(len(rows))
        args = claim.args(statements.spelling.row_params(session_id, rows))
        async with self._connect(session_id) as db:
            if statements.upsert_creates_session:
                await db.execute(claim, args)
                return
            await db.begin()
            await self._insert_session(db, session_id)
            await db.execute(claim, args)
            await db.commit()

    async def _read(self, session_id: str, keys: list[str] | None) -> ModelT:
        return self._decode(session_id, await self._rows(session_id, keys))

    async def _rows(self, session_id: str, keys: list[str] | None) -> list[tuple[str, str]]:
        """The stored (key, value) rows of one session."""
        await self._ensure_tables()
        return await retrying(lambda: self._rows_once(session_id, keys))

    async def _rows_once(self, session_id: str, keys: list[str] | None) -> list[tuple[str, str]]:
        statement = self.statements.select_values(None if keys is None else len(keys))
        params: dict[str, Any] = {"session_id": session_id}
        if keys is not None:
            params.update(self.statements.spelling.key_params(keys))
        async with self._connect(session_id) as db:
            rows = await db.fetch(statement, statement.args(params))
            await db.end_read()
        return [(key, value) for key, value in rows]

    def _decode(self, session_id: str, rows: list[tuple[str, str]]) -> ModelT:
        invalid: list[str] = []
        result = decode_rows(
            self.spec, session_id, rows, on_invalid=self.on_invalid, invalid_keys=invalid
        )
        for key in invalid:
            logger.warning(
                "session %r, key %r: stored value does not fit %s; read as the default",
                session_id,
                key,
                self.spec.name,
            )
        return result

    async def _delete(self, session_id: str, keys: list[str] | None) -> None:
        await self._ensure_tables()
        await retrying(lambda: self._delete_once(session_id, keys))

    async def _delete_once(self, session_id: str, keys: list[str] | None) -> None:
        statement = self.statements.delete_values(None if keys is None else len(keys))
        params: dict[str, Any] = {"session_id": session_id}
        if keys is not None:
            params.update(self.statements.spelling.key_params(keys))
        async with self._connect(session_id) as db:
            await db.execute(statement, statement.args(params))
            await db.end_write()


def _check_limit(limit: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a positive integer, not {limit!r}")


class BoundMetadata(Generic[ModelT]):
    """The metadata of one session: the proposal's calls, typed by the model."""

    def __init__(self, store: MetadataStore[ModelT], session_id: str) -> None:
        self.store = store
        self.session_id = session_id

    def __repr__(self) -> str:
        return f"BoundMetadata({self.store.spec.name}, session_id={self.session_id!r})"

    async def set_metadata(
        self, values: ModelT | Mapping[str, Any], *, expected_version: str | None = None
    ) -> None:
        """Write ``values``: a model (its explicitly set fields) or a mapping of keys to values.

        Everything is validated before any I/O: a bad value raises
        :class:`pydantic.ValidationError` naming every bad field, an unknown key
        :class:`~sessionmeta.UnknownKeyError`, and then nothing is written. The
        session row is created when missing; other keys are left as they are.
        With ``expected_version`` (from :meth:`get_metadata_versioned`) the write
        happens only if the session has not changed since: otherwise
        :class:`~sessionmeta.ConflictError`, and nothing is written.
        """
        if expected_version is not None and not isinstance(expected_version, str):
            raise TypeError(
                "expected_version must be the .version string of get_metadata_versioned(), "
                f"not {type(expected_version).__name__}"
            )
        spec = self.store.spec
        rows = encode_model(spec, spec.validate_values(values, session_id=self.session_id))
        if expected_version is not None:
            await set_if_version(self.store, self.session_id, rows, expected_version)
        elif rows:
            await self.store._write(self.session_id, rows)

    async def get_metadata_versioned(self, keys: Iterable[str] | None = None) -> Versioned[ModelT]:
        """:meth:`get_metadata`, with the session's version for a conditional ``set_metadata``.

        The version covers every key the model declares, whichever ``keys`` were read.
        """
        resolved = self.store.spec.resolve_keys(keys, session_id=self.session_id)
        return await read_versioned(self.store, self.session_id, resolved)

    async def add_to(self, key: str, *items: Any) -> None:
        """Add ``items`` to the list or set field ``key`` atomically: concurrent adds all land.

        A list gains the items at its end, a set their union; a missing value
        counts as empty. Items are validated as the field's type before any I/O.
        """
        await change_items(self.store, self.session_id, key, items, "add")

    async def remove_from(self, key: str, *items: Any) -> None:
        """Remove ``items`` from the list or set field ``key`` atomically.

        A list loses every occurrence of each item; items not present are ignored.
        """
        await change_items(self.store, self.session_id, key, items, "remove")

    async def get_metadata(self, keys: Iterable[str] | None = None) -> ModelT:
        """The stored metadata as the model; missing keys read as their defaults.

        The result's ``model_fields_set`` is exactly the stored keys among those
        asked for. ``keys`` (names or storage keys) narrows what is read.
        """
        resolved = self.store.spec.resolve_keys(keys, session_id=self.session_id)
        if resolved == []:
            return self.store.model()
        return await self.store._read(self.session_id, resolved)

    async def delete_metadata(self, keys: Iterable[str] | None = None) -> None:
        """Delete the named keys, or every key of the session when ``keys`` is ``None``."""
        resolved = self.store.spec.resolve_keys(keys, session_id=self.session_id)
        if resolved == []:
            return
        await self.store._delete(self.session_id, resolved)

    async def find_sessions_by_metadata(
        self, key: str, value: Any, *, limit: int = 100
    ) -> list[str]:
        """The store's :meth:`MetadataStore.find_sessions_by_metadata`, for convenience."""
        return await self.store.find_sessions_by_metadata(key, value, limit=limit)
