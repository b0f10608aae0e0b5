"""The drop-in keeps every SDK session behaviour and adds typed metadata, on every backend."""

from __future__ import annotations

import asyncio
import gc
import weakref
from pathlib import Path
from typing import Any

import pytest
from agents.extensions.memory import SQLAlchemySession
from agents.items import TResponseInputItem
from agents.memory import Session
from pydantic import ValidationError
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from typing_extensions import assert_type

from sessionmeta import (
    DatabaseError,
    InvalidSessionIdError,
    MetadataStore,
    SessionMeta,
    UnknownKeyError,
)
from sessionmeta.agents import MetadataSQLAlchemySession
from tests.models import ChatMeta


def user(text: str) -> TResponseInputItem:
    return {"role": "user", "content": text}


def texts(items: list[TResponseInputItem]) -> list[Any]:
    return [item.get("content") for item in items if isinstance(item, dict)]


async def table_names(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as connection:
        names = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
    return set(names)


async def count_rows(engine: AsyncEngine, table: str, session_id: str) -> int:
    async with engine.connect() as connection:
        result = await connection.execute(
            text(f"SELECT COUNT(*) FROM {table} WHERE session_id = :sid"), {"sid": session_id}
        )
        return int(result.scalar_one())


Drop = MetadataSQLAlchemySession[ChatMeta]


def drop_in(engine: AsyncEngine, session_id: str, **kwargs: Any) -> Drop:
    return MetadataSQLAlchemySession(
        session_id, engine=engine, metadata_model=ChatMeta, create_tables=True, **kwargs
    )


async def test_is_an_sdk_session(session: Drop, engine: AsyncEngine) -> None:
    assert isinstance(session, Session)
    assert isinstance(session, SQLAlchemySession)
    assert session.session_id == "chat-1"
    assert session.engine is engine
    assert isinstance(session.metadata_store, MetadataStore)
    assert session.metadata_store.engine is engine


async def test_history_order_and_limit(session: Drop) -> None:
    await session.add_items([user("one"), user("two")])
    await session.add_items([user("three")])
    await session.add_items([user("four"), user("five")])
    assert texts(await session.get_items()) == ["one", "two", "three", "four", "five"]
    assert texts(await session.get_items(limit=2)) == ["four", "five"]
    assert texts(await session.get_items(limit=10)) == ["one", "two", "three", "four", "five"]


async def test_session_settings_limit_applies(engine: AsyncEngine) -> None:
    session = drop_in(engine, "limited", session_settings={"limit": 2})
    await session.add_items([user("a"), user("b"), user("c")])
    assert texts(await session.get_items()) == ["b", "c"]


async def test_pop_item_removes_the_latest(session: Drop) -> None:
    await session.add_items([user("a"), user("b")])
    popped = await session.pop_item()
    assert isinstance(popped, dict)
    assert popped.get("content") == "b"
    assert texts(await session.get_items()) == ["a"]
    popped = await session.pop_item()
    assert isinstance(popped, dict)
    assert popped.get("content") == "a"
    assert await session.pop_item() is None


async def test_pop_item_keeps_metadata(session: Drop) -> None:
    await session.set_metadata({"title": "kept"})
    await session.add_items([user("a")])
    await session.pop_item()
    assert (await session.get_metadata()).title == "kept"


async def test_clear_session_removes_history_and_metadata(engine: AsyncEngine) -> None:
    first, other = drop_in(engine, "first"), drop_in(engine, "other")
    for session in (first, other):
        await session.set_metadata({"owner_id": "u1", "tags": ["a"]})
        await session.add_items([user("hello")])

    await first.clear_session()

    assert await first.get_items() == []
    cleared = await first.get_metadata()
    assert cleared == ChatMeta()
    assert cleared.model_fields_set == set()
    for table in ("agent_sessions", "agent_messages", "agent_sessions_metadata"):
        assert await count_rows(engine, table, "first") == 0, table
    assert await first.find_sessions_by_metadata("owner_id", "u1") == ["other"]
    assert texts(await other.get_items()) == ["hello"]
    assert (await other.get_metadata()).tags == ["a"]


async def test_clear_session_without_history_removes_metadata(
    session: Drop,
) -> None:
    await session.set_metadata({"title": "only metadata"})
    await session.clear_session()
    assert (await session.get_metadata()).title is None


async def test_cleared_session_can_be_used_again(session: Drop) -> None:
    await session.set_metadata({"title": "old"})
    await session.add_items([user("old")])
    await session.clear_session()
    await session.set_metadata({"title": "new"})
    await session.add_items([user("new")])
    assert texts(await session.get_items()) == ["new"]
    assert (await session.get_metadata()).title == "new"


@pytest.mark.sqlite
async def test_sqlite_connections_enforce_foreign_keys(tmp_path: Path) -> None:
    # A connection pooled before the session existed, which the core never touched:
    # the SDK may run clear_session on it, and only an enforced foreign key cascades.
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'fk.sqlite3'}")
    try:
        async with engine.connect() as connection:
            assert (await connection.execute(text("PRAGMA foreign_keys"))).scalar_one() == 0
        drop_in(engine, "s")
        drop_in(engine, "t")  # a second session adds no second listener
        async with engine.connect() as connection:
            assert (await connection.execute(text("PRAGMA foreign_keys"))).scalar_one() == 1
    finally:
        await engine.dispose()


