"""Killing a connection on the server, and waiting until it and its driver know it."""

from __future__ import annotations

import asyncio

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection

from sessionmeta.io.drivers import lean_driver

# A bound on waiting for something that should happen at once, never a timing assertion:
# on a loaded server a terminated backend can take seconds to leave.
HANG_GUARD_S = 60


async def kill(admin: AsyncEngine, connection_id: int) -> None:
    """Terminate the server connection ``connection_id`` from ``admin``'s pool."""
    async with admin.connect() as connection:
        if admin.dialect.name == "postgresql":
            await connection.execute(
                text("SELECT pg_terminate_backend(:pid)"), {"pid": connection_id}
            )
        else:
            await connection.execute(text(f"KILL {int(connection_id)}"))


def alive_query(engine: AsyncEngine | Engine) -> str:
    if engine.dialect.name == "postgresql":
        return "SELECT count(*) FROM pg_stat_activity WHERE pid = :id"
    return "SELECT count(*) FROM information_schema.processlist WHERE id = :id"


async def until_gone(admin: AsyncEngine, connection_id: int) -> None:
    """Return once the server no longer lists the connection ``connection_id``."""
    async with admin.connect() as connection:
        for _ in range(HANG_GUARD_S * 20):
            if not await connection.scalar(text(alive_query(admin)), {"id": connection_id}):
                return
            # PostgreSQL keeps one view of pg_stat_activity per transaction.
            await connection.rollback()
            await asyncio.sleep(0.05)
    raise AssertionError(f"connection {connection_id} still alive {HANG_GUARD_S} s after its kill")


def shelved_server_id(engine: AsyncEngine) -> int:
    """The server's id of the one connection on ``engine``'s shelf (io.shelf)."""
    connection = _shelved(engine).driver_connection
    assert connection is not None
    if engine.dialect.name == "postgresql":
        return int(connection.get_server_pid())
    return int(connection.thread_id())


async def until_heard(engine: AsyncEngine) -> None:
    """Return once the driver has read the end of the shelved connection: the server
    leaves pg_stat_activity (or the process list) a moment before it closes the socket."""
    held = _shelved(engine)
    wrapper = lean_driver(engine.dialect.driver)
    assert wrapper is not None
    for _ in range(HANG_GUARD_S * 100):
        if not wrapper(held.driver_connection).looks_open():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the driver never read the end of the killed connection")


def _shelved(engine: AsyncEngine) -> PoolProxiedConnection:
    shelves = engine.sync_engine.__dict__["_sessionmeta_shelves"]
    (held,) = [entry for shelf in shelves.by_loop.values() for entry in shelf.held]
    pooled: PoolProxiedConnection = held[0]
    return pooled
