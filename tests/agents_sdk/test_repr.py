"""The drop-in's repr: its class, session, model and database, never a password."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import create_async_engine

from sessionmeta.agents import MetadataSQLAlchemySession
from tests.models import ChatMeta

SECRET_URL = "postgresql+asyncpg://bob:s3cret@db.example:5432/app"
SHOWN_URL = "postgresql+asyncpg://bob:***@db.example:5432/app"


class ChatSession(MetadataSQLAlchemySession[ChatMeta]):
    """An application's own subclass."""


def test_the_drop_in_says_what_it_is() -> None:
    typed = MetadataSQLAlchemySession.from_url("chat-1", url=SECRET_URL, metadata_model=ChatMeta)
    assert repr(typed) == (
        f"MetadataSQLAlchemySession('chat-1', metadata_model=ChatMeta, url={SHOWN_URL!r})"
    )
    engine = create_async_engine(SECRET_URL)
    untyped = MetadataSQLAlchemySession("chat-2", engine=engine)
    assert repr(untyped) == (
        f"MetadataSQLAlchemySession('chat-2', metadata_model=None, url={SHOWN_URL!r})"
    )
    mine = ChatSession("chat-3", engine=engine, metadata_model=ChatMeta)
    assert repr(mine).startswith("ChatSession('chat-3', metadata_model=ChatMeta, ")
    assert all("s3cret" not in repr(session) for session in (typed, untyped, mine))