async def test_metadata_before_first_message(session: Drop) -> None:
    await session.set_metadata(ChatMeta(owner_id="u1", title="Draft"))
    await session.add_items([user("first message")])
    await session.add_items([user("second message")])
    assert texts(await session.get_items()) == ["first message", "second message"]
    assert await session.get_metadata() == ChatMeta(owner_id="u1", title="Draft")


async def test_sessions_are_isolated(engine: AsyncEngine) -> None:
    a, b = drop_in(engine, "a"), drop_in(engine, "b")
    await a.add_items([user("for a")])
    await b.add_items([user("for b")])
    await a.set_metadata({"title": "A"})
    await b.set_metadata({"title": "B", "incognito": True})
    assert texts(await a.get_items()) == ["for a"]
    assert texts(await b.get_items()) == ["for b"]
    assert await a.get_metadata() == ChatMeta(title="A")
    assert await b.get_metadata() == ChatMeta(title="B", incognito=True)
    await a.pop_item()
    await a.delete_metadata()
    assert texts(await b.get_items()) == ["for b"]
    assert (await b.get_metadata()).title == "B"


async def test_concurrent_add_items_keep_every_item(engine: AsyncEngine) -> None:
    # Warm connections first, so the writers below really run at the same time.
    await asyncio.gather(*(drop_in(engine, f"warm{index}").get_items() for index in range(6)))
    for round_ in range(8):
        # Several instances, as several requests would have, racing to create a new
        # session's row, alongside a metadata write racing to create it too.
        session_id = f"busy{round_}"
        sessions = [drop_in(engine, session_id) for _ in range(6)]
        await asyncio.gather(
            *(session.add_items([user(f"m{index}")]) for index, session in enumerate(sessions)),
            sessions[0].set_metadata({"title": session_id}),
        )
        stored = texts(await sessions[0].get_items())
        assert sorted(stored) == [f"m{index}" for index in range(6)], session_id
        assert (await sessions[0].get_metadata()).title == session_id


async def test_metadata_calls_are_typed_and_validated(session: Drop, engine: AsyncEngine) -> None:
    with pytest.raises(ValidationError):
        await session.set_metadata({"priority": "not a number"})
    with pytest.raises(UnknownKeyError):
        await session.set_metadata({"colour": "red"})
    with pytest.raises(UnknownKeyError):
        await session.get_metadata(["colour"])
    # Refused before any I/O: not even the tables were created.
    assert await table_names(engine) == set()

    await session.set_metadata({"owner_id": "u1", "title": "T", "tags": ["x", "y"]})
    meta = await session.get_metadata()
    assert isinstance(meta, ChatMeta)
    assert (meta.owner_id, meta.title, meta.tags) == ("u1", "T", ["x", "y"])
    partial = await session.get_metadata(keys=["owner_id", "title"])
    assert partial.model_fields_set == {"owner_id", "title"}
    await session.delete_metadata(keys=["tags"])
    assert (await session.get_metadata()).tags is None
    await session.delete_metadata()
    assert (await session.get_metadata()).model_fields_set == set()


async def test_find_sessions_by_metadata(engine: AsyncEngine) -> None:
    for index in range(5):
        await drop_in(engine, f"s{index}").set_metadata({"owner_id": "u1" if index % 2 else "u2"})
    finder = drop_in(engine, "finder")
    assert await finder.find_sessions_by_metadata("owner_id", "u1") == ["s1", "s3"]
    assert await finder.find_sessions_by_metadata("owner_id", "u2", limit=2) == ["s0", "s2"]
    assert await finder.find_sessions_by_metadata("owner_id", "nobody") == []


