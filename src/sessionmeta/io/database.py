"""The one seam between sessionmeta and the database: the only code that awaits it.

Everything above (store, search, atomic operations, scoped views, check, the
Agents SDK drop-in, the command line) hands :meth:`Database.run` a piece of
work: a coroutine function that runs compiled statements on the
:class:`Connection` it is given. The seam owns the rest:

* connecting within ``connect_timeout``;
* the transaction: one statement alone, or ``BEGIN ... COMMIT`` (taking SQLite's
  write lock up front), or none of its own inside a caller's transaction
  (:meth:`Database.on`);
* one retry policy, applied once around the whole unit of work;
* translating driver and SQLAlchemy errors, and only those, into
  :class:`~sessionmeta.DatabaseError` and its subclasses;
* the drivers' quirks.

Statements run through SQLAlchemy's ``AsyncConnection`` (so engine events,
``echo`` and OpenTelemetry see them, and any driver SQLAlchemy supports works),
except where the lean path costs nothing: no listener on the engine's execution
events, no echo, no caller's transaction, and a driver ``io.drivers`` knows.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol, TypeVar

from sqlalchemy import MetaData, event, inspect
from sqlalchemy.engine import URL, make_url
from sqlalchemy.engine import Connection as SyncConnection
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection, StaticPool
from sqlalchemy.types import TypeEngine
from sqlalchemy.util import greenlet_spawn

from sessionmeta.errors import (
    ConcurrencyError,
    DatabaseError,
    InvalidArgumentError,
    SessionMetaError,
)
from sessionmeta.io.drivers import Driver, lean_driver
from sessionmeta.io.retry import RetryPolicy
from sessionmeta.io.shelf import Shelf, shelf_for
from sessionmeta.sql.dialects import Backend, ErrorKind, backend_for
from sessionmeta.sql.schema import ColumnName, adapt_to_parents, referenced_columns
from sessionmeta.sql.statements import Batch, CompiledStatement

__all__ = ["Connection", "Database", "SessionRowMissing", "adapt_to_database", "shown_url"]

logger = logging.getLogger("sessionmeta")

T = TypeVar("T")

# Engine events that see statements: a listener on any of them turns the lean path off.
_EXECUTION_EVENTS = (
    "before_execute",
    "after_execute",
    "before_cursor_execute",
    "after_cursor_execute",
    "begin",
    "commit",
    "rollback",
)
_SQLITE_PRAGMAS_DONE = "sessionmeta_sqlite_pragmas"
SQLITE_BUSY_TIMEOUT_MS = 5_000
_SQLITE_WAL_DONE = "sessionmeta_sqlite_wal"
# How long the switch to WAL waits for other connections' locks: a first call may wait
# that long for it, and no longer; another connection tries again.
SQLITE_WAL_SWITCH_WAIT_MS = 1_000


class SessionRowMissing(Exception):
    """A write referred to a session row that is not there (a foreign-key violation).

    Internal: the store creates the row and writes again; it never reaches the caller.
    """


class Connection(Protocol):
    """What a unit of work may do: run compiled statements, nothing else."""

    async def fetch(
        self, statement: CompiledStatement, params: Mapping[str, Any]
    ) -> list[Sequence[Any]]: ...

    async def execute(self, statement: CompiledStatement, params: Mapping[str, Any]) -> int: ...

    async def execute_all(self, batch: Batch) -> None:
        """Run ``batch``'s statements in order (in one trip where the driver can)."""


Work = Callable[[Connection], Awaitable[T]]


class _Lean:
    def __init__(self, driver: Driver) -> None:
        self.driver = driver

    async def fetch(
        self, statement: CompiledStatement, params: Mapping[str, Any]
    ) -> list[Sequence[Any]]:
        return await self.driver.fetch(statement, statement.args(params))

    async def execute(self, statement: CompiledStatement, params: Mapping[str, Any]) -> int:
        return await self.driver.execute(statement, statement.args(params))

    async def execute_all(self, batch: Batch) -> None:
        await self.driver.execute_all([(statement, statement.args(p)) for statement, p in batch])


