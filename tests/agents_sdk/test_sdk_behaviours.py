"""The behaviours the Agents SDK tests its own ``SQLAlchemySession`` for, checked on the drop-in.

The SDK runs its checks (``tests/extensions/memory/test_sqlalchemy_session.py``)
on an in-memory SQLite database only. These are our own tests of the same
behaviours, on SQLite, PostgreSQL and MySQL/MariaDB, through
``MetadataSQLAlchemySession``: what a user of the plain SDK session relies on
must hold for the drop-in too. What ``test_session.py`` already covers is not
repeated here.
"""

from __future__ import annotations

import asyncio
import gc
import json
import random
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from agents import Agent, RunConfig, Runner
from agents.items import TResponseInputItem
from agents.memory import SessionSettings
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from sessionmeta.agents import MetadataSQLAlchemySession
from tests.conftest import reset_database
from tests.models import ChatMeta

from .scripted_model import ScriptedModel

Drop = MetadataSQLAlchemySession[ChatMeta]

ALL_TABLES = {
    "agent_sessions",
    "agent_messages",
    "agent_sessions_metadata",
    "agent_sessions_metadata_items",
    "agent_sessions_metadata_unique",
}

# Seconds a call may take once nothing blocks it; far above what any call needs.
PROMPT = 10.0


def drop_in(engine: AsyncEngine, session_id: str, **kwargs: Any) -> Drop:
    return MetadataSQLAlchemySession(
        session_id, engine=engine, metadata_model=ChatMeta, create_tables=True, **kwargs
    )


def user(content: str) -> TResponseInputItem:
    return {"role": "user", "content": content}


def contents(items: Sequence[TResponseInputItem | None]) -> list[Any]:
    return [item.get("content") for item in items if isinstance(item, dict)]


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


def is_mysql(engine: AsyncEngine) -> bool:
    return engine.dialect.name in ("mysql", "mariadb")


async def table_names(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as connection:
        names = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
    return set(names)


async def stored_message_data(engine: AsyncEngine, session_id: str) -> list[str]:
    """The ``message_data`` text of a session's rows, as the database holds it."""
    async with engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT message_data FROM agent_messages WHERE session_id = :sid ORDER BY id"),
            {"sid": session_id},
        )
        return [row[0] for row in rows]


async def count_rows(engine: AsyncEngine, table: str, session_id: str) -> int:
    async with engine.connect() as connection:
        result = await connection.execute(
            text(f"SELECT COUNT(*) FROM {table} WHERE session_id = :sid"), {"sid": session_id}
        )
        return int(result.scalar_one())


async def insert_corrupt_row(engine: AsyncEngine, session_id: str) -> None:
    """A row another writer left unreadable: its ``message_data`` is not JSON."""
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO agent_messages (session_id, message_data) "
                "VALUES (:sid, 'not valid json {{{')"
            ),
            {"sid": session_id},
        )


async def fresh_database(db_url: str, tmp_path: Path, name: str) -> str:
    """The URL of an empty database: a new file on SQLite, the server's test database emptied."""
    if make_url(db_url).get_backend_name() == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / f'{name}.sqlite3'}"
    engine = create_async_engine(db_url)
    try:
        await reset_database(engine)
    finally:
        await engine.dispose()
    return db_url


@asynccontextmanager
async def session_row_locked(engine: AsyncEngine, session_id: str) -> AsyncIterator[None]:
    """Another connection holds the lock that every write to ``session_id`` must take.

    SQLite: the database's single writer slot. Servers: the session row, as a
    concurrent writer of the same session would hold it.
    """
    async with engine.connect() as connection:
        if is_sqlite(engine):
            await connection.execute(text("BEGIN IMMEDIATE"))
        else:
            locked = await connection.execute(
                text("SELECT session_id FROM agent_sessions WHERE session_id = :sid FOR UPDATE"),
                {"sid": session_id},
            )
            assert locked.scalar_one() == session_id
        try:
            yield
        finally:
            await connection.rollback()


def failures(results: Sequence[object]) -> list[BaseException]:
    return [result for result in results if isinstance(result, BaseException)]


# --- Direct operations ---------------------------------------------------------------------------


async def test_first_call_on_a_fresh_database_may_be_any_call(engine: AsyncEngine) -> None:
    # pop_item, clear_session and get_items create the tables too, and see an empty session.
    popper, clearer, reader = drop_in(engine, "p"), drop_in(engine, "c"), drop_in(engine, "r")
    assert await popper.pop_item() is None
    assert await table_names(engine) == ALL_TABLES
    await clearer.clear_session()
    assert await reader.get_items() == []
    assert await reader.get_items(limit=3) == []
    # None of them left a session row behind.
    for session_id in ("p", "c", "r"):
        assert await count_rows(engine, "agent_sessions", session_id) == 0


