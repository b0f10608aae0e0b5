"""SQLite as it is run in production: a store switches its database file to WAL, unless told
not to (``sqlite_wal=False``), and leaves in-memory databases and journal modes the
application chose alone.

The journal mode is read on a separate plain ``sqlite3`` connection: WAL is a property of
the file, which every connection and process then uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from sessionmeta import InvalidArgumentError, MetadataStore

from .models import ChatMeta

pytestmark = pytest.mark.sqlite

ROOT = Path(__file__).resolve().parent.parent


def file_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def journal_mode(path: Path) -> str:
    """The file's journal mode, as a new plain connection finds it."""
    with contextlib.closing(sqlite3.connect(path)) as connection:
        return str(connection.execute("PRAGMA journal_mode").fetchone()[0]).lower()


async def connection_journal_mode(engine: AsyncEngine) -> str:
    async with engine.connect() as connection:
        return str((await connection.execute(text("PRAGMA journal_mode"))).scalar_one()).lower()


@pytest.mark.parametrize("made", ["engine", "from_url"])
async def test_a_new_store_puts_its_file_in_wal_mode(tmp_path: Path, made: str) -> None:
    path = tmp_path / "fresh.sqlite3"
    if made == "engine":
        store = MetadataStore(ChatMeta, create_async_engine(file_url(path)), create_tables=True)
    else:
        store = MetadataStore.from_url(ChatMeta, file_url(path), create_tables=True)
    try:
        await store.bind("s1").set_metadata({"title": "first write"})
        assert journal_mode(path) == "wal"
        assert (await store.bind("s1").get_metadata()).title == "first write"
    finally:
        await store.close()
        await store.engine.dispose()


@pytest.mark.parametrize("made", ["engine", "from_url"])
async def test_the_opt_out_keeps_the_rollback_journal(tmp_path: Path, made: str) -> None:
    path = tmp_path / "kept.sqlite3"
    if made == "engine":
        engine = create_async_engine(file_url(path))
        store = MetadataStore(ChatMeta, engine, create_tables=True, sqlite_wal=False)
    else:
        store = MetadataStore.from_url(
            ChatMeta, file_url(path), create_tables=True, sqlite_wal=False
        )
    try:
        await store.bind("s1").set_metadata({"title": "first write"})
        await store.bind("s1").set_metadata({"priority": 2})
        assert journal_mode(path) == "delete"
        assert await connection_journal_mode(store.engine) == "delete"
    finally:
        await store.close()
        await store.engine.dispose()


async def test_one_store_opting_out_holds_for_the_whole_engine(tmp_path: Path) -> None:
    # The journal mode belongs to the file, not to a store: a store that must keep it
    # is not overruled by another store on the same engine, made before or after.
    path = tmp_path / "shared_engine.sqlite3"
    engine = create_async_engine(file_url(path))
    try:
        first = MetadataStore(ChatMeta, engine, create_tables=True)
        MetadataStore(ChatMeta, engine, sqlite_wal=False)
        later = MetadataStore(ChatMeta, engine)
        await first.bind("s1").set_metadata({"title": "a"})
        await later.bind("s2").set_metadata({"title": "b"})
        assert journal_mode(path) == "delete"
    finally:
        await engine.dispose()


def set_journal_mode_on_connect(engine: AsyncEngine, mode: str) -> None:
    """What an application that chose its own journal mode does: set it on each connection."""

    def on_connect(dbapi_connection: Any, connection_record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA journal_mode = {mode}")
        cursor.close()

    event.listen(engine.sync_engine, "connect", on_connect)


@pytest.mark.parametrize("sqlite_wal", [False, True], ids=["opted_out", "default"])
async def test_a_journal_mode_the_application_set_is_left_as_it_is(
    tmp_path: Path, sqlite_wal: bool
) -> None:
    path = tmp_path / "truncate.sqlite3"
    engine = create_async_engine(file_url(path))
    set_journal_mode_on_connect(engine, "TRUNCATE")
    try:
        store = MetadataStore(ChatMeta, engine, create_tables=True, sqlite_wal=sqlite_wal)
        await store.bind("s1").set_metadata({"title": "truncated journal"})
        assert await connection_journal_mode(engine) == "truncate"
        # Never switched to WAL: a new connection without the application's setting
        # finds SQLite's default.
        assert journal_mode(path) == "delete"
        assert (await store.bind("s1").get_metadata()).title == "truncated journal"
    finally:
        await engine.dispose()


async def test_the_opt_out_leaves_a_file_already_in_wal_mode_so(tmp_path: Path) -> None:
    # The opt-out never changes the journal mode, in either direction.
    path = tmp_path / "already_wal.sqlite3"
    with contextlib.closing(sqlite3.connect(path)) as connection:
        assert connection.execute("PRAGMA journal_mode = WAL").fetchone()[0] == "wal"
    store = MetadataStore.from_url(ChatMeta, file_url(path), create_tables=True, sqlite_wal=False)
    try:
        await store.bind("s1").set_metadata({"title": "logged"})
        assert journal_mode(path) == "wal"
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("url", "engine_kwargs"),
    [
        ("sqlite+aiosqlite://", {}),
        (
            "sqlite+aiosqlite:///file:defaults_memory?mode=memory&cache=shared&uri=true",
            {"poolclass": StaticPool},
        ),
    ],
    ids=["memory", "mode_memory_uri"],
)
async def test_an_in_memory_database_still_works(url: str, engine_kwargs: dict[str, Any]) -> None:
    store = MetadataStore.from_url(ChatMeta, url, engine_kwargs=engine_kwargs, create_tables=True)
    try:
        await store.bind("s1").set_metadata({"title": "in memory", "tags": ["a"]})
        assert (await store.bind("s1").get_metadata()).tags == ["a"]
        assert await connection_journal_mode(store.engine) == "memory"
    finally:
        await store.close()


