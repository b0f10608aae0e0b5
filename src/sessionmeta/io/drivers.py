"""The lean path: compiled statements run straight on a pooled driver connection.

Used only where it costs the user nothing (see ``Database``): no listener on the
engine's execution events, no ``echo``, no caller's transaction, and a driver
listed here. Everything else runs through SQLAlchemy's ``AsyncConnection``. Each
wrapper knows its driver's calls and which of its errors mean a lost connection;
what an error means for the data is the backend's to say (``sql.dialects``).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sessionmeta.sql.statements import CompiledStatement

__all__ = ["Driver", "lean_driver"]

T = TypeVar("T")


class Driver:
    """One checked-out driver connection, with the few operations the store needs."""

    # Whether an idle connection may wait on the shelf (io.shelf): the wrapper can tell,
    # without a round trip, a connection the server has closed.
    shelvable = False

    def __init__(self, connection: Any) -> None:
        self.connection = connection

    @classmethod
    def error_classes(cls) -> tuple[type[BaseException], ...]:
        """The driver's own error classes: the seam translates these, and nothing else."""
        return (OSError,)

    async def fetch(self, statement: CompiledStatement, args: Any) -> list[Sequence[Any]]:
        raise NotImplementedError

    async def execute(self, statement: CompiledStatement, args: Any) -> int:
        raise NotImplementedError

    async def execute_all(self, batch: Sequence[tuple[CompiledStatement, Any]]) -> None:
        """Run statements in order; a driver that can sends them together."""
        for statement, args in batch:
            await self.execute(statement, args)

    async def begin(self, statement: str | None) -> None:
        raise NotImplementedError

    async def commit(self) -> None:
        raise NotImplementedError

    async def rollback(self) -> None:
        raise NotImplementedError

    async def end(self) -> None:
        """Close what a statement outside a transaction may have left open."""

    def is_idle(self) -> bool:
        """Whether no transaction is open, so the pool need not roll back (False: unknown)."""
        return False

    def is_disconnect(self, exc: BaseException) -> bool:
        return isinstance(exc, (OSError, ConnectionError))

    def looks_open(self) -> bool:
        """Whether, as far as the driver has heard, the connection is still open
        (False: closed, or the wrapper cannot tell)."""
        return False


class _Asyncpg(Driver):
    shelvable = True

    def __init__(self, connection: Any) -> None:
        super().__init__(connection)
        import asyncpg

        self._asyncpg = asyncpg

    @classmethod
    def error_classes(cls) -> tuple[type[BaseException], ...]:
        import asyncpg
        from asyncpg.exceptions import InternalClientError

        # InternalClientError: asyncpg's protocol refused (or lost its place in) an
        # exchange, as when the server's goodbye to a killed connection has been read but
        # its close has not: a driver error like the others, never the caller's.
        return (asyncpg.PostgresError, asyncpg.InterfaceError, InternalClientError, OSError)

    async def fetch(self, statement: CompiledStatement, args: Any) -> list[Sequence[Any]]:
        rows: list[Sequence[Any]] = await self.connection.fetch(statement.sql, *args)
        return rows

    async def execute(self, statement: CompiledStatement, args: Any) -> int:
        status: str = await self.connection.execute(statement.sql, *args)
        count = status.rsplit(" ", 1)[-1]
        return int(count) if count.isdigit() else 0

    async def begin(self, statement: str | None) -> None:
        await self.connection.execute(statement or "BEGIN")

    async def commit(self) -> None:
        await self.connection.execute("COMMIT")

    async def rollback(self) -> None:
        if self.connection.is_in_transaction():
            await self.connection.execute("ROLLBACK")

    def is_idle(self) -> bool:
        return not self.connection.is_in_transaction()

    def is_disconnect(self, exc: BaseException) -> bool:
        errors = self._asyncpg.exceptions
        lost = (
            OSError,
            ConnectionError,
            errors.ConnectionDoesNotExistError,
            errors.PostgresConnectionError,
            errors.AdminShutdownError,
            errors.CrashShutdownError,
            self._asyncpg.InterfaceError,
        )
        if isinstance(exc, errors.InternalClientError) and not isinstance(
            exc, errors.OutdatedSchemaCacheError
        ):
            # The protocol's state is unknown: the connection cannot be trusted again.
            return True
        return isinstance(exc, lost) or bool(self.connection.is_closed())

    def looks_open(self) -> bool:
        # asyncpg reads its socket whenever the loop runs: a backend terminated or a
        # server shut down is known by the next loop iteration.
        return not self.connection.is_closed()