async def test_add_items_with_an_empty_list_is_a_no_op(engine: AsyncEngine) -> None:
    empty = drop_in(engine, "empty")
    await empty.add_items([])
    assert await empty.get_items() == []
    assert await count_rows(engine, "agent_sessions", "empty") == 0

    written = drop_in(engine, "written")
    await written.add_items([user("kept")])
    await written.add_items([])
    assert contents(await written.get_items()) == ["kept"]
    assert await count_rows(engine, "agent_messages", "written") == 1


async def test_clear_session_of_an_unknown_session_touches_nothing(engine: AsyncEngine) -> None:
    kept = drop_in(engine, "kept")
    await kept.add_items([user("a"), user("b")])
    await kept.set_metadata({"title": "kept"})
    await drop_in(engine, "never-written").clear_session()
    assert contents(await kept.get_items()) == ["a", "b"]
    assert (await kept.get_metadata()).title == "kept"


# --- Stored form of the items --------------------------------------------------------------------


async def test_default_storage_escapes_non_ascii(engine: AsyncEngine) -> None:
    session = drop_in(engine, "ascii")
    item = user("café 🚀")
    await session.add_items([item])

    (stored,) = await stored_message_data(engine, "ascii")
    assert stored.isascii()
    assert "\\u00e9" in stored
    assert "\\ud83d\\ude80" in stored
    assert "café" not in stored
    assert json.loads(stored) == item
    assert await session.get_items() == [item]


async def test_ensure_ascii_false_stores_the_characters_themselves(engine: AsyncEngine) -> None:
    session = drop_in(engine, "raw", ensure_ascii=False)
    item = user("café 🚀 日本語 Привет مرحبا")
    await session.add_items([item])

    (stored,) = await stored_message_data(engine, "raw")
    assert "café 🚀 日本語 Привет مرحبا" in stored
    assert "\\u" not in stored
    assert json.loads(stored) == item
    assert await session.get_items() == [item]


async def test_histories_written_in_both_modes_read_back_together(engine: AsyncEngine) -> None:
    # An application that turns ensure_ascii off later still reads its older rows.
    escaped, raw = drop_in(engine, "mixed"), drop_in(engine, "mixed", ensure_ascii=False)
    await escaped.add_items([user("old é")])
    await raw.add_items([user("new é")])
    await escaped.add_items([user("older again ✓")])
    expected = ["old é", "new é", "older again ✓"]
    assert contents(await escaped.get_items()) == expected
    assert contents(await raw.get_items()) == expected
    popped = await raw.pop_item()
    assert popped == user("older again ✓")


UNICODE_TEXTS = {
    "emoji": "🙂🚀🎉 and a family 👨‍👩‍👧‍👦 with a flag 🇫🇷",
    "scripts": "日本語 中文 한국어 Ελληνικά Русский עברית العربية हिन्दी",
    "combining": "e\u0301 n\u0303 a\u030a, Zalgo: Z\u0351\u0360a\u0489l\u0354g\u0336o",
    "controls": 'tab\tnewline\nreturn\rnul\x00bell\x07 quote" backslash\\',
    "astral": "\U0001d518\U0001d52b\U0001d526 \U0001d7d8\U0001d7d9 \U0001f9ec \U0010fffd",
    "large": "é🚀" * 60_000,  # over 64 KiB however it is stored
}


@pytest.mark.parametrize("ensure_ascii", [True, False], ids=["escaped", "raw"])
async def test_unicode_items_round_trip(engine: AsyncEngine, ensure_ascii: bool) -> None:
    session = drop_in(engine, "unicode", ensure_ascii=ensure_ascii)
    items: list[TResponseInputItem] = []
    for index, value in enumerate(UNICODE_TEXTS.values()):
        items.append(user(value))
        items.append(
            {
                "id": f"msg_{index}",
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": value, "annotations": []}],
            }
        )
    await session.add_items(items[:4])
    await session.add_items(items[4:])

    assert await session.get_items() == items
    assert await session.get_items(limit=3) == items[-3:]
    stored = await stored_message_data(engine, "unicode")
    assert [json.loads(row) for row in stored] == items
    # Control characters are escaped in either mode: no NUL reaches the database.
    assert not any("\x00" in row for row in stored)
    assert all(row.isascii() for row in stored) is ensure_ascii
    assert await session.pop_item() == items[-1]
    assert await session.get_items() == items[:-1]


# --- Limits and session settings -----------------------------------------------------------------


