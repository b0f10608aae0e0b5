"""The drop-in opens the SDK session holding a unique value: get_or_create_by."""

from __future__ import annotations

import asyncio
from typing import Annotated

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from sessionmeta import InvalidArgumentError, SessionMeta, Unique, UniqueValueError


class ThreadMeta(SessionMeta):
    title: str | None = None
    slack_thread: Annotated[str | None, Unique()] = None


async def test_get_or_create_by_opens_one_session_per_thread(engine: AsyncEngine) -> None:
    from sessionmeta.agents import MetadataSQLAlchemySession

    async def open_thread() -> tuple[MetadataSQLAlchemySession[ThreadMeta], bool]:
        return await MetadataSQLAlchemySession.get_or_create_by(
            "slack_thread",
            "C1/1700000000.1",
            engine=engine,
            metadata_model=ThreadMeta,
            defaults={"title": "Refund?"},
            create_tables=True,
        )

    opened = await asyncio.gather(*(open_thread() for _ in range(20)))
    assert len({session.session_id for session, _ in opened}) == 1
    assert sum(created for _, created in opened) == 1
    session = opened[0][0]
    await session.add_items([{"role": "user", "content": "hello"}])
    again, created = await open_thread()
    assert (again.session_id, created) == (session.session_id, False)
    assert len(await again.get_items()) == 1
    assert (await again.get_metadata()).title == "Refund?"
    # The drop-in's own writes are held too.
    other = MetadataSQLAlchemySession("other", engine=engine, metadata_model=ThreadMeta)
    with pytest.raises(UniqueValueError):
        await other.set_metadata({"slack_thread": "C1/1700000000.1"})
    # Clearing the session frees the thread.
    await session.clear_session()
    fresh, created = await open_thread()
    assert created and fresh.session_id != session.session_id


async def test_get_or_create_by_checks_before_any_io(engine: AsyncEngine) -> None:
    from sessionmeta.agents import MetadataSQLAlchemySession

    with pytest.raises(InvalidArgumentError, match="not declared Unique"):
        await MetadataSQLAlchemySession.get_or_create_by(
            "title", "x", engine=engine, metadata_model=ThreadMeta, create_tables=True
        )
    from sqlalchemy import inspect

    async with engine.connect() as connection:
        names = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
    assert "agent_sessions_metadata" not in names