async def test_invalid_session_id_is_refused_up_front(engine: AsyncEngine) -> None:
    with pytest.raises(InvalidSessionIdError):
        drop_in(engine, "x" * 256)
    with pytest.raises(InvalidSessionIdError):
        drop_in(engine, "")


async def test_create_tables_makes_all_tables(session: Drop, engine: AsyncEngine) -> None:
    await session.get_items()
    assert await table_names(engine) == {
        "agent_sessions",
        "agent_messages",
        "agent_sessions_metadata",
        "agent_sessions_metadata_items",
        "agent_sessions_metadata_unique",
    }


async def test_table_names_are_honoured(engine: AsyncEngine) -> None:
    session = drop_in(
        engine,
        "s",
        sessions_table="chat_sessions",
        messages_table="chat_messages",
        metadata_table="chat_meta",
    )
    await session.add_items([user("hi")])
    await session.set_metadata({"title": "named"})
    assert await table_names(engine) == {
        "chat_sessions",
        "chat_messages",
        "chat_meta",
        "chat_meta_items",
        "chat_meta_unique",
    }
    assert await count_rows(engine, "chat_messages", "s") == 1
    assert await count_rows(engine, "chat_meta", "s") == 1
    await session.clear_session()
    assert await count_rows(engine, "chat_meta", "s") == 0


async def test_without_create_tables_missing_tables_are_an_error(engine: AsyncEngine) -> None:
    session = MetadataSQLAlchemySession("s", engine=engine, metadata_model=ChatMeta)
    with pytest.raises(DatabaseError, match="'s'"):
        await session.set_metadata({"title": "t"})
    await session.create_tables()
    await session.set_metadata({"title": "t"})
    assert (await session.get_metadata()).title == "t"


async def test_from_url(db_url: str, engine: AsyncEngine) -> None:
    session = MetadataSQLAlchemySession.from_url(
        "from-url", url=db_url, metadata_model=ChatMeta, create_tables=True
    )
    try:
        await session.set_metadata({"title": "via url"})
        await session.add_items([user("hi")])
        assert texts(await session.get_items()) == ["hi"]
        assert (await session.get_metadata()).title == "via url"
    finally:
        await session.engine.dispose()


async def test_clear_from_a_process_that_never_wrote_metadata(
    engine: AsyncEngine, db_url: str
) -> None:
    # A cleanup job on its own engine: the SDK's clear_session runs on a connection
    # sessionmeta never used, and the metadata must still go with the history.
    await drop_in(engine, "old").set_metadata({"title": "stale"})
    await drop_in(engine, "old").add_items([user("stale")])
    cleanup_engine = create_async_engine(db_url)
    try:
        await drop_in(cleanup_engine, "old").clear_session()
    finally:
        await cleanup_engine.dispose()
    assert await count_rows(engine, "agent_sessions_metadata", "old") == 0
    assert await drop_in(engine, "old").get_items() == []


class OtherMeta(SessionMeta):
    colour: str | None = None


async def test_calls_are_typed_by_the_model(engine: AsyncEngine, db_url: str) -> None:
    session = drop_in(engine, "typed")
    assert_type(session, MetadataSQLAlchemySession[ChatMeta])
    assert_type(await session.get_metadata(), ChatMeta)
    assert_type(session.metadata_store, MetadataStore[ChatMeta])
    from_url = MetadataSQLAlchemySession.from_url("typed", url=db_url, metadata_model=ChatMeta)
    assert_type(from_url, MetadataSQLAlchemySession[ChatMeta])
    await from_url.engine.dispose()
    # mypy refuses another model (the ignore is checked as needed); so does the runtime.
    with pytest.raises(TypeError, match="ChatMeta"):
        await session.set_metadata(OtherMeta(colour="red"))  # type: ignore[arg-type]


@pytest.mark.sqlite
async def test_sessions_do_not_keep_their_engine_alive(tmp_path: Path) -> None:
    # Per-engine state (shared store, created tables) lives on the engine, so an
    # application that makes and drops engines does not accumulate them.
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'gc.sqlite3'}")
    session = drop_in(engine, "s")
    await session.set_metadata({"title": "t"})
    await session.add_items([user("hi")])
    await engine.dispose()
    collected = weakref.ref(engine.sync_engine)
    del engine, session
    gc.collect()
    assert collected() is None