async def test_the_switch_covers_connections_pooled_before_the_store(tmp_path: Path) -> None:
    path = tmp_path / "pooled.sqlite3"
    engine = create_async_engine(file_url(path))
    try:
        async with engine.connect() as connection:  # the application's, before the store
            await connection.execute(text("SELECT 1"))
        store = MetadataStore(ChatMeta, engine, create_tables=True)
        await store.bind("s1").set_metadata({"title": "x"})
        assert journal_mode(path) == "wal"
    finally:
        await engine.dispose()


async def test_a_write_does_not_wait_for_a_reader(tmp_path: Path) -> None:
    # In WAL mode an open read transaction elsewhere does not hold writers back; in the
    # rollback journal the commit would wait for it (the busy timeout, then retries).
    path = tmp_path / "reader.sqlite3"
    store = MetadataStore.from_url(ChatMeta, file_url(path), create_tables=True)
    try:
        await store.bind("s1").set_metadata({"title": "before"})
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as reader:
            reader.execute("BEGIN")
            reader.execute("SELECT COUNT(*) FROM agent_sessions_metadata").fetchone()
            started = time.monotonic()
            await store.bind("s1").set_metadata({"title": "after"})
            assert time.monotonic() - started < 2.0
            # The reader still sees its snapshot; the store sees its write.
            assert reader.execute(
                "SELECT value FROM agent_sessions_metadata WHERE key = 'title'"
            ).fetchone() == ('"before"',)
            reader.execute("COMMIT")
        assert (await store.bind("s1").get_metadata()).title == "after"
    finally:
        await store.close()


async def test_a_switch_that_cannot_happen_now_does_not_fail_the_call(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "busy.sqlite3"
    setup = MetadataStore.from_url(ChatMeta, file_url(path), create_tables=True, sqlite_wal=False)
    await setup.bind("s1").set_metadata({"title": "kept"})
    await setup.close()
    store = MetadataStore.from_url(ChatMeta, file_url(path))
    try:
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as reader:
            # A read transaction in the rollback journal: the switch, which needs the file
            # to itself, waits a moment and gives up; the call goes on.
            reader.execute("BEGIN")
            reader.execute("SELECT COUNT(*) FROM agent_sessions_metadata").fetchone()
            with caplog.at_level(logging.WARNING, logger="sessionmeta"):
                assert (await store.bind("s1").get_metadata()).title == "kept"
            reader.execute("COMMIT")
        assert "could not switch the SQLite database file to WAL" in caplog.text
        assert journal_mode(path) == "delete"
        # The next new connection switches it.
        await store.engine.dispose()
        await store.bind("s1").set_metadata({"title": "then logged"})
        assert journal_mode(path) == "wal"
    finally:
        await store.close()


def test_sqlite_wal_takes_a_bool() -> None:
    engine = create_async_engine("sqlite+aiosqlite://")
    with pytest.raises(InvalidArgumentError, match="sqlite_wal"):
        MetadataStore(ChatMeta, engine, sqlite_wal="no")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="sqlite_wal"):
        MetadataStore.from_url(ChatMeta, "sqlite+aiosqlite://", sqlite_wal=0)  # type: ignore[arg-type]


# Each process writes its own session, then, with its store still open, waits until it
# reads the other's and the other has read its own: both stay open the whole time.
PROCESS_SCRIPT = """
import asyncio, sys, time
from sessionmeta import MetadataStore
from tests.models import ChatMeta

async def main(url, me, other, sqlite_wal):
    store = MetadataStore.from_url(
        ChatMeta, url, create_tables=True, sqlite_wal=sqlite_wal == "on"
    )
    try:
        await store.bind(me).set_metadata({"title": f"written by {me}"})
        deadline = time.monotonic() + 60
        while (await store.bind(other).get_metadata()).title != f"written by {other}":
            assert time.monotonic() < deadline, f"{me} never saw {other}'s write"
            await asyncio.sleep(0.02)
        await store.bind(me).set_metadata({"owner_id": f"{me} saw {other}"})
        while (await store.bind(other).get_metadata()).owner_id != f"{other} saw {me}":
            assert time.monotonic() < deadline, f"{other} never said it saw {me}'s write"
            await asyncio.sleep(0.02)
    finally:
        await store.close()

asyncio.run(main(*sys.argv[1:]))
"""


@pytest.mark.parametrize("sqlite_wal", ["on", "off"])
async def test_two_processes_see_each_others_writes(tmp_path: Path, sqlite_wal: str) -> None:
    path = tmp_path / "two_processes.sqlite3"
    url = file_url(path)
    names = ("p0", "p1")
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            PROCESS_SCRIPT,
            url,
            me,
            other,
            sqlite_wal,
            cwd=ROOT,
            stderr=asyncio.subprocess.PIPE,
        )
        for me, other in (names, names[::-1])
    ]
    for process in processes:
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
        assert process.returncode == 0, stderr.decode()
    assert journal_mode(path) == ("wal" if sqlite_wal == "on" else "delete")
    # Read back after both finished, by a third store.
    store = MetadataStore.from_url(ChatMeta, url, sqlite_wal=sqlite_wal == "on")
    try:
        for me, other in (names, names[::-1]):
            read = await store.bind(me).get_metadata()
            assert (read.title, read.owner_id) == (f"written by {me}", f"{me} saw {other}")
    finally:
        await store.close()
