"""Faults: a connection killed mid-write, a database that is down or silent, lock timeouts."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from sessionmeta import BoundMetadata, DatabaseError, MetadataStore
from sessionmeta.io import shelf
from sessionmeta.io.drivers import lean_driver

from .dbstate import stored_rows
from .models import ChatMeta
from .server_kills import (
    HANG_GUARD_S,
    alive_query,
    kill,
    shelved_server_id,
    until_gone,
    until_heard,
)


def _needs_server(backend: str) -> None:
    if backend == "sqlite":
        pytest.skip("SQLite has no server connection to kill; see test_sqlite_processes.py")


async def _server_id(connection: AsyncConnection) -> int:
    if connection.dialect.name == "postgresql":
        return int(await connection.scalar(text("SELECT pg_backend_pid()")))
    return int(await connection.scalar(text("SELECT CONNECTION_ID()")))


async def _wait_until_blocked(admin: AsyncEngine, victim: int, write: asyncio.Task[None]) -> None:
    """Return once connection ``victim`` waits for a row lock (bounded by the hang guard).

    On MariaDB a session killed by an earlier test can linger (its transaction stays in
    innodb_trx after the kill, past the lock wait timeout) and hold the locks the write
    needs; the write then waits where innodb_trx does not show it. Still in flight after
    a second, it is blocked all the same.
    """
    started = asyncio.get_running_loop().time()
    if admin.dialect.name == "postgresql":
        query = text("SELECT 1 FROM pg_stat_activity WHERE pid = :id AND wait_event_type = 'Lock'")
    else:
        # MariaDB reads a primary-key row while planning ("Statistics"), so a lock wait
        # there shows in the process list, not as LOCK WAIT in innodb_trx.
        query = text(
            "SELECT 1 FROM information_schema.innodb_trx "
            "WHERE trx_mysql_thread_id = :id AND trx_state = 'LOCK WAIT' "
            "UNION SELECT 1 FROM information_schema.processlist "
            "WHERE id = :id AND command = 'Query' AND state = 'Statistics' AND time_ms > 200"
        )
    for _ in range(HANG_GUARD_S * 20):
        async with admin.connect() as connection:
            if (await connection.execute(query, {"id": victim})).first():
                return
        in_flight = asyncio.get_running_loop().time() - started
        if admin.dialect.name != "postgresql" and not write.done() and in_flight > 1:
            return
        await asyncio.sleep(0.05)
    async with admin.connect() as connection:
        activity = (
            await connection.execute(
                text("SELECT pid, state, wait_event_type, query FROM pg_stat_activity")
                if admin.dialect.name == "postgresql"
                else text("SELECT * FROM information_schema.innodb_trx")
            )
        ).all()
    raise AssertionError(f"connection {victim} never waited for the blocker's lock: {activity}")


@pytest.fixture
async def one_connection_store(
    db_url: str, engine: AsyncEngine
) -> AsyncIterator[MetadataStore[ChatMeta]]:
    """A store whose pool holds one connection: a call after a kill must have replaced it."""
    single = create_async_engine(db_url, pool_size=1, max_overflow=0)
    store = MetadataStore(ChatMeta, single, create_tables=True)
    await store.create_tables()
    try:
        yield store
    finally:
        await single.dispose()


async def _multi_key_write(meta: BoundMetadata[ChatMeta]) -> None:
    # Rows go in key order: owner_id, priority and tags are written, then title waits.
    await meta.set_metadata({"owner_id": "new", "priority": 1, "tags": ["t"], "title": "new"})


async def _add_tag(meta: BoundMetadata[ChatMeta]) -> None:
    await meta.add_to("tags", "new")


@pytest.mark.parametrize(
    ("write", "locked_key"),
    [(_multi_key_write, "title"), (_add_tag, "tags")],
    ids=["set", "add_to"],
)
async def test_connection_killed_mid_write_leaves_all_or_nothing(
    backend: str,
    engine: AsyncEngine,
    one_connection_store: MetadataStore[ChatMeta],
    write: Callable[[BoundMetadata[ChatMeta]], Coroutine[Any, Any, None]],
    locked_key: str,
) -> None:
    _needs_server(backend)
    meta = one_connection_store.bind("s")
    await meta.set_metadata({"owner_id": "old", "priority": 0, "tags": ["old"], "title": "old"})
    before = await stored_rows(engine, "s")
    # The store's pool holds one connection: the one the write will run on.
    async with one_connection_store.engine.connect() as connection:
        victim = await _server_id(connection)
    async with engine.connect() as blocker:
        await blocker.execute(
            text(
                "SELECT value FROM agent_sessions_metadata "
                "WHERE session_id = 's' AND "
                + ("`key`" if backend == "mysql" else '"key"')
                + " = :key FOR UPDATE"
            ),
            {"key": locked_key},
        )
        task = asyncio.create_task(write(meta))
        await _wait_until_blocked(engine, victim, task)
        await kill(engine, victim)
        with pytest.raises(DatabaseError, match="'s'") as caught:
            await asyncio.wait_for(task, HANG_GUARD_S)
        assert caught.value.session_id == "s"
        assert caught.value.__cause__ is not None
        await blocker.rollback()
    assert await stored_rows(engine, "s") == before
    # The same store, whose only pooled connection was the dead one, works again.
    await meta.set_metadata({"title": "after"})
    await meta.add_to("tags", "after")
    read = await meta.get_metadata()
    assert (read.title, read.tags, read.owner_id) == ("after", ["old", "after"], "old")


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _unreachable_urls(tmp_path: Path, port: int) -> dict[str, str]:
    return {
        "postgres": f"postgresql+asyncpg://postgres@127.0.0.1:{port}/nowhere",
        "mysql": f"mysql+aiomysql://root@127.0.0.1:{port}/nowhere",
        "sqlite": f"sqlite+aiosqlite:///{tmp_path / 'no-such-directory' / 'db.sqlite3'}",
    }


@pytest.mark.parametrize("create_tables", [False, True])
@pytest.mark.parametrize("kind", ["postgres", "mysql", "sqlite"])
async def test_database_down_at_start_up_is_a_clear_error(
    kind: str, create_tables: bool, tmp_path: Path
) -> None:
    url = _unreachable_urls(tmp_path, _closed_port())[kind]
    async with MetadataStore.from_url(ChatMeta, url, create_tables=create_tables) as store:
        with pytest.raises(DatabaseError) as caught:
            await asyncio.wait_for(store.bind("s").get_metadata(), HANG_GUARD_S)
    if kind == "sqlite":
        # aiosqlite stops the thread of a failed connect without awaiting it; let it
        # finish while this test's event loop still exists.
        for thread in threading.enumerate():
            if "_connection_worker_thread" in thread.name:
                thread.join(HANG_GUARD_S)
    message = str(caught.value)
    assert ("cannot connect" in message) or ("cannot create the tables" in message)
    assert "nowhere" in message or "no-such-directory" in message or create_tables


async def _silent_server() -> tuple[asyncio.Server, int]:
    """A server that accepts connections and never says a word."""

    async def ignore(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(ignore, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.parametrize(
    ("url", "options"),
    [
        # asyncpg's own connect timeout covers the whole handshake.
        (
            "postgresql+asyncpg://postgres@127.0.0.1:{port}/x",
            {"engine_kwargs": {"connect_args": {"timeout": 0.5}}},
        ),
        # aiomysql's connect_timeout covers only the TCP connect: the store's bounds the rest.
        ("mysql+aiomysql://root@127.0.0.1:{port}/x", {"connect_timeout": 0.5}),
        ("postgresql+asyncpg://postgres@127.0.0.1:{port}/x", {"connect_timeout": 0.5}),
    ],
    ids=["postgres-connect-args", "mysql-store-option", "postgres-store-option"],
)
@pytest.mark.parametrize("create_tables", [False, True])
async def test_a_silent_server_times_out(
    url: str, options: dict[str, Any], create_tables: bool
) -> None:
    server, port = await _silent_server()
    try:
        store = MetadataStore.from_url(
            ChatMeta, url.format(port=port), create_tables=create_tables, **options
        )
        async with store:
            with pytest.raises(DatabaseError, match="cannot") as caught:
                await asyncio.wait_for(store.bind("s").get_metadata(), HANG_GUARD_S)
        assert str(port) in str(caught.value) or "connect_timeout" in str(caught.value)
    finally:
        server.close()
        await server.wait_closed()


def _lock_timeout_args(backend: str) -> dict[str, Any]:
    if backend == "postgres":
        return {"server_settings": {"lock_timeout": "300"}}
    if backend == "mysql":
        return {"init_command": "SET SESSION innodb_lock_wait_timeout = 1"}
    return {"timeout": 0.05}


async def test_lock_wait_timeout_is_configurable(
    backend: str, db_url: str, engine: AsyncEngine
) -> None:
    impatient = create_async_engine(db_url, connect_args=_lock_timeout_args(backend))
    try:
        store = MetadataStore(ChatMeta, impatient, create_tables=True)
        meta = store.bind("s")
        await meta.set_metadata({"title": "old"})
        if backend == "sqlite":
            # The application's busy timeout is kept, not replaced by the default 5 s.
            async with impatient.connect() as connection:
                busy = await connection.exec_driver_sql("PRAGMA busy_timeout")
                assert busy.scalar() == 50
        async with engine.connect() as blocker:
            if backend == "sqlite":
                # SQLite locks the whole file: a write transaction left open elsewhere.
                await blocker.execute(text("BEGIN IMMEDIATE"))
            else:
                await blocker.execute(
                    text("SELECT session_id FROM agent_sessions_metadata FOR UPDATE")
                )
            with pytest.raises(DatabaseError, match="'s'"):
                await asyncio.wait_for(meta.set_metadata({"title": "new"}), HANG_GUARD_S)
            await blocker.rollback()
        assert (await meta.get_metadata()).title == "old"
        await meta.set_metadata({"title": "new"})
        assert (await meta.get_metadata()).title == "new"
    finally:
        await impatient.dispose()


async def test_a_shelved_connection_killed_on_the_server_is_replaced(
    backend: str, engine: AsyncEngine, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The driver has heard of the kill by the next call: the shelf drops the connection
    # before use, as pool_pre_ping would, and the call runs on a fresh one.
    _needs_server(backend)
    # A linger long enough that the kill lands while the connection is still shelved.
    monkeypatch.setattr(shelf, "LINGER_S", 30.0)
    store = MetadataStore(ChatMeta, engine, create_tables=True)
    meta = store.bind("s")
    await meta.set_metadata({"title": "before", "tags": ["old"]})
    victim = shelved_server_id(engine)
    await kill(engine, victim)
    await until_gone(engine, victim)
    await until_heard(engine)
    await meta.add_to("tags", "new")
    read = await meta.get_metadata()
    assert (read.title, read.tags) == ("before", ["old", "new"])
    assert shelved_server_id(engine) != victim


@pytest.mark.postgres
def test_asyncpg_protocol_errors_are_lost_connections() -> None:
    # Read between the server's goodbye and its close, a killed connection is in no
    # state asyncpg can use ("cannot switch to state 12; another operation (2) is in
    # progress"): a lost connection, translated and invalidated like the others.
    from asyncpg.exceptions import InternalClientError

    wrapper = lean_driver("asyncpg")
    assert wrapper is not None
    assert InternalClientError in wrapper.error_classes()
    assert wrapper(None).is_disconnect(InternalClientError("cannot switch to state 12"))


def _sync_url(db_url: str) -> URL:
    url = make_url(db_url)
    return url.set(
        drivername="postgresql+psycopg"
        if url.get_backend_name() == "postgresql"
        else "mysql+pymysql"
    )


async def test_a_kill_the_driver_has_not_heard_of_fails_the_next_call_as_without_the_shelf(
    backend: str, engine: AsyncEngine, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The kill happens while the event loop is blocked, so the driver has not read the
    # server's goodbye when the next call takes the shelved connection: its first
    # statement finds the connection gone. As for a connection killed just after a pool
    # checkout: a DatabaseError naming the session, the write not applied, not retried
    # (it could have been applied), and the next call works on a fresh connection.
    _needs_server(backend)
    # A linger long enough that the kill lands while the connection is still shelved.
    monkeypatch.setattr(shelf, "LINGER_S", 30.0)
    store = MetadataStore(ChatMeta, engine, create_tables=True)
    meta = store.bind("s")
    await meta.set_metadata({"title": "before", "tags": ["old"]})
    before = await stored_rows(engine, "s")
    await meta.get_metadata()  # the shelf now holds the connection the next call takes
    victim = shelved_server_id(engine)
    blocking = create_engine(_sync_url(db_url), poolclass=NullPool)
    try:
        with blocking.connect() as connection:
            if backend == "postgres":
                connection.execute(text("SELECT pg_terminate_backend(:id)"), {"id": victim})
            else:
                connection.execute(text(f"KILL {int(victim)}"))
            for _ in range(HANG_GUARD_S * 20):
                if not connection.scalar(text(alive_query(blocking)), {"id": victim}):
                    break
                connection.rollback()  # a fresh view of pg_stat_activity
                time.sleep(0.05)  # noqa: ASYNC251 (blocks the loop on purpose)
    finally:
        blocking.dispose()
    with pytest.raises(DatabaseError, match="lost the database connection") as caught:
        await asyncio.wait_for(meta.add_to("tags", "new"), HANG_GUARD_S)
    assert caught.value.session_id == "s"
    assert await stored_rows(engine, "s") == before
    await meta.add_to("tags", "after")
    assert (await meta.get_metadata()).tags == ["old", "after"]