async def test_session_settings_default_to_no_limit(engine: AsyncEngine) -> None:
    session = drop_in(engine, "unlimited")
    assert isinstance(session.session_settings, SessionSettings)
    assert session.session_settings.limit is None
    submitted = [f"m{index}" for index in range(30)]
    await session.add_items([user(content) for content in submitted])
    assert contents(await session.get_items()) == submitted


@pytest.mark.parametrize("form", ["class", "dict"])
async def test_session_settings_limit_in_either_form(engine: AsyncEngine, form: str) -> None:
    settings: SessionSettings | dict[str, Any] = (
        SessionSettings(limit=3) if form == "class" else {"limit": 3}
    )
    session = drop_in(engine, "limited", session_settings=settings)
    assert isinstance(session.session_settings, SessionSettings)
    assert session.session_settings.limit == 3
    await session.add_items([user(f"m{index}") for index in range(5)])
    assert contents(await session.get_items()) == ["m2", "m3", "m4"]


async def test_explicit_limit_overrides_session_settings(engine: AsyncEngine) -> None:
    session = drop_in(engine, "override", session_settings=SessionSettings(limit=5))
    assert await session.get_items(limit=2) == []
    await session.add_items([user(f"m{index}") for index in range(7)])
    assert contents(await session.get_items(limit=2)) == ["m5", "m6"]
    assert contents(await session.get_items(limit=1)) == ["m6"]
    # Larger than the settings' limit, and larger than the history.
    assert contents(await session.get_items(limit=6)) == [f"m{index}" for index in range(1, 7)]
    assert contents(await session.get_items(limit=50)) == [f"m{index}" for index in range(7)]
    assert contents(await session.get_items()) == [f"m{index}" for index in range(2, 7)]


async def test_run_config_session_settings_override_the_sessions(engine: AsyncEngine) -> None:
    model = ScriptedModel(lambda question: "Got it")
    agent = Agent(name="Assistant", model=model)
    session = drop_in(engine, "runner", session_settings=SessionSettings(limit=100))
    await session.add_items([user(f"Turn {index}") for index in range(10)])

    await Runner.run(
        agent,
        "New question",
        session=session,
        run_config=RunConfig(session_settings=SessionSettings(limit=2)),
    )

    assert contents(model.inputs[-1]) == ["Turn 8", "Turn 9", "New question"]
    # The run appended its turn to the full history, which the override did not cut.
    stored = contents(await session.get_items())
    assert len(stored) == 12
    assert stored[:10] == [f"Turn {index}" for index in range(10)]
    assert stored[10] == "New question"


# --- Order when timestamps tie -------------------------------------------------------------------


async def test_items_with_the_same_timestamp_keep_insertion_order(engine: AsyncEngine) -> None:
    # MySQL's TIMESTAMP keeps whole seconds, so ties are the rule there, not a corner case.
    session = drop_in(engine, "ties")
    await session.add_items([user("first")])
    await session.add_items([user("second"), user("third")])
    await session.add_items([user("fourth")])
    async with engine.begin() as connection:
        # CURRENT_TIMESTAMP is one value throughout a statement on every backend.
        await connection.execute(
            text(
                "UPDATE agent_messages SET created_at = CURRENT_TIMESTAMP WHERE session_id = :sid"
            ),
            {"sid": "ties"},
        )
        distinct = await connection.execute(
            text("SELECT COUNT(DISTINCT created_at) FROM agent_messages WHERE session_id = :sid"),
            {"sid": "ties"},
        )
        assert distinct.scalar_one() == 1

    assert contents(await session.get_items()) == ["first", "second", "third", "fourth"]
    assert contents(await session.get_items(limit=2)) == ["third", "fourth"]
    assert contents([await session.pop_item()]) == ["fourth"]
    assert contents([await session.pop_item()]) == ["third"]
    assert contents(await session.get_items()) == ["first", "second"]


# --- Unreadable rows -----------------------------------------------------------------------------


async def test_pop_item_skips_a_corrupt_newest_row(engine: AsyncEngine) -> None:
    session = drop_in(engine, "corrupt-pop")
    await session.add_items([user("valid")])
    await insert_corrupt_row(engine, "corrupt-pop")

    assert await session.pop_item() == user("valid")
    assert await session.get_items() == []
    assert await count_rows(engine, "agent_messages", "corrupt-pop") == 0


async def test_get_items_limit_counts_readable_items_past_corrupt_rows(engine: AsyncEngine) -> None:
    session = drop_in(engine, "corrupt-limit")
    await session.add_items([user("valid 0"), user("valid 1"), user("valid 2")])
    await insert_corrupt_row(engine, "corrupt-limit")
    await insert_corrupt_row(engine, "corrupt-limit")

    assert contents(await session.get_items(limit=2)) == ["valid 1", "valid 2"]
    assert contents(await session.get_items(limit=5)) == ["valid 0", "valid 1", "valid 2"]
    assert contents(await session.get_items()) == ["valid 0", "valid 1", "valid 2"]


