"""The drop-in follows the SDK session's life cycle: tables on first use, however many
creators race, and metadata on any subclass of the SDK's session."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from agents.extensions.memory import SQLAlchemySession
from agents.items import TResponseInputItem
from sqlalchemy import Column, Integer, MetaData, String, Table, select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from sessionmeta.agents import MetadataSQLAlchemySession
from tests.agents_sdk.test_session import count_rows, table_names, texts, user
from tests.conftest import reset_database
from tests.models import ChatMeta

ROOT = Path(__file__).resolve().parents[2]
ENGINE_ROUNDS = 6
ENGINES_PER_ROUND = 4
PROCESS_ROUNDS = 3


def round_url(db_url: str, number: int) -> str:
    """A fresh database for each round: another file on SQLite, the same emptied server DB."""
    if db_url.startswith("sqlite"):
        return db_url.replace("sessionmeta.sqlite3", f"round-{number}.sqlite3")
    return db_url


async def empty(db_url: str) -> None:
    if db_url.startswith("sqlite"):
        return
    engine = create_async_engine(db_url)
    try:
        await reset_database(engine)
    finally:
        await engine.dispose()


async def test_sdk_hooks_the_drop_in_relies_on_are_there(engine: AsyncEngine) -> None:
    # The SDK calls _ensure_tables() before each operation and keeps its flag and its
    # tables in _create_tables and _metadata: the drop-in creates its tables there.
    assert callable(SQLAlchemySession._ensure_tables)
    plain = SQLAlchemySession("p", engine=engine, create_tables=True)
    assert plain._create_tables is True
    assert isinstance(plain._metadata, MetaData)
    assert set(plain._metadata.tables) == {"agent_sessions", "agent_messages"}


async def test_the_sdk_hook_creates_the_tables(engine: AsyncEngine) -> None:
    session = MetadataSQLAlchemySession(
        "s", engine=engine, metadata_model=ChatMeta, create_tables=True
    )
    # The SDK's own hook, as its code paths (compaction, future ones) call it.
    await session._ensure_tables()
    assert {"agent_sessions", "agent_messages", "agent_sessions_metadata"} <= await table_names(
        engine
    )
    assert session._create_tables is False
    without = MetadataSQLAlchemySession("t", engine=engine, metadata_model=ChatMeta)
    await without._ensure_tables()  # asked for nothing: does nothing
    await without.add_items([user("works: the tables exist")])


async def test_first_writes_on_separate_engines_race_to_create_the_tables(db_url: str) -> None:
    for number in range(ENGINE_ROUNDS):
        url = round_url(db_url, number)
        await empty(url)
        sessions = [
            MetadataSQLAlchemySession.from_url(
                f"s{index}", url=url, metadata_model=ChatMeta, create_tables=True
            )
            for index in range(ENGINES_PER_ROUND)
        ]
        try:
            await asyncio.gather(
                *(
                    session.add_items([user(f"hi {index}")])
                    if index % 2
                    else session.set_metadata({"title": f"t{index}"})
                    for index, session in enumerate(sessions)
                )
            )
            for index, session in enumerate(sessions):
                if index % 2:
                    assert texts(await session.get_items()) == [f"hi {index}"]
                else:
                    assert (await session.get_metadata()).title == f"t{index}"
        finally:
            for session in sessions:
                await session.engine.dispose()


PROCESS_SCRIPT = """
import asyncio, sys, time
from sessionmeta.agents import MetadataSQLAlchemySession
from tests.models import ChatMeta

async def main(url, session_id, start):
    session = MetadataSQLAlchemySession.from_url(
        session_id, url=url, metadata_model=ChatMeta, create_tables=True
    )
    time.sleep(max(0.0, start - time.time()))
    await session.add_items([{"role": "user", "content": session_id}])
    await session.set_metadata({"title": session_id})
    await session.engine.dispose()

asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
"""


@pytest.mark.slow
async def test_first_writes_in_separate_processes_race_to_create_the_tables(
    db_url: str,
) -> None:
    for number in range(PROCESS_ROUNDS):
        url = round_url(db_url, 100 + number)
        await empty(url)
        # Both processes import first, then write at the same instant.
        start = time.time() + 4
        processes = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                PROCESS_SCRIPT,
                url,
                f"p{index}",
                str(start),
                cwd=ROOT,
                stderr=asyncio.subprocess.PIPE,
            )
            for index in range(2)
        ]
        for process in processes:
            _, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
            assert process.returncode == 0, stderr.decode()
        engine = create_async_engine(url)
        try:
            for index in range(2):
                assert await count_rows(engine, "agent_messages", f"p{index}") == 1
                assert await count_rows(engine, "agent_sessions_metadata", f"p{index}") == 1
        finally:
            await engine.dispose()


class AuditedSession(SQLAlchemySession):
    """A subclass of the SDK's session with a table and an add_items of its own."""

    def __init__(self, session_id: str, *, engine: AsyncEngine, **kwargs: Any) -> None:
        super().__init__(session_id, engine=engine, **kwargs)
        self.audit = Table(
            "audit_log",
            self._metadata,
            Column("id", Integer, primary_key=True, autoincrement=True),
            Column("session_id", String(255), nullable=False),
            Column("count", Integer, nullable=False),
        )

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        await super().add_items(items)
        async with self.engine.begin() as connection:
            await connection.execute(
                self.audit.insert().values(session_id=self.session_id, count=len(items))
            )


class AuditedChat(MetadataSQLAlchemySession[ChatMeta], AuditedSession):
    """Metadata attached to another SDK session class: listed first among the bases."""


async def test_metadata_attaches_to_any_sdk_session_subclass(engine: AsyncEngine) -> None:
    session = AuditedChat("s1", engine=engine, metadata_model=ChatMeta, create_tables=True)
    await session.set_metadata({"owner_id": "u1", "title": "audited"})
    await session.add_items([user("one"), user("two")])
    # The subclass's add_items ran, and its own table was created through the SDK's hook.
    async with engine.connect() as connection:
        counts = (await connection.execute(select(session.audit.c.count))).scalars().all()
    assert counts == [2]
    assert texts(await session.get_items()) == ["one", "two"]
    assert (await session.get_metadata()).title == "audited"
    assert await session.find_sessions_by_metadata("owner_id", "u1") == ["s1"]
    await session.clear_session()
    assert await count_rows(engine, "agent_sessions_metadata", "s1") == 0
    assert isinstance(session, AuditedSession) and isinstance(session, SQLAlchemySession)