class _Through:
    """Statements through SQLAlchemy's execution layer: events, echo, any driver."""

    def __init__(self, connection: AsyncConnection) -> None:
        self.connection = connection

    async def fetch(
        self, statement: CompiledStatement, params: Mapping[str, Any]
    ) -> list[Sequence[Any]]:
        result = await self.connection.exec_driver_sql(
            statement.sql, _driver_args(statement, params)
        )
        return list(result.fetchall())

    async def execute(self, statement: CompiledStatement, params: Mapping[str, Any]) -> int:
        result = await self.connection.exec_driver_sql(
            statement.sql, _driver_args(statement, params)
        )
        return int(result.rowcount)

    async def execute_all(self, batch: Batch) -> None:
        for statement, params in batch:
            await self.execute(statement, params)


def _driver_args(statement: CompiledStatement, params: Mapping[str, Any]) -> Any:
    args = statement.args(params)
    return tuple(args) if isinstance(args, list) else args


def describe(exc: BaseException) -> str:
    """The driver's own words for ``exc``: its class and first line."""
    shown = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    text = str(shown).strip().splitlines()
    return f"{type(shown).__name__}: {text[0] if text else ''}"


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps: SQLAlchemy's ``orig`` and the adapters' ``__cause__``."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain and len(chain) < 8:
        chain.append(current)
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return chain