async def test_pop_item_with_only_corrupt_rows_returns_none(engine: AsyncEngine) -> None:
    session = drop_in(engine, "corrupt-only")
    await session.set_metadata({"title": "has a session row, and only a corrupt message"})
    await insert_corrupt_row(engine, "corrupt-only")

    assert await session.pop_item() is None
    assert await session.get_items() == []
    assert await count_rows(engine, "agent_messages", "corrupt-only") == 0
    assert (await session.get_metadata()).title is not None


# --- Concurrent first access ---------------------------------------------------------------------


async def test_concurrent_first_writes_on_one_session(db_url: str, tmp_path: Path) -> None:
    for round_ in range(3):
        url = await fresh_database(db_url, tmp_path, f"one-session-{round_}")
        engine = create_async_engine(url)
        try:
            session = drop_in(engine, "shared")
            submitted = [f"msg-{index}" for index in range(20)]
            results = await asyncio.gather(
                *(session.add_items([user(content)]) for content in submitted),
                return_exceptions=True,
            )
            assert failures(results) == [], round_
            assert sorted(contents(await session.get_items())) == sorted(submitted), round_
            assert await table_names(engine) == ALL_TABLES
        finally:
            await engine.dispose()


async def test_concurrent_first_calls_across_sessions_on_one_engine(
    db_url: str, tmp_path: Path
) -> None:
    kinds = ("add", "get", "pop", "clear", "set_metadata", "get_metadata")
    for round_ in range(4):
        url = await fresh_database(db_url, tmp_path, f"one-engine-{round_}")
        engine = create_async_engine(url)
        try:
            sessions = [drop_in(engine, f"s{index}") for index in range(12)]

            async def first_call(index: int, session: Drop) -> object:
                kind = kinds[index % len(kinds)]
                if kind == "add":
                    await session.add_items([user(session.session_id)])
                elif kind == "get":
                    return await session.get_items()
                elif kind == "pop":
                    return await session.pop_item()
                elif kind == "clear":
                    await session.clear_session()
                elif kind == "set_metadata":
                    await session.set_metadata({"title": session.session_id})
                else:
                    return await session.get_metadata()
                return None

            results = await asyncio.gather(
                *(first_call(index, session) for index, session in enumerate(sessions)),
                return_exceptions=True,
            )
            assert failures(results) == [], round_
            assert await table_names(engine) == ALL_TABLES
            for index, session in enumerate(sessions):
                kind = kinds[index % len(kinds)]
                expected = [session.session_id] if kind == "add" else []
                assert contents(await session.get_items()) == expected, (round_, kind)
                title = session.session_id if kind == "set_metadata" else None
                assert (await session.get_metadata()).title == title, (round_, kind)
            assert results[kinds.index("get")] == []
            assert results[kinds.index("pop")] is None
            assert results[kinds.index("get_metadata")] == ChatMeta()
        finally:
            await engine.dispose()


async def test_concurrent_first_writes_across_engines(db_url: str, tmp_path: Path) -> None:
    # As separate processes would: each session has its own engine on the same database.
    # (SQLite's rounds are cheap, and the race there is narrow: it gets more of them.)
    for round_ in range(12 if make_url(db_url).get_backend_name() == "sqlite" else 3):
        url = await fresh_database(db_url, tmp_path, f"engines-{round_}")
        sessions = [
            MetadataSQLAlchemySession.from_url(
                f"engine{index}", url=url, metadata_model=ChatMeta, create_tables=True
            )
            for index in range(5)
        ]
        try:
            results = await asyncio.gather(
                *(session.add_items([user(session.session_id)]) for session in sessions),
                return_exceptions=True,
            )
            assert failures(results) == [], round_
            for session in sessions:
                assert contents(await session.get_items()) == [session.session_id], round_
            assert await table_names(sessions[0].engine) == ALL_TABLES
        finally:
            for session in sessions:
                await session.engine.dispose()


async def test_tables_created_by_another_process_meanwhile(engine: AsyncEngine) -> None:
    # Another process's CREATE of the sessions table is under way when ours starts, and
    # commits while ours waits for it: ours then finds the table and creates the rest.
    if is_mysql(engine):
        pytest.skip("DDL commits at once on MySQL/MariaDB: no CREATE can be held open")
    session = drop_in(engine, "late")
    async with engine.connect() as other_process:
        if is_sqlite(engine):
            await other_process.execute(text("BEGIN IMMEDIATE"))
        await other_process.run_sync(session.sql_metadata.tables["agent_sessions"].create)
        creating = asyncio.create_task(session.add_items([user("created meanwhile")]))
        await asyncio.sleep(0.2)
        assert not creating.done()
        await other_process.commit()

    await asyncio.wait_for(creating, PROMPT)
    assert contents(await session.get_items()) == ["created meanwhile"]
    assert await table_names(engine) == ALL_TABLES


