"""An engine with ``pool_pre_ping=True`` (what the README advises for a Galera cluster, or
any server that restarts) serves the store, and replaces a pooled connection the server
closed instead of failing the next call."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from sessionmeta import MetadataStore
from sessionmeta.io import shelf

from .conftest import MYSQL_URL, POSTGRES_URL, require_server, reset_database
from .models import ChatMeta
from .server_kills import kill, shelved_server_id, until_gone, until_heard


async def server_id(connection: AsyncConnection) -> int:
    if connection.dialect.name == "postgresql":
        return int(await connection.scalar(text("SELECT pg_backend_pid()")))
    return int(await connection.scalar(text("SELECT CONNECTION_ID()")))


@pytest.fixture
def server_url(server: str) -> str:
    require_server(server)
    return POSTGRES_URL if server == "postgres" else MYSQL_URL


# SQLite has no server to close a connection.
@pytest.mark.parametrize(
    "server",
    [
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ],
)
async def test_a_connection_the_server_closed_is_replaced(server: str, server_url: str) -> None:
    db_url = server_url
    admin = create_async_engine(db_url)
    engine = create_async_engine(db_url, pool_size=1, max_overflow=0, pool_pre_ping=True)
    try:
        await reset_database(admin)
        store = MetadataStore(ChatMeta, engine, create_tables=True)
        meta = store.bind("s1")
        await meta.set_metadata({"title": "before"})
        async with engine.connect() as connection:  # the pool's one connection
            victim = await server_id(connection)
        await kill(admin, victim)
        # Gone for good, so the next call finds it closed whenever it runs.
        await until_gone(admin, victim)
        await meta.set_metadata({"title": "after"})
        assert (await meta.get_metadata()).title == "after"
        async with engine.connect() as connection:
            assert await server_id(connection) != victim
    finally:
        await engine.dispose()
        await admin.dispose()


@pytest.mark.parametrize(
    "server",
    [
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ],
)
async def test_a_shelved_connection_the_server_closed_is_replaced(
    server: str, server_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With pool_pre_ping the shelf stays on (io.shelf): a connection waits there at most
    # a few ms after its last statement, and one the server closed meanwhile is dropped
    # before use, as the ping would have dropped it.
    # A linger long enough that the kill lands while the connection is still shelved.
    monkeypatch.setattr(shelf, "LINGER_S", 30.0)
    admin = create_async_engine(server_url)
    engine = create_async_engine(server_url, pool_size=2, max_overflow=0, pool_pre_ping=True)
    try:
        await reset_database(admin)
        store = MetadataStore(ChatMeta, engine, create_tables=True)
        meta = store.bind("s1")
        await meta.set_metadata({"title": "before"})
        victim = shelved_server_id(engine)
        await kill(admin, victim)
        await until_gone(admin, victim)
        await until_heard(engine)
        await meta.set_metadata({"title": "after"})
        assert (await meta.get_metadata()).title == "after"
    finally:
        await engine.dispose()
        await admin.dispose()
