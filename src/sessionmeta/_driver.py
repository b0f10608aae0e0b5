"""Running compiled statements straight on a pooled driver connection.

SQLAlchemy owns the pool, the dialects and the schema; the hot path skips its
per-call execution machinery and talks to the driver (asyncpg, aiosqlite,
aiomysql or asyncmy) directly, with the driver's own prepared-statement cache.
This is also the one place where driver errors become sessionmeta errors.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.util import greenlet_spawn

from ._statements import CompiledStatement
from .errors import DatabaseError, SessionMetaError, UnsupportedDialectError

__all__ = ["Driver", "ForeignKeyViolation", "TransientError", "connect"]

_PREPARED = "sessionmeta_prepared"
SQLITE_BUSY_TIMEOUT_MS = 5_000


class ForeignKeyViolation(Exception):
    """The referenced session row is missing: the caller creates it and tries again."""


class TransientError(DatabaseError):
    """The database aborted an operation only because of a concurrent one (deadlock, busy):
    running it again is safe, and ``_retry`` does so a bounded number of times."""


class Driver:
    """One checked-out driver connection, with the few operations the store needs."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection

    async def prepare(self) -> None:
        """Settings applied once per pooled connection."""

    async def fetch(self, statement: CompiledStatement, args: Sequence[Any]) -> list[Sequence[Any]]:
        raise NotImplementedError

    async def execute(self, statement: CompiledStatement, args: Sequence[Any]) -> int:
        raise NotImplementedError

    async def begin(self) -> None:
        raise NotImplementedError

    async def commit(self) -> None:
        raise NotImplementedError

    async def rollback(self) -> None:
        raise NotImplementedError

    async def end_read(self) -> None:
        """Close the snapshot a read may have opened, where the driver opens one."""

    async def end_write(self) -> None:
        """Commit a single statement the driver did not commit by itself."""
        await self.commit()

    def is_idle(self) -> bool:
        """Whether no transaction is open, so the pool need not roll back (False: unknown)."""
        return False

    def is_foreign_key_violation(self, exc: BaseException) -> bool:
        raise NotImplementedError

    def is_disconnect(self, exc: BaseException) -> bool:
        raise NotImplementedError

    def is_transient(self, exc: BaseException) -> bool:
        """A deadlock or lock conflict: the transaction was rolled back and may be run again."""
        return False


class _Asyncpg(Driver):
    def __init__(self, connection: Any) -> None:
        super().__init__(connection)
        import asyncpg

        self._asyncpg = asyncpg

    async def fetch(self, statement: CompiledStatement, args: Sequence[Any]) -> list[Sequence[Any]]:
        rows: list[Sequence[Any]] = await self.connection.fetch(statement.sql, *args)
        return rows

    async def execute(self, statement: CompiledStatement, args: Sequence[Any]) -> int:
        status: str = await self.connection.execute(statement.sql, *args)
        count = status.rsplit(" ", 1)[-1]
        return int(count) if count.isdigit() else 0

    async def begin(self) -> None:
        await self.connection.execute("BEGIN")

    async def commit(self) -> None:
        await self.connection.execute("COMMIT")

    async def end_write(self) -> None:
        """asyncpg commits a statement run outside a transaction by itself."""

    async def rollback(self) -> None:
        if self.connection.is_in_transaction():
            await self.connection.execute("ROLLBACK")

    def is_idle(self) -> bool:
        return not self.connection.is_in_transaction()

    def is_foreign_key_violation(self, exc: BaseException) -> bool:
        return isinstance(exc, self._asyncpg.ForeignKeyViolationError)

    def is_disconnect(self, exc: BaseException) -> bool:
        errors = self._asyncpg.exceptions
        return isinstance(
            exc,
            (
                OSError,
                ConnectionError,
                errors.ConnectionDoesNotExistError,
                errors.PostgresConnectionError,
                errors.AdminShutdownError,
                errors.CrashShutdownError,
                self._asyncpg.InterfaceError,
            ),
        ) or (self.connection.is_closed())

    def is_transient(self, exc: BaseException) -> bool:
        errors = self._asyncpg.exceptions
        return isinstance(exc, (errors.DeadlockDetectedError, errors.SerializationError))