def run_in_threads(work: Sequence[tuple[str, Any]]) -> list[tuple[str, str]]:
    """Run each ``(name, coroutine function)`` on its own thread and event loop, all at once."""
    barrier = threading.Barrier(len(work))
    outcomes: list[tuple[str, str]] = []
    guard = threading.Lock()

    def worker(name: str, function: Any) -> None:
        async def run() -> None:
            barrier.wait()
            await asyncio.wait_for(function(), PROMPT)

        try:
            asyncio.run(run())
            status = "ok"
        except BaseException as exc:
            status = f"{type(exc).__name__}: {exc}"
        with guard:
            outcomes.append((name, status))

    threads = [threading.Thread(target=worker, args=item) for item in work]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(outcomes)


async def test_first_writes_from_separate_event_loops(db_url: str, tmp_path: Path) -> None:
    for round_ in range(3):
        url = await fresh_database(db_url, tmp_path, f"loops-{round_}")
        read_back: dict[str, list[Any]] = {}

        def write(name: str, url: str, read_back: dict[str, list[Any]]) -> Any:
            async def run() -> None:
                session = MetadataSQLAlchemySession.from_url(
                    name, url=url, metadata_model=ChatMeta, create_tables=True
                )
                try:
                    await session.add_items([user(name)])
                    read_back[name] = contents(await session.get_items())
                finally:
                    await session.engine.dispose()

            return run

        names = ["a", "b", "c"]
        outcomes = await asyncio.to_thread(
            run_in_threads, [(name, write(name, url, read_back)) for name in names]
        )
        assert outcomes == [(name, "ok") for name in names], round_
        assert read_back == {name: [name] for name in names}, round_


async def test_one_session_shared_by_separate_event_loops(engine: AsyncEngine, db_url: str) -> None:
    # A pooled server connection belongs to the loop that opened it, so on the servers
    # the application gives such an engine no pool; SQLite's pool is usable as it is.
    shared_engine = engine if is_sqlite(engine) else create_async_engine(db_url, poolclass=NullPool)
    try:
        session = drop_in(shared_engine, "shared")

        def write(content: str) -> Any:
            async def run() -> None:
                await session.add_items([user(content)])

            return run

        names = ["one", "two", "three"]
        outcomes = await asyncio.to_thread(run_in_threads, [(name, write(name)) for name in names])
        assert outcomes == [(name, "ok") for name in sorted(names)]
        assert sorted(contents(await session.get_items())) == sorted(names)
        assert await table_names(shared_engine) == ALL_TABLES
    finally:
        if shared_engine is not engine:
            await shared_engine.dispose()


# --- Cancellation --------------------------------------------------------------------------------


@pytest.mark.parametrize("cancel_creator", [False, True], ids=["waiters", "waiters-and-creator"])
async def test_cancelled_table_creation_waiters_do_not_strand_the_lock(
    engine: AsyncEngine, db_url: str, cancel_creator: bool
) -> None:
    # An engine of one connection, taken below: the first caller holds the table creation
    # while it waits for that connection, and every other caller waits for the creation.
    narrow = create_async_engine(db_url, pool_size=1, max_overflow=0, pool_timeout=PROMPT)
    try:
        creator = drop_in(narrow, "creator")
        waiters = [drop_in(narrow, f"waiter{index}") for index in range(3)]
        async with narrow.connect():
            creating = asyncio.create_task(creator.add_items([user("creator")]))
            await asyncio.sleep(0.05)
            waiting = [
                *(asyncio.create_task(waiter.add_items([user("lost")])) for waiter in waiters),
                asyncio.create_task(waiters[0].get_items()),
                asyncio.create_task(waiters[1].set_metadata({"title": "lost"})),
                asyncio.create_task(creator.pop_item()),
            ]
            await asyncio.sleep(0.2)
            assert not creating.done()
            assert not any(task.done() for task in waiting)

            for task in waiting:
                task.cancel()
            # A waiter answers its cancellation at once, while the creator still waits.
            _, pending = await asyncio.wait(waiting, timeout=2)
            assert not pending
            assert all(task.cancelled() for task in waiting)
            assert not creating.done()
            if cancel_creator:
                creating.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await asyncio.wait_for(creating, PROMPT)

        if not cancel_creator:
            await asyncio.wait_for(creating, PROMPT)
        follower = drop_in(narrow, "follower")
        await asyncio.wait_for(follower.add_items([user("after")]), PROMPT)
        assert contents(await follower.get_items()) == ["after"]
        assert await table_names(narrow) == ALL_TABLES
        assert contents(await creator.get_items()) == ([] if cancel_creator else ["creator"])
        for waiter in waiters:
            assert await asyncio.wait_for(waiter.get_items(), PROMPT) == []
            assert (await waiter.get_metadata()).title is None
            await asyncio.wait_for(waiter.add_items([user("later")]), PROMPT)
            assert contents(await waiter.get_items()) == ["later"]
    finally:
        await narrow.dispose()


