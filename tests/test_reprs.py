"""What a store, its handles and views show in a log or a debugger: what they are and
which database they use, never a password (the URL's own, or one in its query)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from sessionmeta import DatabaseError, MetadataStore, Page

from .models import ChatMeta

SECRET_URL = "postgresql+asyncpg://bob:s3cret@db.example:5432/app?sslpassword=hush&ssl=require"
SHOWN_URL = "postgresql+asyncpg://bob:***@db.example:5432/app?ssl=require&sslpassword=***"


def test_the_store_handles_and_views_say_what_they_are() -> None:
    store = MetadataStore.from_url(ChatMeta, SECRET_URL)
    assert repr(store) == (
        f"MetadataStore(ChatMeta, {SHOWN_URL!r}, table='agent_sessions_metadata')"
    )
    assert repr(store.bind("s1")) == "BoundMetadata(ChatMeta, session_id='s1')"
    view = store.scoped(owner_id="u1")
    assert repr(view) == "ScopedStore(ChatMeta, {'owner_id': 'u1'})"
    assert repr(view.bind("s1")) == (
        "ScopedBoundMetadata(ScopedStore(ChatMeta, {'owner_id': 'u1'}), session_id='s1')"
    )
    for shown in (store, store.db):
        assert "s3cret" not in repr(shown) and "hush" not in repr(shown)


def test_a_url_the_store_cannot_use_is_shown_without_its_password() -> None:
    with pytest.raises(DatabaseError, match=r"nosuchdb://bob:\*\*\*@host/app") as info:
        MetadataStore.from_url(ChatMeta, "nosuchdb://bob:s3cret@host/app")
    assert "s3cret" not in str(info.value)


async def test_a_store_in_the_callers_transaction_says_so(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'reprs.sqlite3'}"
    engine = create_async_engine(url)
    try:
        store = MetadataStore(ChatMeta, engine)
        async with engine.connect() as connection:
            joined = store.using(connection)
            assert repr(joined) == (
                f"MetadataStore(ChatMeta, {url!r}, table='agent_sessions_metadata', "
                "in the caller's transaction)"
            )
    finally:
        await engine.dispose()


def test_a_page_shows_its_cursor() -> None:
    assert repr(Page(["s1", "s2"], next_cursor="abc")) == "Page(['s1', 's2'], next_cursor='abc')"