class _Aiosqlite(Driver):
    async def prepare(self) -> None:
        # SQLite leaves foreign keys off per connection: ON DELETE CASCADE needs them.
        await self.connection.execute("PRAGMA foreign_keys = ON")
        # Python's sqlite3 already waits 5 s by default; keep a timeout the application
        # chose with connect_args={"timeout": seconds}, and only fill in one that is off.
        rows = await self.connection.execute_fetchall("PRAGMA busy_timeout")
        if not rows or not rows[0][0]:
            await self.connection.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")

    async def fetch(self, statement: CompiledStatement, args: Sequence[Any]) -> list[Sequence[Any]]:
        rows = await self.connection.execute_fetchall(statement.sql, args)
        return list(rows)

    async def execute(self, statement: CompiledStatement, args: Sequence[Any]) -> int:
        cursor = await self.connection.execute(statement.sql, args)
        count: int = cursor.rowcount
        return count

    async def begin(self) -> None:
        # Take the write lock up front, so two writers wait instead of deadlocking.
        await self.connection.execute("BEGIN IMMEDIATE")

    async def commit(self) -> None:
        await self.connection.commit()

    async def rollback(self) -> None:
        if self.connection.in_transaction:
            await self.connection.rollback()

    def is_idle(self) -> bool:
        return not self.connection.in_transaction

    def is_foreign_key_violation(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.IntegrityError) and "FOREIGN KEY" in str(exc)

    def is_disconnect(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.ProgrammingError) and "closed" in str(exc)

    def is_transient(self, exc: BaseException) -> bool:
        # SQLITE_BUSY / SQLITE_LOCKED (and their extended codes): the busy timeout ran out.
        if not isinstance(exc, sqlite3.OperationalError):
            return False
        code = getattr(exc, "sqlite_errorcode", None)
        if isinstance(code, int):
            return code & 0xFF in (5, 6)
        return "locked" in str(exc)


class _MySQL(Driver):
    """aiomysql and asyncmy share one cursor API.

    Without autocommit a read opens a REPEATABLE READ snapshot; the pool's
    rollback on return ends it, so reads need no statement of their own.
    """

    _DISCONNECT_CODES = frozenset({1053, 1927, 2003, 2006, 2013, 2014, 2045, 2055, 4031})
    # Deadlock found (1213); record changed since last read (1020, MariaDB snapshot isolation).
    _TRANSIENT_CODES = frozenset({1020, 1213})

    async def fetch(self, statement: CompiledStatement, args: Sequence[Any]) -> list[Sequence[Any]]:
        async with self.connection.cursor() as cursor:
            await cursor.execute(statement.sql, tuple(args))
            rows: list[Sequence[Any]] = list(await cursor.fetchall())
            return rows

    async def execute(self, statement: CompiledStatement, args: Sequence[Any]) -> int:
        async with self.connection.cursor() as cursor:
            count: int = await cursor.execute(statement.sql, tuple(args))
            return count

    async def begin(self) -> None:
        await self.connection.begin()

    async def commit(self) -> None:
        await self.connection.commit()

    async def rollback(self) -> None:
        await self.connection.rollback()

    @staticmethod
    def _code(exc: BaseException) -> int | None:
        args = getattr(exc, "args", ())
        return args[0] if args and isinstance(args[0], int) else None

    def is_foreign_key_violation(self, exc: BaseException) -> bool:
        return self._code(exc) == 1452

    def is_disconnect(self, exc: BaseException) -> bool:
        if isinstance(exc, (OSError, ConnectionError)):
            return True
        if type(exc).__name__ == "InterfaceError":
            return True
        return self._code(exc) in self._DISCONNECT_CODES

    def is_transient(self, exc: BaseException) -> bool:
        return self._code(exc) in self._TRANSIENT_CODES