@pytest.mark.parametrize("operation", ["add_items", "pop_item", "clear_session"])
async def test_cancelled_write_settles_and_frees_the_session(
    engine: AsyncEngine, operation: str
) -> None:
    session = drop_in(engine, "busy")
    await session.add_items([user("one"), user("two")])
    other = drop_in(engine, "busy")
    expected = {
        "add_items": ["one", "two", "three", "four", "five"],
        "pop_item": ["one"],
        "clear_session": [],
    }[operation]

    async with session_row_locked(engine, "busy"):
        task: asyncio.Task[object]
        if operation == "add_items":
            task = asyncio.create_task(other.add_items([user("three"), user("four"), user("five")]))
        elif operation == "pop_item":
            task = asyncio.create_task(other.pop_item())
        else:
            task = asyncio.create_task(other.clear_session())
        await asyncio.sleep(0.2)
        assert not task.done()  # waiting for the lock held above
        task.cancel()
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.sleep(0.05)
        # The write is under way: cancellation is raised only once its transaction has
        # settled, so the caller never returns while it may still be half applied.
        assert not task.done()

    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, PROMPT)
    assert contents(await asyncio.wait_for(session.get_items(), PROMPT)) == expected
    await asyncio.wait_for(other.add_items([user("later")]), PROMPT)
    assert contents(await session.get_items()) == [*expected, "later"]
    assert await asyncio.wait_for(other.pop_item(), PROMPT) == user("later")


async def test_writes_cancelled_at_random_moments_leave_whole_writes(engine: AsyncEngine) -> None:
    rng = random.Random(7)
    await drop_in(engine, "warm").get_items()
    for round_ in range(10):
        session_id = f"r{round_}"
        sessions = [drop_in(engine, session_id) for _ in range(6)]
        batches = [[f"{session_id}-b{index}-{part}" for part in range(3)] for index in range(6)]
        adding = [
            asyncio.create_task(session.add_items([user(content) for content in batch]))
            for session, batch in zip(sessions, batches, strict=True)
        ]
        await asyncio.sleep(rng.uniform(0, 0.02))
        cancelled = set(rng.sample(range(6), 3))
        for index in cancelled:
            adding[index].cancel()
        results = await asyncio.wait_for(asyncio.gather(*adding, return_exceptions=True), PROMPT)
        assert [results[index] for index in range(6) if index not in cancelled] == [None] * 3

        stored = contents(await sessions[0].get_items())
        # Each write is all there, in one piece, or not there at all.
        chunks = [stored[start : start + 3] for start in range(0, len(stored), 3)]
        assert sorted(map(tuple, chunks)) == sorted(
            tuple(batch) for batch in batches if batch in chunks
        ), round_
        for index, batch in enumerate(batches):
            if index not in cancelled:
                assert batch in chunks, (round_, index)

        popping = [asyncio.create_task(session.pop_item()) for session in sessions]
        await asyncio.sleep(rng.uniform(0, 0.02))
        cancelled = set(rng.sample(range(6), 3))
        for index in cancelled:
            popping[index].cancel()
        popped = await asyncio.wait_for(asyncio.gather(*popping, return_exceptions=True), PROMPT)
        returned = [item.get("content") for item in popped if isinstance(item, dict)]
        remaining = contents(await asyncio.wait_for(sessions[0].get_items(), PROMPT))
        removed = stored[len(remaining) :]
        # Only the newest items went, each to at most one caller.
        assert remaining == stored[: len(remaining)], round_
        assert len(returned) == len(set(returned)), round_
        assert set(returned) <= set(removed), round_
        assert 6 - len(cancelled) <= len(removed) <= 6, round_
        await asyncio.wait_for(sessions[1].add_items([user("after")]), PROMPT)
        assert contents(await sessions[0].get_items(limit=1)) == ["after"]


