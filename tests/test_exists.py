"""``exists()`` and update-only writes (``create=False``), plain and through scoped views.

A session exists while its row is in the sessions table: a write of metadata or
the SDK's first message makes it, deleting the row (the SDK's ``clear_session()``)
removes it with its metadata. ``create=False`` refuses a missing session with
``SessionNotFoundError`` and creates nothing; through a scoped view it also
refuses a session that holds no metadata of the scope (it does not claim it),
and another tenant's session stays ``SessionNotInScopeError``.
"""

from __future__ import annotations

import pytest
from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from sessionmeta import (
    ConflictError,
    InvalidArgumentError,
    MetadataStore,
    SessionNotFoundError,
    SessionNotInScopeError,
)

from .models import ChatMeta

Store = MetadataStore[ChatMeta]


async def delete_session(store: Store, session_id: str) -> None:
    """Delete the session row, as the Agents SDK's ``clear_session()`` does."""
    sessions = store.tables.sessions
    async with store.engine.begin() as connection:
        await connection.execute(delete(sessions).where(sessions.c.session_id == session_id))


async def insert_session(store: Store, session_id: str) -> None:
    """A session row with no metadata, as the SDK's first message leaves it."""
    async with store.engine.begin() as connection:
        await connection.execute(insert(store.tables.sessions).values(session_id=session_id))


async def value_rows(store: Store, session_id: str) -> int:
    values = store.tables.values
    async with store.engine.connect() as connection:
        count = await connection.scalar(
            select(func.count()).select_from(values).where(values.c.session_id == session_id)
        )
    return int(count or 0)


async def test_exists_follows_the_session_row(store: Store) -> None:
    meta = store.bind("s1")
    assert not await store.exists("s1") and not await meta.exists()
    await meta.set_metadata({"title": "t"})
    assert await store.exists("s1") and await meta.exists()
    await meta.delete_metadata()  # the session row stays
    assert await meta.exists()
    await delete_session(store, "s1")
    assert not await meta.exists()
    await insert_session(store, "sdk-only")
    assert await store.exists("sdk-only")


async def test_create_false_refuses_a_missing_session_and_creates_nothing(store: Store) -> None:
    meta = store.bind("ghost")
    with pytest.raises(SessionNotFoundError, match="'ghost' does not exist") as info:
        await meta.set_metadata({"title": "Renamed"}, create=False)
    assert info.value.session_id == "ghost"
    assert isinstance(info.value, LookupError)
    with pytest.raises(SessionNotFoundError):
        await meta.set_metadata({}, create=False)
    with pytest.raises(SessionNotFoundError):
        await meta.add_to("tags", "x", create=False)
    with pytest.raises(SessionNotFoundError):
        await meta.set_metadata({"title": "v"}, create=False, expected_version="0" * 32)
    assert not await meta.exists()
    assert await value_rows(store, "ghost") == 0


async def test_create_false_writes_an_existing_session(store: Store) -> None:
    meta = store.bind("s1")
    await meta.set_metadata({"owner_id": "u1", "title": "Draft", "tags": ["a"]})
    await meta.set_metadata({"title": "Final"}, create=False)
    await meta.add_to("tags", "b", create=False)
    read = await meta.get_metadata_versioned()
    assert (read.metadata.owner_id, read.metadata.title, read.metadata.tags) == (
        "u1",
        "Final",
        ["a", "b"],
    )
    await meta.set_metadata({"title": "Versioned"}, create=False, expected_version=read.version)
    with pytest.raises(ConflictError) as info:
        await meta.set_metadata({"title": "Stale"}, create=False, expected_version=read.version)
    assert info.value.session_id == "s1"
    assert (await meta.get_metadata()).title == "Versioned"
    # A session the SDK made, with no metadata yet, exists: create=False writes it.
    await insert_session(store, "sdk-only")
    await store.bind("sdk-only").set_metadata({"title": "From the SDK"}, create=False)
    assert (await store.bind("sdk-only").get_metadata()).title == "From the SDK"


