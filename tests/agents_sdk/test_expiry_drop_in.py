"""The drop-in's set_metadata takes a ttl: the keys expire on the database's clock."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from sessionmeta import InvalidArgumentError, MetadataStore
from sessionmeta.agents import MetadataSQLAlchemySession
from tests.models import ChatMeta


async def test_set_metadata_with_a_ttl(engine: AsyncEngine) -> None:
    session = MetadataSQLAlchemySession(
        "chat-1", engine=engine, metadata_model=ChatMeta, create_tables=True
    )
    await session.set_metadata(
        {"title": "Incognito", "incognito": True}, ttl=dt.timedelta(hours=24)
    )
    await session.set_metadata({"owner_id": "u1"})
    await session.add_items([{"role": "user", "content": "hello"}])
    assert (await session.get_metadata()).title == "Incognito"

    later = MetadataStore(ChatMeta, engine, clock_offset=dt.timedelta(hours=25))
    read = await later.bind("chat-1").get_metadata()
    assert read.model_fields_set == {"owner_id"}
    assert (await later.sweep()).rows == 2
    # The history is the SDK's: metadata expiry leaves it.
    assert len(await session.get_items()) == 1

    with pytest.raises(InvalidArgumentError, match="session 'chat-1': ttl must be"):
        await session.set_metadata({"title": "x"}, ttl=dt.timedelta(0))
    assert (await session.get_metadata()).title is None