async def test_first_calls_cancelled_at_random_moments(db_url: str, tmp_path: Path) -> None:
    rng = random.Random(11)
    for round_ in range(6):
        url = await fresh_database(db_url, tmp_path, f"cancel-first-{round_}")
        engine = create_async_engine(url)
        try:
            sessions = [drop_in(engine, f"s{index}") for index in range(8)]
            tasks = [
                asyncio.create_task(session.add_items([user("a"), user("b")]))
                for session in sessions
            ]
            await asyncio.sleep(rng.uniform(0, 0.03))
            cancelled = set(rng.sample(range(8), 4))
            for index in cancelled:
                tasks[index].cancel()
            results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), PROMPT)
            assert [results[index] for index in range(8) if index not in cancelled] == [None] * 4

            follower = drop_in(engine, "follower")
            await asyncio.wait_for(follower.add_items([user("after")]), PROMPT)
            assert await table_names(engine) == ALL_TABLES, round_
            for index, session in enumerate(sessions):
                stored = contents(await asyncio.wait_for(session.get_items(), PROMPT))
                if index in cancelled:
                    assert stored in ([], ["a", "b"]), (round_, index)
                else:
                    assert stored == ["a", "b"], (round_, index)
        finally:
            await engine.dispose()


# --- pop_item races ------------------------------------------------------------------------------


async def test_concurrent_pops_never_return_an_item_twice(engine: AsyncEngine) -> None:
    await drop_in(engine, "warm").get_items()
    for round_ in range(12):
        session_id = f"pop{round_}"
        added = [f"{session_id}-{index}" for index in range(10)]
        await drop_in(engine, session_id).add_items([user(content) for content in added])
        poppers = [drop_in(engine, session_id) for _ in range(4)]
        pops = 6 if round_ % 2 == 0 else 14
        results = await asyncio.wait_for(
            asyncio.gather(*(poppers[index % 4].pop_item() for index in range(pops))), PROMPT
        )
        popped = contents(results)
        remaining = contents(await poppers[0].get_items())

        assert len(popped) == len(set(popped)), round_
        assert sorted(popped + remaining) == sorted(added), round_
        assert len(popped) == min(pops, len(added)), round_
        assert results.count(None) == pops - len(popped), round_
        # Pops take the newest items: what is left is the oldest, in order.
        assert remaining == added[: len(remaining)], round_


async def test_concurrent_pops_and_adds_lose_and_repeat_nothing(engine: AsyncEngine) -> None:
    rng = random.Random(3)
    await drop_in(engine, "warm").get_items()
    for round_ in range(10):
        session_id = f"mix{round_}"
        base = [f"{session_id}-old{index}" for index in range(5)]
        await drop_in(engine, session_id).add_items([user(content) for content in base])
        new = [f"{session_id}-new{index}" for index in range(6)]
        sessions = [drop_in(engine, session_id) for _ in range(3)]
        calls: list[Any] = [
            *(sessions[index % 3].add_items([user(content)]) for index, content in enumerate(new)),
            *(sessions[index % 3].pop_item() for index in range(6)),
        ]
        rng.shuffle(calls)
        results = await asyncio.wait_for(asyncio.gather(*calls), PROMPT)
        popped = [str(result.get("content")) for result in results if isinstance(result, dict)]
        remaining = contents(await sessions[0].get_items())

        assert len(popped) == len(set(popped)), round_
        assert sorted(popped + remaining) == sorted(base + new), round_
        # Older items never jump the queue: the surviving ones keep their order, first.
        survivors = [content for content in remaining if content in base]
        assert survivors == base[: len(survivors)], round_
        assert remaining[: len(survivors)] == survivors, round_


# --- Engine disposal -----------------------------------------------------------------------------


async def test_session_keeps_working_after_engine_dispose(engine: AsyncEngine) -> None:
    session = drop_in(engine, "disposed")
    await session.add_items([user("before")])
    await session.set_metadata({"title": "before"})
    await engine.dispose()

    await session.add_items([user("after")])
    assert contents(await session.get_items()) == ["before", "after"]
    assert (await session.get_metadata()).title == "before"
    await engine.dispose()
    await engine.dispose()
    assert await session.pop_item() == user("after")
    await session.set_metadata({"title": "after"})

    # A session made on the disposed-then-reused engine sees the same data.
    again = drop_in(engine, "disposed")
    assert contents(await again.get_items()) == ["before"]
    assert (await again.get_metadata()).title == "after"
    await again.clear_session()
    assert await session.get_items() == []
    assert await count_rows(engine, "agent_sessions_metadata", "disposed") == 0


async def test_engine_disposed_before_the_first_call(engine: AsyncEngine) -> None:
    session = drop_in(engine, "early")
    await engine.dispose()
    await session.add_items([user("first")])
    assert contents(await session.get_items()) == ["first"]
    assert await table_names(engine) == ALL_TABLES