_DRIVERS: dict[str, type[Driver]] = {
    "asyncpg": _Asyncpg,
    "aiosqlite": _Aiosqlite,
    "aiomysql": _MySQL,
    "asyncmy": _MySQL,
}


def driver_class(engine: AsyncEngine) -> type[Driver]:
    """The driver wrapper for ``engine``; raise :class:`UnsupportedDialectError` for others."""
    found = _DRIVERS.get(engine.dialect.driver)
    if found is None:
        supported = ", ".join(sorted(_DRIVERS))
        raise UnsupportedDialectError(
            f"sessionmeta does not support the {engine.dialect.driver!r} driver "
            f"of {engine.dialect.name}; use one of {supported}"
        )
    return found


def describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


@asynccontextmanager
async def connect(
    engine: AsyncEngine,
    driver: type[Driver],
    *,
    session_id: str | None = None,
    timeout: float | None = None,
) -> AsyncIterator[Driver]:
    """Check a connection out of the engine's pool and wrap its driver connection.

    A connection that dies is invalidated, so the pool hands out a fresh one next;
    every driver error leaves as :class:`DatabaseError` (or ``ForeignKeyViolation``).
    """
    where = f" (session {session_id!r})" if session_id is not None else ""
    try:
        # Some drivers bound only the TCP connect: a server that accepts and then says
        # nothing would hang the handshake without this bound. The pooled connection
        # itself, not an AsyncConnection around it: that would cost two more greenlet
        # switches per call, and nothing here uses it.
        pooled: PoolProxiedConnection = await asyncio.wait_for(engine.raw_connection(), timeout)
    except asyncio.TimeoutError as exc:
        raise DatabaseError(
            f"cannot connect to {engine.url.render_as_string(hide_password=True)}: "
            f"no connection within {timeout} s (the store's connect_timeout)",
            session_id=session_id,
        ) from exc
    except Exception as exc:
        raise DatabaseError(
            f"cannot connect to {engine.url.render_as_string(hide_password=True)}: {describe(exc)}",
            session_id=session_id,
        ) from exc
    wrapped = driver(pooled.driver_connection)
    try:
        if not pooled.info.get(_PREPARED):
            await wrapped.prepare()
            pooled.info[_PREPARED] = True
        yield wrapped
    except (
        ForeignKeyViolation,
        SessionMetaError,
        ValidationError,
        AttributeError,
        TypeError,
        NameError,
    ):
        await wrapped.rollback()
        raise
    except Exception as exc:
        if wrapped.is_disconnect(exc):
            await greenlet_spawn(pooled.invalidate, exc)
            raise DatabaseError(
                f"lost the database connection{where}: {describe(exc)}", session_id=session_id
            ) from exc
        try:
            await wrapped.rollback()
        except Exception:
            await greenlet_spawn(pooled.invalidate, exc)
        if wrapped.is_transient(exc):
            raise TransientError(
                f"the database aborted the operation because of a concurrent one{where}: "
                f"{describe(exc)}",
                session_id=session_id,
            ) from exc
        raise DatabaseError(
            f"the database refused the operation{where}: {describe(exc)}",
            session_id=session_id,
        ) from exc
    except BaseException:
        # Cancelled mid-statement: the connection's state is unknown, so drop it.
        await greenlet_spawn(pooled.invalidate)
        raise
    finally:
        await greenlet_spawn(_check_in, pooled, wrapped)


def _check_in(pooled: PoolProxiedConnection, wrapped: Driver) -> None:
    close_special = getattr(pooled, "_close_special", None)
    if pooled.is_valid and close_special is not None and wrapped.is_idle():
        # No transaction is open: skip the pool's rollback-on-return, which on
        # aiosqlite is one more trip to its thread (~100 us) for nothing. This is
        # what SQLAlchemy's own Connection.close() does after ending a transaction.
        close_special(transaction_reset=True)
    else:
        pooled.close()
