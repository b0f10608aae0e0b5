"""The store: typed metadata of many sessions, its queries, views and bound handles."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Generic

from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from sessionmeta.core.bulk import encode_sessions, session_ids
from sessionmeta.core.claims import check_distinct
from sessionmeta.core.encryption import EncryptionKeys
from sessionmeta.core.expiry import check_ttl, with_ttls
from sessionmeta.core.filters import FilterArg, OrderArg
from sessionmeta.core.page import Page, SessionListing
from sessionmeta.core.spec import HasSessionId, ModelSpec, ModelT, check_session_id
from sessionmeta.errors import DatabaseError, InvalidArgumentError
from sessionmeta.io.bound import BoundMetadata
from sessionmeta.io.database import Database, shown_url
from sessionmeta.io.lookup import NewSessionId, get_or_create_by, plan_lookup
from sessionmeta.io.operations import OnInvalid, Operations
from sessionmeta.io.rekey import DEFAULT_REKEY_BATCH_SIZE, RekeyReport, rekey_store
from sessionmeta.io.retry import RetryPolicy
from sessionmeta.io.scoped import ScopedStore
from sessionmeta.io.search import Searcher
from sessionmeta.io.sweep import SweepResult, sweep
from sessionmeta.sql.plans import QuerySQL
from sessionmeta.sql.schema import Tables, build_tables
from sessionmeta.sql.statements import statements_for

__all__ = ["BoundMetadata", "MetadataStore", "OnInvalid", "SweepResult"]


class MetadataStore(Generic[ModelT]):
    """Typed metadata for the sessions of one database, one row per key.

    ``model`` is the application's :class:`~sessionmeta.SessionMeta` subclass;
    ``engine`` an async SQLAlchemy engine on SQLite (aiosqlite), PostgreSQL
    (asyncpg or psycopg) or MySQL/MariaDB (aiomysql). With ``create_tables=True``
    the sessions table (when missing) and the metadata tables are created on first
    use; an existing sessions table is never altered. ``on_invalid="default"``
    reads a stored value that no longer validates as the field's default, with
    a warning, instead of raising :class:`~sessionmeta.StoredValueError`.
    ``connect_timeout`` (seconds, ``None`` for none) bounds each wait for a
    connection, so a database that is down or silent raises
    :class:`~sessionmeta.DatabaseError` instead of hanging. ``retry`` says how
    often an operation the database aborted for a concurrent one is run again.
    On a SQLite database file the store switches the file from SQLite's rollback
    journal to WAL (write-ahead logging, kept by the file); ``sqlite_wal=False``
    leaves the journal mode as it is, for every store on the engine.

    ``keys`` (:class:`~sessionmeta.EncryptionKeys`) encrypt the fields declared
    ``Encrypted()``; a model with such fields needs them. See docs/encryption.md.

    Expiry (``ttl=`` on writes, ``Expires`` on fields) runs on the database's
    clock. ``clock_offset``, for tests only, moves that clock on by a
    ``timedelta`` in every statement this store runs (reads, ttls, ``sweep``), so a
    test sees tomorrow's state without waiting; other stores keep the real clock.

    ``read_engine`` (an engine on a read replica of the same database, same dialect
    and driver) takes the queries: finds, listings, counts and :meth:`get_many`.
    A replica may lag behind the primary, so a query there may miss a write just
    made; :meth:`on_primary` is the store with its queries on the primary.
    Writes, single-session reads (``bind(...).get_metadata()``, versioned reads,
    ``exists``), scoped views' checks, ``using(connection)`` and ``sessionmeta
    check`` always run on the primary.

    One store serves the whole application: share it across requests and tasks.
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
        retry: RetryPolicy | None = None,
        sqlite_wal: bool = True,
        read_engine: AsyncEngine | None = None,
        keys: EncryptionKeys | None = None,
        clock_offset: dt.timedelta | None = None,
    ) -> None:
        if on_invalid not in ("raise", "default"):
            raise InvalidArgumentError(
                f"on_invalid must be 'raise' or 'default', not {on_invalid!r}"
            )
        if connect_timeout is not None and (
            isinstance(connect_timeout, bool)
            or not isinstance(connect_timeout, (int, float))
            or not connect_timeout > 0
        ):
            raise InvalidArgumentError(
                f"connect_timeout must be a positive number of seconds or None, "
                f"not {connect_timeout!r}"
            )
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise InvalidArgumentError(f"retry must be a RetryPolicy, not {retry!r}")
        if not isinstance(sqlite_wal, bool):
            raise InvalidArgumentError(f"sqlite_wal must be True or False, not {sqlite_wal!r}")
        if not isinstance(engine, AsyncEngine):
            raise InvalidArgumentError(
                f"engine must be a SQLAlchemy AsyncEngine (create_async_engine), not {engine!r}"
            )
        if read_engine is not None:
            _check_read_engine(engine, read_engine)
        if keys is not None and not isinstance(keys, EncryptionKeys):
            raise InvalidArgumentError(f"keys must be EncryptionKeys, not {keys!r}")
        if clock_offset is not None and not isinstance(clock_offset, dt.timedelta):
            raise InvalidArgumentError(
                f"clock_offset must be a datetime.timedelta or None, not {clock_offset!r}"
            )
        self.model = model
        self.spec = ModelSpec(model, keys=keys)
        if self.spec.encrypted and keys is None:
            raise InvalidArgumentError(
                f"{self.spec.name} declares Encrypted() fields "
                f"({', '.join(map(repr, self.spec.encrypted))}): pass keys=EncryptionKeys(...)"
            )
        self.engine = engine
        self.on_invalid: OnInvalid = on_invalid
        self.connect_timeout = connect_timeout
        offset = (clock_offset or dt.timedelta(0)) // dt.timedelta(microseconds=1)
        self.tables: Tables = build_tables(sessions_table, metadata_table, clock_offset=offset)
        statements = statements_for(engine.dialect, self.tables)
        db = Database(
            engine,
            connect_timeout=connect_timeout,
            retry=retry or RetryPolicy(),
            sqlite_wal=sqlite_wal,
        )
        self.read_engine = read_engine
        replica = None
        if read_engine is not None:
            replica = Database(
                read_engine,
                connect_timeout=connect_timeout,
                retry=db.retry,
                sqlite_wal=sqlite_wal,
                replica=True,
            )
        self.ops: Operations[ModelT] = Operations(
            self.spec,
            statements,
            db,
            on_invalid=on_invalid,
            create_tables=create_tables,
            replica=replica,
        )
        self.search: Searcher[ModelT] = Searcher(self.ops, QuerySQL(engine.dialect, self.tables))
        self._owns_engine = False

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
        retry: RetryPolicy | None = None,
        sqlite_wal: bool = True,
        read_url: str | None = None,
        keys: EncryptionKeys | None = None,
        clock_offset: dt.timedelta | None = None,
    ) -> MetadataStore[ModelT]:
        """A store on a new engine for ``url`` (and one for the read replica at
        ``read_url``, with the same ``engine_kwargs``), disposed of by :meth:`close`."""
        engine = _new_engine(url, engine_kwargs)
        read_engine = None
        if read_url is not None:
            # (Should this fail, the first engine has connected nothing yet.)
            read_engine = _new_engine(read_url, engine_kwargs, "read replica ")
        store = cls(
            model,
            engine,
            create_tables=create_tables,
            sessions_table=sessions_table,
            metadata_table=metadata_table,
            on_invalid=on_invalid,
            connect_timeout=connect_timeout,
            retry=retry,
            sqlite_wal=sqlite_wal,
            read_engine=read_engine,
            keys=keys,
            clock_offset=clock_offset,
        )
        store._owns_engine = True
        return store

    def __repr__(self) -> str:
        url = shown_url(self.engine.url)
        where = ", in the caller's transaction" if self.ops.db.in_caller_transaction else ""
        if self.ops.replica is not None:
            where += f", read_engine={shown_url(self.ops.replica.engine.url)!r}"
        return f"MetadataStore({self.spec.name}, {url!r}, table={self.tables.values.name!r}{where})"

    @property
    def db(self) -> Database:
        """The database seam this store runs on."""
        return self.ops.db

    @property
    def retry(self) -> RetryPolicy:
        return self.ops.db.retry

    @property
    def sql_metadata(self) -> MetaData:
        """The SQLAlchemy ``MetaData`` of the tables, e.g. as Alembic's ``target_metadata``."""
        return self.tables.metadata

    def using(self, connection: AsyncConnection) -> MetadataStore[ModelT]:
        """This store's whole API on ``connection``, inside the caller's transaction.

        ``connection`` is a SQLAlchemy ``AsyncConnection`` (for an ``AsyncSession``,
        ``await session.connection()``). Nothing is committed or rolled back here:
        the caller's commit keeps the metadata with everything else the transaction
        wrote, its rollback undoes it (session rows included). Nothing is retried
        either: a deadlock aborts the caller's whole transaction, which is the
        caller's to run again. After a ``DatabaseError`` roll the transaction back;
        refusals decided before or without a failed statement (``ValidationError``,
        ``ConflictError``, ``SessionNotInScopeError``) leave it usable.
        """
        view: MetadataStore[ModelT] = MetadataStore.__new__(MetadataStore)
        view.__dict__.update(self.__dict__)
        view.ops = self.ops.on(self.ops.db.on(connection))
        view.search = self.search.on(view.ops)
        view._owns_engine = False
        return view

    def on_primary(self) -> MetadataStore[ModelT]:
        """This store with its queries on the primary: read-your-writes for finds,
        listings, counts and :meth:`get_many` when the store has a ``read_engine``.

        ``store.on_primary().find_sessions(...)``, ``store.on_primary().scoped(...)``:
        a view sharing the store's engines; cheap, make one per call. Without a read
        replica it reads as the store does.
        """
        view: MetadataStore[ModelT] = MetadataStore.__new__(MetadataStore)
        view.__dict__.update(self.__dict__)
        view.ops = self.ops.on_primary()
        view.search = self.search.on(view.ops)
        view._owns_engine = False
        return view

    async def create_tables(self) -> None:
        """Create the sessions table (when missing) and the metadata tables, with indexes."""
        await self.ops.create_tables()

    async def close(self) -> None:
        """Dispose of the engines if this store created them (:meth:`from_url`)."""
        if self._owns_engine:
            await self.engine.dispose()
            if self.read_engine is not None:
                await self.read_engine.dispose()

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
        return BoundMetadata(self.search, check_session_id(session))

    async def exists(self, session: str | HasSessionId) -> bool:
        """Whether the session exists (its row is in the sessions table); see
        :meth:`BoundMetadata.exists`."""
        return await self.bind(session).exists()

    async def find_sessions_by_metadata(
        self, key: str, value: Any, *, limit: int = 100
    ) -> list[str]:
        """Ids of sessions whose stored ``key`` equals ``value``, in id order, at most ``limit``.

        ``value`` is validated and encoded through the field's type first, so it
        matches exactly what :meth:`BoundMetadata.set_metadata` stored. Runs on the
        read replica when the store has one (:meth:`on_primary` for the primary).
        """
        return await self.search.find_equal(key, value, limit)

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
        Runs on the read replica when the store has one (:meth:`on_primary` for the
        primary).
        """
        return await self.search.find(filters, order_by=order_by, limit=limit, cursor=cursor)

    async def list_sessions(
        self,
        *filters: FilterArg,
        order_by: OrderArg = "session_id",
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[SessionListing[ModelT]]:
        """Like :meth:`find_sessions`, with each session's typed metadata, in one query."""
        return await self.search.listing(filters, order_by=order_by, limit=limit, cursor=cursor)

    async def count_sessions(self, *filters: FilterArg) -> int:
        """How many sessions match every filter (all sessions when none are given)."""
        return await self.search.count(filters)

    async def get_many(self, sessions: Iterable[str | HasSessionId]) -> dict[str, ModelT]:
        """The metadata of several sessions in one query, keyed by session id.

        Every requested id is in the result; a session with nothing stored reads
        as the model's defaults, as :meth:`BoundMetadata.get_metadata` does. A query
        like a find: on the read replica when the store has one (:meth:`on_primary`
        for the primary); one session's ``bind(...).get_metadata()`` reads the primary.
        """
        return await self.search.many(sessions)

    async def set_many(
        self,
        values: Mapping[str, ModelT | Mapping[str, Any]],
        *,
        ttl: dt.timedelta | None = None,
    ) -> None:
        """Write the metadata of many sessions at once: ``{session_id: values, ...}``.

        Each session's ``values`` is what :meth:`BoundMetadata.set_metadata` takes
        (a model or a mapping). Every session id and every value is checked before
        any I/O: a bad value anywhere raises one :class:`pydantic.ValidationError`
        whose errors are located as ``(session_id, key, ...)``, a bad id
        :class:`~sessionmeta.InvalidSessionIdError`, an unknown key
        :class:`~sessionmeta.UnknownKeyError`; then nothing is written. The write is
        one transaction: every session or none. Missing session rows are created;
        other keys of each session stay. Rows go in multi-row statements of up to
        a few thousand rows, so ten sessions and a few thousand take as many.
        ``ttl`` gives every written key an expiry, as in
        :meth:`BoundMetadata.set_metadata`.
        """
        micros = check_ttl(ttl, "set_many")
        encoded = encode_sessions(self.spec, values)
        check_distinct(self.spec.unique, encoded)
        if micros is not None:
            encoded = {
                session_id: with_ttls(rows, micros, {}) for session_id, rows in encoded.items()
            }
        await self.ops.write_many(encoded)

    async def sweep(
        self, *, batch_size: int = 1000, max_batches: int | None = None, pause: float = 0.0
    ) -> SweepResult:
        """Delete expired keys' rows (and their ``contains`` items) from the tables.

        Expired keys already read as missing everywhere; this reclaims their space.
        Each batch of at most ``batch_size`` rows is its own short transaction, with
        ``pause`` seconds between batches, until none is left or ``max_batches`` ran.
        Safe beside writers: each delete repeats the expiry test, so a key rewritten
        meanwhile stays. Returns how many rows and batches it took.
        """
        return await sweep(self.ops, batch_size=batch_size, max_batches=max_batches, pause=pause)

    async def delete_many(
        self, sessions: Iterable[str | HasSessionId], keys: Iterable[str] | None = None
    ) -> None:
        """Delete ``keys`` (names or storage keys) of every session in ``sessions``, or
        every key of them when ``keys`` is ``None``, in one transaction.

        :meth:`BoundMetadata.delete_metadata` for many sessions at once; the session
        rows stay. Ids and keys are checked before any I/O.
        """
        ids = session_ids(sessions, "delete_many")
        resolved = self.spec.resolve_keys(keys)
        if not ids or resolved == []:
            return
        await self.ops.delete_many(ids, resolved)

    async def rekey(
        self,
        *,
        batch_size: int = DEFAULT_REKEY_BATCH_SIZE,
        progress: Callable[[int], None] | None = None,
    ) -> RekeyReport:
        """Re-encrypt every encrypted value under the current key of the store's
        :class:`~sessionmeta.EncryptionKeys`, and rehash it under its index key.

        The table is read in batches of ``batch_size`` rows; each batch's rewrites are
        one short transaction, each conditioned on the text read, so a value written
        meanwhile is never overwritten. Reads and writes go on meanwhile: every key
        listed still decrypts. Values stored in plaintext before their field was
        declared ``Encrypted()`` are encrypted too. Values that do not decrypt (or no
        longer fit the model) are left as they are and listed in the report.
        ``progress`` is called with the rows read so far after each batch.
        """
        return await rekey_store(self.ops, batch_size=batch_size, progress=progress)

    async def get_or_create_by(
        self,
        key: str,
        value: Any,
        defaults: Mapping[str, Any] | None = None,
        *,
        session_id: NewSessionId | None = None,
    ) -> tuple[str, bool]:
        """``(session_id, created)``: the session whose unique ``key`` holds ``value``, or
        a new one storing ``value`` and ``defaults``, race-free.

        ``key`` must be declared ``Unique()`` (with ``per=``, put the scope key's value
        in ``defaults``: it is part of the lookup). Of many concurrent callers with one
        value, one creates the session and the others get it with ``created=False``.
        New ids are ``uuid.uuid4().hex`` unless ``session_id`` (a function returning a
        new id) says otherwise. Everything is checked before any I/O.
        """
        lookup = plan_lookup(self.spec, key, value, defaults)
        return await get_or_create_by(self.ops, lookup, session_id=session_id)

    def scoped(
        self, scope: Mapping[str, Any] | None = None, /, **pairs: Any
    ) -> ScopedStore[ModelT]:
        """A view that only sees sessions whose given keys hold the given values.

        ``store.scoped(owner_id="u1")`` (or ``store.scoped({"owner-id": "u1"})`` for
        keys that are not identifiers): its finds, listings, counts and bulk reads
        only return that tenant's sessions, and its ``bind`` refuses another
        tenant's session with :class:`~sessionmeta.SessionNotInScopeError`. Every
        operation checks the scope in the same statement or transaction as its action.
        """
        return ScopedStore(self.search, {**(scope or {}), **pairs})


def _new_engine(url: str, engine_kwargs: Mapping[str, Any] | None, what: str = "") -> AsyncEngine:
    try:
        return create_async_engine(url, **dict(engine_kwargs or {}))
    except Exception as exc:
        # Bad URLs, unknown dialects and missing drivers all surface here.
        raise DatabaseError(f"cannot use {what}database URL {shown_url(url)!r}: {exc}") from exc


def _check_read_engine(engine: AsyncEngine, read_engine: AsyncEngine) -> None:
    """A read replica runs the primary's compiled statements: same dialect, same driver."""
    if not isinstance(read_engine, AsyncEngine):
        raise InvalidArgumentError(
            "read_engine must be a SQLAlchemy AsyncEngine (create_async_engine) on a read "
            f"replica, not {read_engine!r}"
        )
    primary, replica = engine.dialect, read_engine.dialect
    if (primary.name, primary.driver) != (replica.name, replica.driver):
        raise InvalidArgumentError(
            f"read_engine {shown_url(read_engine.url)!r} is {replica.name}+{replica.driver}, "
            f"but the store's engine is {primary.name}+{primary.driver}: a read replica "
            "takes the same dialect and driver"
        )