async def test_create_must_be_a_bool(store: Store) -> None:
    meta = store.bind("s1")
    scoped = store.scoped(owner_id="u1").bind("s1")
    for wrong in ("no", 0, None):
        with pytest.raises(InvalidArgumentError, match="create must be True or False"):
            await meta.set_metadata({"title": "t"}, create=wrong)  # type: ignore[arg-type]
        with pytest.raises(InvalidArgumentError, match="create must be True or False"):
            await scoped.add_to("tags", "x", create=wrong)  # type: ignore[arg-type]
    assert not await meta.exists()


@pytest.fixture
async def tenants(store: Store) -> Store:
    await store.bind("mine").set_metadata({"owner_id": "u1", "title": "Mine", "tags": ["a"]})
    await store.bind("theirs").set_metadata({"owner_id": "u2", "title": "Theirs"})
    await insert_session(store, "free")  # a session row with no metadata
    return store


async def test_scoped_exists_only_in_scope(tenants: Store) -> None:
    view = tenants.scoped(owner_id="u1")
    assert await view.exists("mine") and await view.bind("mine").exists()
    for other in ("theirs", "free", "missing"):
        assert not await view.exists(other), other
        assert not await view.bind(other).exists(), other


async def test_scoped_create_false_writes_only_in_scope(tenants: Store) -> None:
    view = tenants.scoped(owner_id="u1")
    await view.bind("mine").set_metadata({"title": "Renamed"}, create=False)
    await view.bind("mine").add_to("tags", "b", create=False)
    mine = await tenants.bind("mine").get_metadata()
    assert (mine.owner_id, mine.title, mine.tags) == ("u1", "Renamed", ["a", "b"])

    async def rename(session: str) -> None:
        await view.bind(session).set_metadata({"title": "Stolen"}, create=False)

    async def tag(session: str) -> None:
        await view.bind(session).add_to("tags", "stolen", create=False)

    for write in (rename, tag):
        with pytest.raises(SessionNotFoundError, match="'missing' does not exist"):
            await write("missing")
        with pytest.raises(SessionNotFoundError, match="holds no metadata of scope") as info:
            await write("free")
        assert info.value.session_id == "free"
        with pytest.raises(SessionNotInScopeError) as refused:
            await write("theirs")
        assert refused.value.session_id == "theirs"

    assert not await tenants.exists("missing")
    assert await value_rows(tenants, "free") == 0  # not claimed
    theirs = await tenants.bind("theirs").get_metadata()
    assert (theirs.owner_id, theirs.title, theirs.tags) == ("u2", "Theirs", None)
    # With the default, the view still claims a free session and creates a missing one.
    await view.bind("free").set_metadata({"title": "Claimed"})
    await view.bind("new").add_to("tags", "x")
    assert await view.exists("free") and await view.exists("new")


async def test_scoped_versioned_create_false(tenants: Store) -> None:
    view = tenants.scoped(owner_id="u1")
    version = (await view.bind("mine").get_metadata_versioned()).version
    with pytest.raises(SessionNotFoundError):
        await view.bind("free").set_metadata({"title": "x"}, create=False, expected_version=version)
    await view.bind("mine").set_metadata({"title": "x"}, create=False, expected_version=version)
    assert (await view.bind("mine").get_metadata()).title == "x"


async def test_create_false_inside_the_callers_transaction(
    store: Store, engine: AsyncEngine
) -> None:
    async with engine.begin() as connection:
        joined = store.using(connection)
        with pytest.raises(SessionNotFoundError):
            await joined.bind("s1").set_metadata({"title": "t"}, create=False)
        await joined.bind("s1").set_metadata({"owner_id": "u1"})
        # The session row this transaction made is seen by the same transaction.
        assert await joined.exists("s1")
        await joined.scoped(owner_id="u1").bind("s1").set_metadata({"title": "t"}, create=False)
    assert (await store.bind("s1").get_metadata()).title == "t"