class Database:
    """The engine (or a caller's connection), with the backend's habits and the retry policy."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        connect_timeout: float | None,
        retry: RetryPolicy,
        connection: AsyncConnection | None = None,
        sqlite_wal: bool = True,
        replica: bool = False,
    ) -> None:
        self.engine = engine
        # A read replica's errors name it: its failures are not the primary's.
        self.replica = replica
        self._on = f" on the read replica {shown_url(engine.url)}" if replica else ""
        self.backend: Backend = backend_for(engine.dialect)
        self.connect_timeout = connect_timeout
        self.retry = retry
        self.sqlite_wal = sqlite_wal
        self.connection = connection
        self._lean = lean_driver(engine.dialect.driver)
        dbapi = engine.dialect.loaded_dbapi
        self._driver_errors: tuple[type[BaseException], ...] = (
            SQLAlchemyError,
            OSError,
            *((dbapi.Error,) if isinstance(getattr(dbapi, "Error", None), type) else ()),
            *(self._lean.error_classes() if self._lean is not None else ()),
        )
        if self.backend.foreign_keys_pragma:
            _install_sqlite_pragmas(engine)
        if self.backend.write_ahead_log:
            _install_sqlite_wal(engine, wanted=sqlite_wal)
        if self.backend.galera:
            _install_galera_sync_wait(engine)

    def __repr__(self) -> str:
        where = "caller's connection" if self.connection is not None else "pool"
        if self.replica:
            where += ", read replica"
        return f"Database({shown_url(self.engine.url)!r}, {where})"

    @property
    def in_caller_transaction(self) -> bool:
        """Whether work runs inside a transaction the caller owns (:meth:`on`)."""
        return self.connection is not None

    def on(self, connection: AsyncConnection) -> Database:
        """This database, run on the caller's ``connection`` inside its transaction."""
        if not isinstance(connection, AsyncConnection):
            raise InvalidArgumentError(
                "using() takes a SQLAlchemy AsyncConnection (for an AsyncSession, "
                f"`await session.connection()`), not {type(connection).__name__}"
            )
        dialect = connection.dialect
        if (dialect.name, dialect.driver) != (self.engine.dialect.name, self.engine.dialect.driver):
            raise InvalidArgumentError(
                f"using() got a connection to {dialect.name}+{dialect.driver}, but the store's "
                f"engine is {self.engine.dialect.name}+{self.engine.dialect.driver}"
            )
        joined = Database.__new__(Database)
        joined.__dict__.update(self.__dict__)
        joined.connection = connection
        joined.retry = replace(self.retry, attempts=1)
        return joined

    async def fetch(
        self,
        statement: CompiledStatement,
        params: Mapping[str, Any],
        *,
        session_id: str | None = None,
    ) -> list[Sequence[Any]]:
        """The rows of one statement."""
        return await self.run(lambda db: db.fetch(statement, params), session_id=session_id)

    async def execute(
        self,
        statement: CompiledStatement,
        params: Mapping[str, Any],
        *,
        session_id: str | None = None,
    ) -> int:
        """Run one statement (committed alone); how many rows it changed."""
        return await self.run(lambda db: db.execute(statement, params), session_id=session_id)

    async def run(
        self,
        work: Work[T],
        *,
        session_id: str | None = None,
        transaction: bool = False,
    ) -> T:
        """Run ``work`` as one unit: on one connection, retried whole when the database
        aborted it for a concurrent one, its driver errors translated.

        With ``transaction`` the statements run between ``BEGIN`` and ``COMMIT``;
        without, each commits alone. In a caller's transaction neither: the caller
        commits, and nothing is retried (the caller's transaction was rolled back).
        """
        logger.debug(
            "%s on session %r%s",
            "transaction" if transaction else "statement",
            session_id,
            " in the caller's transaction" if self.connection is not None else "",
        )
        if self.connection is not None:
            try:
                return await work(_Through(self.connection))
            except Exception as exc:
                if self.is_driver_error(exc):
                    raise self._translate(exc, session_id, lost=_lost(exc)) from exc
                raise
        lock = self.shared_connection_lock()
        if lock is None:
            return await self._run_retried(work, session_id, transaction)
        async with _holding(lock):
            return await self._run_retried(work, session_id, transaction)

    @contextlib.asynccontextmanager
    async def _one_connection_at_a_time(self) -> AsyncIterator[None]:
        lock = self.shared_connection_lock()
        if lock is None:
            yield
            return
        async with _holding(lock):
            yield

    def shared_connection_lock(
        self, offered: threading.Lock | None = None
    ) -> threading.Lock | None:
        """The lock of this engine's one shared connection (``StaticPool``), or ``None``
        when the pool hands out connections of their own. ``offered`` becomes it when
        there is none yet: the Agents SDK's, so that its work and ours take turns."""
        if not isinstance(self.engine.pool, StaticPool):
            return None
        sync_engine = self.engine.sync_engine
        with _LOCKS_GUARD:
            lock: threading.Lock | None = sync_engine.__dict__.get(_SHARED_CONNECTION_LOCK)
            if lock is None:
                lock = offered or threading.Lock()
                setattr(sync_engine, _SHARED_CONNECTION_LOCK, lock)
            return lock

    async def _run_retried(self, work: Work[T], session_id: str | None, transaction: bool) -> T:
        attempt = 1
        pauses = self.retry.pauses()
        while True:
            try:
                if self._lean is not None and not self._observed():
                    return await self._run_lean(self._lean, work, session_id, transaction)
                return await self._run_through(work, session_id, transaction)
            except ConcurrencyError as exc:
                pause = next(pauses, None)
                if pause is None:
                    if attempt == 1:
                        raise
                    raise ConcurrencyError(
                        f"{exc} (gave up after {attempt} attempts)", session_id=session_id
                    ) from exc.__cause__
                logger.debug(
                    "attempt %d of %d aborted by a concurrent one (session %r); retrying: %s",
                    attempt,
                    self.retry.attempts,
                    session_id,
                    exc,
                )
                attempt += 1
                await asyncio.sleep(pause)

    def _observed(self) -> bool:
        """Whether anyone watches this engine's statements: then they go through SQLAlchemy."""
        sync_engine = self.engine.sync_engine
        dispatch = sync_engine.dispatch
        if any(getattr(dispatch, name) for name in _EXECUTION_EVENTS):
            return True
        return bool(sync_engine.echo) or sync_engine.logger.isEnabledFor(logging.INFO)

    async def _run_lean(
        self, lean: type[Driver], work: Work[T], session_id: str | None, transaction: bool
    ) -> T:
        shelf = await shelf_for(self.engine, _OWN_POOL_LISTENERS) if lean.shelvable else None
        pooled, since = await self._lean_connection(lean, shelf, session_id)
        driver = lean(pooled.driver_connection)
        clean = False
        try:
            if transaction:
                await driver.begin(self.backend.begin_write)
            result = await work(_Lean(driver))
            if transaction:
                await driver.commit()
            else:
                await driver.end()
            clean = True
            return result
        except Exception as exc:
            ours = self.is_driver_error(exc)
            lost = ours and driver.is_disconnect(exc)
            if lost:
                await greenlet_spawn(pooled.invalidate, exc)
            else:
                try:
                    await driver.rollback()
                except Exception:
                    await greenlet_spawn(pooled.invalidate, exc)
            if ours:
                raise self._translate(exc, session_id, lost=lost) from exc
            raise
        except BaseException:
            # Cancelled mid-statement: the connection's state is unknown, so drop it.
            await greenlet_spawn(pooled.invalidate)
            raise
        finally:
            if not (
                clean
                and shelf is not None
                and pooled.is_valid
                and driver.is_idle()
                and driver.looks_open()
                and shelf.keep(pooled, since)
            ):
                await greenlet_spawn(_check_in, pooled, driver)

    async def _lean_connection(
        self, lean: type[Driver], shelf: Shelf | None, session_id: str | None
    ) -> tuple[PoolProxiedConnection, float]:
        """A connection for the lean path: off the loop's shelf, else out of the pool;
        and the loop time it was checked out of the pool."""
        if shelf is None:
            return await self._connect(self.engine.raw_connection, _close_pooled, session_id), 0.0
        while (shelved := shelf.take()) is not None:
            pooled, since = shelved
            if lean(pooled.driver_connection).looks_open():
                return pooled, since
            # Closed while shelved (the server killed it, or restarted): dropped as
            # pool_pre_ping drops one, and the next is tried.
            await greenlet_spawn(_drop, pooled)
        since = shelf.now()
        return await self._connect(self.engine.raw_connection, _close_pooled, session_id), since

    async def _run_through(self, work: Work[T], session_id: str | None, transaction: bool) -> T:
        connection = self.engine.connect()
        await self._connect(connection.start, AsyncConnection.close, session_id)
        try:
            if not transaction and self.backend.cheap_autocommit:
                await connection.execution_options(isolation_level="AUTOCOMMIT")
            elif transaction and self.backend.begin_write:
                await connection.exec_driver_sql(self.backend.begin_write)
            result = await work(_Through(connection))
            if connection.in_transaction():
                await connection.commit()
            return result
        except Exception as exc:
            lost = _lost(exc)
            if lost or connection.invalidated:
                await connection.invalidate()
            elif connection.in_transaction():
                try:
                    await connection.rollback()
                except Exception:
                    await connection.invalidate()
            if self.is_driver_error(exc):
                raise self._translate(exc, session_id, lost=lost) from exc
            raise
        except BaseException:
            await connection.invalidate()
            raise
        finally:
            await connection.close()

    async def _connect(
        self,
        checkout: Callable[[], Awaitable[T]],
        abandon: Callable[[T], Awaitable[object]],
        session_id: str | None,
    ) -> T:
        try:
            # Some drivers bound only the TCP connect: a server that accepts and then says
            # nothing would hang the handshake without this bound.
            return await _within(self.connect_timeout, checkout, abandon)
        except asyncio.TimeoutError as exc:
            url = ("the read replica " if self.replica else "") + shown_url(self.engine.url)
            raise DatabaseError(
                f"cannot connect to {url}: no connection within {self.connect_timeout} s "
                "(the store's connect_timeout)",
                session_id=session_id,
            ) from exc
        except Exception as exc:
            if not self.is_driver_error(exc):
                raise
            url = ("the read replica " if self.replica else "") + shown_url(self.engine.url)
            raise DatabaseError(
                f"cannot connect to {url}: {describe(exc)}",
                session_id=session_id,
            ) from exc

    def _translate(self, exc: BaseException, session_id: str | None, *, lost: bool) -> Exception:
        where = f" (session {session_id!r})" if session_id is not None else ""
        where += self._on
        if lost:
            return DatabaseError(
                f"lost the database connection{where}: {describe(exc)}", session_id=session_id
            )
        kind = self.error_kind(exc)
        if kind == "transient":
            return ConcurrencyError(
                f"the database aborted the operation because of a concurrent one{where}: "
                f"{describe(exc)}",
                session_id=session_id,
            )
        if kind == "missing_session":
            return SessionRowMissing(f"session {session_id!r} has no session row")
        return DatabaseError(
            f"the database refused the operation{where}: {describe(exc)}", session_id=session_id
        )

    def is_driver_error(self, exc: BaseException) -> bool:
        """Whether ``exc`` came from the driver or SQLAlchemy: only those are translated.

        (Our own errors pass untouched, SessionNotInScopeError too, though it is an
        OSError by way of PermissionError.)
        """
        return isinstance(exc, self._driver_errors) and not isinstance(exc, SessionMetaError)

    def error_kind(self, exc: BaseException) -> ErrorKind | None:
        """What a driver or SQLAlchemy error means for the data, as the backend reads it."""
        for cause in _causes(exc):
            kind = self.backend.error_kind(cause)
            if kind is not None:
                return kind
        return None

    async def retrying(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run someone else's database ``operation`` (the Agents SDK's own writes) under
        the retry policy; its errors are left as they are."""
        pauses = self.retry.pauses()
        while True:
            try:
                return await operation()
            except Exception as exc:
                pause = next(pauses, None)
                if not self.is_driver_error(exc) or self.error_kind(exc) != "transient":
                    raise
                if pause is None:
                    raise
            await asyncio.sleep(pause)

    async def has_table(self, name: str) -> bool:
        """Whether the database holds a table called ``name``."""

        def look(connection: Any) -> bool:
            return bool(inspect(connection).has_table(name))

        try:
            if self.connection is not None:
                return await self.connection.run_sync(look)
            async with self._one_connection_at_a_time(), self.engine.connect() as connection:
                return await connection.run_sync(look)
        except Exception as exc:
            if not self.is_driver_error(exc):
                raise
            raise DatabaseError(f"cannot look for table {name!r}: {describe(exc)}") from exc

    async def create_tables(self, metadata: MetaData) -> None:
        """Create whichever tables of ``metadata`` are missing, with their indexes.

        Their foreign-key columns take the type of the existing columns they refer
        to, where the database needs that (:func:`adapt_to_database`).
        """
        if self.connection is not None:
            await self.connection.run_sync(_create_all, metadata)
            return

        async def create() -> None:
            # Another task, engine or process may be creating the same tables: its
            # CREATE wins, ours fails with "already exists", and the next look finds
            # the tables (and creates only what is still missing).
            pauses = self.retry.pauses()
            while True:
                try:
                    async with self._one_connection_at_a_time(), self.engine.begin() as connection:
                        await connection.run_sync(_create_all, metadata)
                    return
                except Exception as exc:
                    pause = next(pauses, None)
                    if pause is None or not self.is_driver_error(exc):
                        raise
                    if self.error_kind(exc) not in _CREATE_RACES:
                        raise
                await asyncio.sleep(pause)

        try:
            await asyncio.wait_for(create(), self.connect_timeout)
        except asyncio.TimeoutError as exc:
            raise DatabaseError(
                f"cannot create the tables: no answer within {self.connect_timeout} s "
                "(the store's connect_timeout)"
            ) from exc
        except Exception as exc:
            if not self.is_driver_error(exc):
                raise
            raise DatabaseError(f"cannot create the tables: {describe(exc)}") from exc


# Query parameters whose values are secrets (libpq's sslpassword, a password given
# as a parameter): shown masked, as the URL's own password is.
_SECRET_PARAMETERS = ("pass", "pwd", "secret", "token")


def shown_url(url: str | URL) -> str:
    """A database URL fit for a repr, a log or a message: its password and secret-looking
    query parameters masked as ``***``."""
    try:
        parsed = make_url(url)
    except (SQLAlchemyError, ValueError):
        # Not a URL SQLAlchemy reads: mask whatever stands between "user:" and "@".
        return re.sub(r"(://[^/@:]*:)[^/@]*@", r"\1***@", str(url))
    secret = [
        name for name in parsed.query if any(part in name.lower() for part in _SECRET_PARAMETERS)
    ]
    if secret:
        parsed = parsed.update_query_dict(dict.fromkeys(secret, "***"))
    return parsed.render_as_string(hide_password=True).replace("%2A%2A%2A", "***")


def adapt_to_database(connection: SyncConnection, metadata: MetaData) -> MetaData:
    """``metadata`` as it is to be created on ``connection``'s database.

    On MySQL/MariaDB, a copy whose foreign-key columns have the type, length,
    charset and collation of the existing columns they refer to (read from
    ``information_schema``): a sessions table made by hand or by another SDK
    release keeps its own. Elsewhere, and when nothing referred to exists,
    ``metadata`` itself.
    """
    reader = backend_for(connection.dialect).parent_columns
    # Matched without case: the server may report names in another case than declared.
    wanted = {
        (table.lower(), column.lower()): (table, column)
        for table, column in referenced_columns(metadata)
    }
    if reader is None or not wanted:
        return metadata
    parents: dict[ColumnName, TypeEngine[Any]] = {}
    for row in connection.execute(reader.query({table for table, _ in wanted.values()})):
        name = wanted.get((str(row[0]).lower(), str(row[1]).lower()))
        column_type = reader.column_type(row) if name is not None else None
        if name is not None and column_type is not None:
            parents[name] = column_type
    return adapt_to_parents(metadata, parents) if parents else metadata


def _create_all(connection: SyncConnection, metadata: MetaData) -> None:
    # Read and create on one connection: what is read is what the CREATE refers to.
    adapt_to_database(connection, metadata).create_all(connection)


# What a concurrent creator of the same tables makes our CREATE fail with: the table or
# index exists, a catalog row of its type is taken (PostgreSQL), or a lock conflict.
_CREATE_RACES = ("already_exists", "unique", "transient")


_SHARED_CONNECTION_LOCK = "_sessionmeta_shared_connection_lock"
_LOCKS_GUARD = threading.Lock()


def _lost(exc: BaseException) -> bool:
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


@contextlib.asynccontextmanager
async def _holding(lock: threading.Lock) -> AsyncIterator[None]:
    """Hold the lock of an engine's one shared connection (SQLite ``:memory:``): two
    units of work would interleave their transactions on it."""
    while not lock.acquire(blocking=False):  # noqa: ASYNC110
        # Polled: a threading lock also serializes other event loops, and a
        # cancelled waiter never holds it.
        await asyncio.sleep(0.001)
    try:
        yield
    finally:
        lock.release()


async def _within(
    seconds: float | None,
    work: Callable[[], Awaitable[T]],
    abandon: Callable[[T], Awaitable[object]],
) -> T:
    """``await work()``, cancelled after ``seconds``; raises ``asyncio.TimeoutError``.
    What ``work`` returns after its caller gave up (a checkout that finished as the
    caller was cancelled) goes to ``abandon``."""
    if sys.version_info >= (3, 11):
        # A timer on the running task: wait_for's extra task costs about as much as a
        # pooled checkout. Work that finishes before the cancellation lands returns here,
        # and the caller's next await (inside its cleanup) raises it.
        async with asyncio.timeout(seconds):
            return await work()
    # Python 3.10's wait_for drops the result of work that finishes as its caller is
    # cancelled: a connection checked out and never returned. Shielded, it is handed over.
    running = asyncio.ensure_future(work())
    try:
        return await asyncio.wait_for(asyncio.shield(running), seconds)
    except BaseException:
        running.cancel()
        running.add_done_callback(functools.partial(_hand_over, abandon))
        # As wait_for does, the caller goes on once the work has ended (a cancelled
        # connect closes its socket).
        await asyncio.wait({running})
        raise


_ABANDONING: set[asyncio.Future[object]] = set()


def _hand_over(abandon: Callable[[T], Awaitable[object]], running: asyncio.Future[T]) -> None:
    if running.cancelled() or running.exception() is not None:
        return
    handing = asyncio.ensure_future(abandon(running.result()))
    _ABANDONING.add(handing)
    handing.add_done_callback(_ABANDONING.discard)


def _check_in(pooled: PoolProxiedConnection, driver: Driver) -> None:
    # Pinned by tests/test_private_apis.py: the one private SQLAlchemy call.
    close_special = getattr(pooled, "_close_special", None)
    if pooled.is_valid and close_special is not None and driver.is_idle():
        # No transaction is open: skip the pool's rollback-on-return, which on
        # aiosqlite is one more trip to its thread (~100 us) for nothing. This is
        # what SQLAlchemy's own Connection.close() does after ending a transaction.
        close_special(transaction_reset=True)
    else:
        pooled.close()


async def _close_pooled(pooled: PoolProxiedConnection) -> None:
    await greenlet_spawn(pooled.close)


def _drop(pooled: PoolProxiedConnection) -> None:
    pooled.invalidate()
    pooled.close()


def _sqlite_pragmas(
    dbapi_connection: Any,
    connection_record: ConnectionPoolEntry,
    connection_proxy: PoolProxiedConnection,
) -> None:
    # SQLite enforces foreign keys, and so ON DELETE CASCADE, only on connections that
    # ask for it. On checkout, not connect, so connections pooled before the store
    # existed are covered too; once per connection.
    if connection_record.info.get(_SQLITE_PRAGMAS_DONE):
        return
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys = ON")
        # Python's sqlite3 waits 5 s by default; keep a timeout the application chose
        # with connect_args={"timeout": seconds}, and only fill in one that is off.
        cursor.execute("PRAGMA busy_timeout")
        row = cursor.fetchone()
        if not row or not row[0]:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    finally:
        cursor.close()
    connection_record.info[_SQLITE_PRAGMAS_DONE] = True


def _install_sqlite_pragmas(engine: AsyncEngine) -> None:
    sync_engine = engine.sync_engine
    if not event.contains(sync_engine, "checkout", _sqlite_pragmas):
        event.listen(sync_engine, "checkout", _sqlite_pragmas)


def _sqlite_wal(
    dbapi_connection: Any,
    connection_record: ConnectionPoolEntry,
    connection_proxy: PoolProxiedConnection,
) -> None:
    # A database file in SQLite's default rollback journal is switched to write-ahead
    # logging: readers and the writer no longer block each other, and a commit appends
    # to the log instead of writing and syncing a journal and the database. The mode is
    # the file's (persistent), so one switch serves every connection and process; each
    # connection looks once, on its first checkout. A journal mode the application set
    # on the connection (TRUNCATE, PERSIST, MEMORY, OFF), WAL already, and in-memory or
    # temporary databases are left as they are.
    if connection_record.info.get(_SQLITE_WAL_DONE):
        return
    connection_record.info[_SQLITE_WAL_DONE] = True
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode")
        row = cursor.fetchone()
        if not row or str(row[0]).lower() != "delete":
            return
        cursor.execute("PRAGMA database_list")
        if not any(entry[1] == "main" and entry[2] for entry in cursor.fetchall()):
            return  # no file: in memory, or a temporary database
        # The switch needs the file to itself for a moment: wait a little for other
        # connections' locks, not the whole busy timeout (this is the caller's call).
        cursor.execute("PRAGMA busy_timeout")
        row = cursor.fetchone()
        busy_timeout = int(row[0]) if row and row[0] else 0
        cursor.execute(f"PRAGMA busy_timeout = {min(busy_timeout, SQLITE_WAL_SWITCH_WAIT_MS)}")
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            row = cursor.fetchone()
        finally:
            cursor.execute(f"PRAGMA busy_timeout = {busy_timeout}")
        if not row or str(row[0]).lower() != "wal":
            logger.warning(
                "SQLite kept this database file in journal mode %r instead of WAL",
                row[0] if row else None,
            )
    except Exception as exc:
        # Not worth failing the caller's call over: the file keeps its rollback journal,
        # and the next new connection tries again.
        logger.warning(
            "could not switch the SQLite database file to WAL (store option "
            "sqlite_wal=False leaves the journal mode alone): %s",
            describe(exc),
        )
    finally:
        cursor.close()


# wsrep_sync_wait's bits for reads (SELECT, and BEGIN), updates and deletes, inserts.
GALERA_SYNC_WAIT = 1 | 2 | 4
_GALERA_DONE = "sessionmeta_galera_sync_wait"


def _galera_sync_wait(
    dbapi_connection: Any,
    connection_record: ConnectionPoolEntry,
    connection_proxy: PoolProxiedConnection,
) -> None:
    # A Galera node applies the other nodes' commits asynchronously: by default a read
    # there can miss a write the cluster has acknowledged to its caller, and a delete
    # or an insert can act on the rows as they were before it. With these
    # wsrep_sync_wait bits each such statement first waits until the node has applied
    # every commit the cluster had when the statement arrived: a store on any node
    # sees what a store on any other node wrote (docs/scaling.md). Bits the application
    # or the server set stay. Once per connection, on checkout as for SQLite's pragmas;
    # a plain MySQL or MariaDB server answers the look with no wsrep_on, or OFF.
    if connection_record.info.get(_GALERA_DONE):
        return
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("SHOW VARIABLES WHERE Variable_name IN ('wsrep_on', 'wsrep_sync_wait')")
        variables = {str(name).lower(): str(value) for name, value in cursor.fetchall()}
        if variables.get("wsrep_on", "").upper() == "ON":
            current = int(variables.get("wsrep_sync_wait") or 0)
            if current | GALERA_SYNC_WAIT != current:
                cursor.execute(f"SET SESSION wsrep_sync_wait = {current | GALERA_SYNC_WAIT}")
    finally:
        cursor.close()
    connection_record.info[_GALERA_DONE] = True


def _install_galera_sync_wait(engine: AsyncEngine) -> None:
    sync_engine = engine.sync_engine
    if not event.contains(sync_engine, "checkout", _galera_sync_wait):
        event.listen(sync_engine, "checkout", _galera_sync_wait)


# The store's own pool listeners: they do not keep connections off the shelf.
_OWN_POOL_LISTENERS = frozenset({_sqlite_pragmas, _sqlite_wal, _galera_sync_wait})

_KEEP_JOURNAL_MODE = "_sessionmeta_keep_sqlite_journal_mode"


def _install_sqlite_wal(engine: AsyncEngine, *, wanted: bool) -> None:
    """Switch the engine's SQLite files to WAL, unless a store on it said not to: one
    store's ``sqlite_wal=False`` holds for every store on that engine."""
    sync_engine = engine.sync_engine
    with _LOCKS_GUARD:
        keep = not wanted or bool(sync_engine.__dict__.get(_KEEP_JOURNAL_MODE))
        installed = event.contains(sync_engine, "checkout", _sqlite_wal)
        if keep:
            setattr(sync_engine, _KEEP_JOURNAL_MODE, True)
            if installed:
                event.remove(sync_engine, "checkout", _sqlite_wal)
        elif not installed:
            event.listen(sync_engine, "checkout", _sqlite_wal)
