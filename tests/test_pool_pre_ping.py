"""An engine with ``pool_pre_ping=True`` (what the README advises for a Galera cluster, or
any server that restarts) serves the store, and replaces a pooled connection the server
closed instead of failing the next call."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from sessionmeta import MetadataStore

from .conftest import reset_database
from .models import ChatMeta


async def server_id(connection: AsyncConnection) -> int:
    if connection.dialect.name == "postgresql":
        return int(await connection.scalar(text("SELECT pg_backend_pid()")))
    return int(await connection.scalar(text("SELECT CONNECTION_ID()")))


async def test_a_connection_the_server_closed_is_replaced(backend: str, db_url: str) -> None:
    if backend == "sqlite":
        pytest.skip("SQLite has no server to close a connection")
    admin = create_async_engine(db_url)
    engine = create_async_engine(db_url, pool_size=1, max_overflow=0, pool_pre_ping=True)
    try:
        await reset_database(admin)
        store = MetadataStore(ChatMeta, engine, create_tables=True)
        meta = store.bind("s1")
        await meta.set_metadata({"title": "before"})
        async with engine.connect() as connection:  # the pool's one connection
            victim = await server_id(connection)
        async with admin.connect() as connection:
            if backend == "postgres":
                await connection.execute(text(f"SELECT pg_terminate_backend({victim})"))
            else:
                await connection.execute(text(f"KILL {victim}"))
        await meta.set_metadata({"title": "after"})
        assert (await meta.get_metadata()).title == "after"
        async with engine.connect() as connection:
            assert await server_id(connection) != victim
    finally:
        await engine.dispose()
        await admin.dispose()