async def test_engine_property(engine: AsyncEngine, db_url: str) -> None:
    session = drop_in(engine, "s")
    assert session.engine is engine
    with pytest.raises(AttributeError):
        session.engine = create_async_engine(db_url)  # type: ignore[misc]
    assert session.engine is engine

    from_url = MetadataSQLAlchemySession.from_url(
        "s", url=db_url, metadata_model=ChatMeta, create_tables=True
    )
    try:
        assert isinstance(from_url.engine, AsyncEngine)
        assert from_url.engine is not engine
        assert from_url.engine.url == make_url(db_url)
        await from_url.add_items([user("through from_url")])
        assert contents(await session.get_items()) == ["through from_url"]
    finally:
        await from_url.engine.dispose()


# --- SQLite specifics ----------------------------------------------------------------------------


@pytest.mark.sqlite
async def test_sqlite_writes_wait_for_a_transient_lock(tmp_path: Path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'locked.sqlite3'}")
    try:
        session = drop_in(engine, "locked")
        await session.get_items()
        for operation in ("add", "pop"):
            async with engine.connect() as connection:
                await connection.execute(text("BEGIN IMMEDIATE"))
                task: asyncio.Task[object] = asyncio.create_task(
                    session.add_items([user("after the lock")])
                    if operation == "add"
                    else session.pop_item()
                )
                await asyncio.sleep(0.1)
                assert not task.done()
                await connection.rollback()
            result = await asyncio.wait_for(task, PROMPT)
            if operation == "pop":
                assert result == user("after the lock")
            else:
                assert contents(await session.get_items()) == ["after the lock"]
        assert await session.get_items() == []
    finally:
        await engine.dispose()


IN_MEMORY = "sqlite+aiosqlite:///:memory:"


@pytest.mark.sqlite
async def test_sqlite_in_memory_database() -> None:
    # The SDK's own tests all run on ":memory:", where SQLAlchemy shares one connection.
    session = MetadataSQLAlchemySession.from_url(
        "memory", url=IN_MEMORY, metadata_model=ChatMeta, create_tables=True
    )
    try:
        await session.add_items([user("Hello"), user("Hi there!")])
        await session.set_metadata({"title": "in memory"})
        assert contents(await session.get_items()) == ["Hello", "Hi there!"]
        assert await session.pop_item() == user("Hi there!")
        assert contents(await session.get_items()) == ["Hello"]
        assert (await session.get_metadata()).title == "in memory"
        await session.clear_session()
        assert await session.get_items() == []
        assert (await session.get_metadata()).title is None
    finally:
        await session.engine.dispose()


@pytest.mark.sqlite
async def test_sqlite_in_memory_database_concurrent_calls() -> None:
    # The SDK serializes its own use of that one shared connection; metadata calls
    # running beside the SDK's, and beside each other, must not break into them.
    session = MetadataSQLAlchemySession.from_url(
        "memory", url=IN_MEMORY, metadata_model=ChatMeta, create_tables=True
    )
    try:
        await session.get_items()
        others = [drop_in(session.engine, f"other{index}") for index in range(6)]
        results = await asyncio.wait_for(
            asyncio.gather(
                *(other.add_items([user(other.session_id)]) for other in others),
                *(other.set_metadata({"title": other.session_id}) for other in others),
                *(other.get_metadata() for other in others),
                session.get_items(),
                return_exceptions=True,
            ),
            PROMPT,
        )
        # Every call that reported success really wrote, and every call succeeded.
        for index, other in enumerate(others):
            if results[index] is None:
                assert contents(await other.get_items()) == [other.session_id]
            if results[len(others) + index] is None:
                assert (await other.get_metadata()).title == other.session_id
        assert failures(results) == []
    finally:
        await session.engine.dispose()


@pytest.mark.sqlite
async def test_short_lived_sqlite_engines_are_each_configured(tmp_path: Path) -> None:
    # The SDK remembers which engines it configured; an engine made after another was
    # collected (possibly at the same address) must be configured all the same.
    for index in range(6):
        engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / f'short{index}.sqlite3'}")
        session = drop_in(engine, f"short{index}")
        await session.add_items([user(f"turn {index}")])
        await session.set_metadata({"title": "goes with the history"})
        async with engine.connect() as connection:
            mode = (await connection.execute(text("PRAGMA journal_mode"))).scalar_one()
            assert str(mode).lower() == "wal", index
        await session.clear_session()
        # Removing the metadata with the history needs SQLite's foreign keys on.
        assert await count_rows(engine, "agent_sessions_metadata", f"short{index}") == 0, index
        await engine.dispose()
        del session, engine
        gc.collect()