class _Aiosqlite(Driver):
    """Each call to aiosqlite is a trip to its connection's thread and back, which costs
    more than a small statement: ``BEGIN`` waits for the first statement, and a batch
    runs in one trip (through aiosqlite's ``_execute``, which its own methods use)."""

    shelvable = True

    def __init__(self, connection: Any) -> None:
        super().__init__(connection)
        self._begin: str | None = None

    @classmethod
    def error_classes(cls) -> tuple[type[BaseException], ...]:
        return (sqlite3.Error, OSError)

    async def fetch(self, statement: CompiledStatement, args: Any) -> list[Sequence[Any]]:
        rows = await self._on_thread(lambda db: db.execute(statement.sql, args).fetchall())
        return list(rows)

    async def execute(self, statement: CompiledStatement, args: Any) -> int:
        count: int = await self._on_thread(lambda db: db.execute(statement.sql, args).rowcount)
        return count

    async def execute_all(self, batch: Sequence[tuple[CompiledStatement, Any]]) -> None:
        def run(db: sqlite3.Connection) -> None:
            for statement, args in batch:
                db.execute(statement.sql, args)

        await self._on_thread(run)

    async def _on_thread(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work`` on aiosqlite's thread, after the pending ``BEGIN``, in one trip."""
        begin, self._begin = self._begin, None

        def run() -> T:
            db: sqlite3.Connection = self.connection._conn
            if begin is not None:
                db.execute(begin)
            return work(db)

        result: T = await self.connection._execute(run)
        return result

    async def begin(self, statement: str | None) -> None:
        self._begin = statement or "BEGIN"

    async def commit(self) -> None:
        if self._begin is not None:
            # Nothing ran: there is no transaction to commit.
            self._begin = None
            return
        await self.connection.commit()

    async def rollback(self) -> None:
        self._begin = None
        if self.connection.in_transaction:
            await self.connection.rollback()

    async def end(self) -> None:
        # Python's sqlite3 opens a transaction before a write: commit it.
        if self.connection.in_transaction:
            await self.connection.commit()

    def is_idle(self) -> bool:
        return not self.connection.in_transaction

    def is_disconnect(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.ProgrammingError) and "closed" in str(exc)

    def looks_open(self) -> bool:
        return getattr(self.connection, "_connection", None) is not None and bool(
            getattr(self.connection, "_running", False)
        )


class _MySQL(Driver):
    """aiomysql and asyncmy share one cursor API.

    Without autocommit a read opens a REPEATABLE READ snapshot and a write a
    transaction: :meth:`end` commits either, so the pool need not roll back.
    """

    _DISCONNECT_CODES = frozenset({1053, 1927, 2003, 2006, 2013, 2014, 2045, 2055, 4031})
    shelvable = True

    def __init__(self, connection: Any) -> None:
        super().__init__(connection)
        self._ended = True

    @classmethod
    def error_classes(cls) -> tuple[type[BaseException], ...]:
        errors: list[type[BaseException]] = [OSError]
        for module in ("pymysql.err", "asyncmy.errors"):
            with contextlib.suppress(ImportError):
                errors.append(__import__(module, fromlist=["Error"]).Error)
        return tuple(errors)

    async def fetch(self, statement: CompiledStatement, args: Any) -> list[Sequence[Any]]:
        self._ended = False
        async with self.connection.cursor() as cursor:
            await cursor.execute(statement.sql, tuple(args))
            rows: list[Sequence[Any]] = list(await cursor.fetchall())
            return rows

    async def execute(self, statement: CompiledStatement, args: Any) -> int:
        self._ended = False
        async with self.connection.cursor() as cursor:
            count: int = await cursor.execute(statement.sql, tuple(args))
            return count

    async def begin(self, statement: str | None) -> None:
        self._ended = False
        autocommit = getattr(self.connection, "get_autocommit", None)
        if autocommit is None or autocommit():
            await self.connection.begin()
        # Else the first statement opens the transaction, as BEGIN would (its snapshot
        # too is taken at the first read): one round trip fewer.

    async def commit(self) -> None:
        await self.connection.commit()
        self._ended = True

    async def rollback(self) -> None:
        await self.connection.rollback()
        self._ended = True

    async def end(self) -> None:
        await self.commit()

    def is_idle(self) -> bool:
        return self._ended

    def is_disconnect(self, exc: BaseException) -> bool:
        if isinstance(exc, (OSError, ConnectionError)) or type(exc).__name__ == "InterfaceError":
            return True
        args: tuple[Any, ...] = getattr(exc, "args", ())
        return bool(args) and args[0] in self._DISCONNECT_CODES

    def looks_open(self) -> bool:
        # aiomysql's stream reader sees the server's end of the connection (a KILL, a
        # shutdown) when the loop next runs; an idle connection has nothing unread,
        # so at_eof() is then true. A connection without such a reader (asyncmy's)
        # is never shelved.
        reader = getattr(self.connection, "_reader", None)
        at_eof = getattr(reader, "at_eof", None)
        if getattr(self.connection, "_writer", None) is None or at_eof is None:
            return False
        return not at_eof()


_DRIVERS: dict[str, type[Driver]] = {
    "asyncpg": _Asyncpg,
    "aiosqlite": _Aiosqlite,
    "aiomysql": _MySQL,
    "asyncmy": _MySQL,
}


def lean_driver(driver_name: str) -> type[Driver] | None:
    """The lean wrapper of the named driver, or ``None``: run through SQLAlchemy then."""
    if driver_name == "aiosqlite" and not _aiosqlite_runs_functions():
        return None
    return _DRIVERS.get(driver_name)


def _aiosqlite_runs_functions() -> bool:
    """Whether this aiosqlite has what the lean wrapper uses (every release since 0.17)."""
    try:
        from aiosqlite import Connection
    except ImportError:
        return False
    return hasattr(Connection, "_execute") and hasattr(Connection, "_conn")
