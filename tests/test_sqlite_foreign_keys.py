"""SQLite: a plain MetadataStore (no Agents SDK) turns foreign keys on for every connection
its engine hands out, so deleting a session row anywhere cascades to its metadata.

SQLite leaves ``PRAGMA foreign_keys`` off on each new connection; these tests never turn
it on themselves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from sessionmeta import MetadataStore

from .dbstate import session_ids
from .models import ChatMeta

pytestmark = pytest.mark.sqlite

METADATA_TABLE = "agent_sessions_metadata"
ITEMS_TABLE = "agent_sessions_metadata_items"


def sqlite_engine(tmp_path: Path, pool: str) -> AsyncEngine:
    """A SQLite file engine: the default (queued) pool, or a new connection per checkout."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'foreign_keys.sqlite3'}"
    kwargs: dict[str, Any] = {"poolclass": NullPool} if pool == "null" else {}
    return create_async_engine(url, **kwargs)


async def rows_of(engine: AsyncEngine, table: str, session_id: str) -> int:
    async with engine.connect() as connection:
        count = await connection.scalar(
            text(f"SELECT COUNT(*) FROM {table} WHERE session_id = :sid"), {"sid": session_id}
        )
    return int(count or 0)


async def foreign_keys(connection: AsyncConnection) -> int:
    return int(await connection.scalar(text("PRAGMA foreign_keys")))


async def driver_connection(connection: AsyncConnection) -> Any:
    return (await connection.get_raw_connection()).driver_connection


@pytest.mark.parametrize("pool", ["queue", "null"])
async def test_deleting_the_session_row_elsewhere_leaves_no_orphans(
    tmp_path: Path, pool: str
) -> None:
    engine = sqlite_engine(tmp_path, pool)
    try:
        store = MetadataStore(ChatMeta, engine, create_tables=True)
        await store.bind("s1").set_metadata({"owner_id": "u1", "title": "Gone", "tags": ["a", "b"]})
        await store.bind("s2").set_metadata({"owner_id": "u2", "tags": ["c"]})
        assert await rows_of(engine, METADATA_TABLE, "s1") == 3
        assert await rows_of(engine, ITEMS_TABLE, "s1") == 2

        # While one connection is checked out, the delete runs on another connection of
        # the engine: one the store's own calls may never have used.
        async with engine.connect() as held, engine.begin() as other:
            assert await driver_connection(other) is not await driver_connection(held)
            await other.execute(
                text("DELETE FROM agent_sessions WHERE session_id = :s"), {"s": "s1"}
            )

        assert await session_ids(engine) == ["s2"]
        assert await rows_of(engine, METADATA_TABLE, "s1") == 0
        assert await rows_of(engine, ITEMS_TABLE, "s1") == 0
        # The other session is untouched.
        assert await rows_of(engine, METADATA_TABLE, "s2") == 2
        assert await rows_of(engine, ITEMS_TABLE, "s2") == 1
        assert (await store.bind("s2").get_metadata()).tags == ["c"]
    finally:
        await engine.dispose()


async def test_a_connection_pooled_before_the_store_gets_foreign_keys(tmp_path: Path) -> None:
    engine = sqlite_engine(tmp_path, "queue")
    try:
        async with engine.connect() as early:
            assert await foreign_keys(early) == 0  # SQLite's default
            early_driver = await driver_connection(early)
        # Back in the pool; now the store is built, and does nothing yet.
        store = MetadataStore(ChatMeta, engine, create_tables=True)

        async with engine.connect() as c1, engine.connect() as c2, engine.connect() as c3:
            handed_out = [c1, c2, c3]
            drivers = [await driver_connection(connection) for connection in handed_out]
            assert any(driver is early_driver for driver in drivers), "the pool dropped it"
            assert [await foreign_keys(connection) for connection in handed_out] == [1, 1, 1]

        # Still so once the store has worked.
        await store.bind("s1").set_metadata({"title": "x"})
        async with engine.connect() as c1, engine.connect() as c2, engine.connect() as c3:
            handed_out = [c1, c2, c3]
            assert [await foreign_keys(connection) for connection in handed_out] == [1, 1, 1]
    finally:
        await engine.dispose()


async def test_new_connections_get_foreign_keys(tmp_path: Path) -> None:
    engine = sqlite_engine(tmp_path, "null")
    try:
        MetadataStore(ChatMeta, engine, create_tables=True)
        for _ in range(3):
            async with engine.connect() as connection:
                assert await foreign_keys(connection) == 1
    finally:
        await engine.dispose()
