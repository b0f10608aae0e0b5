"""Read-modify-write without lost updates: versions, conditional writes, atomic add/remove."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from sessionmeta import (
    BoundMetadata,
    ConflictError,
    MetadataStore,
    StoredValueError,
    UnknownKeyError,
    Versioned,
)

from .dbstate import clear_session, session_ids, stored_rows
from .models import AllTypes, ChatMeta


async def test_version_changes_with_the_stored_values(store: MetadataStore[ChatMeta]) -> None:
    meta = store.bind("s")
    empty = await meta.get_metadata_versioned()
    assert isinstance(empty, Versioned)
    assert empty.metadata == ChatMeta()
    await meta.set_metadata({"title": "a", "priority": 1})
    first = await meta.get_metadata_versioned()
    assert first.metadata.title == "a"
    assert first.version != empty.version
    assert (await meta.get_metadata_versioned()).version == first.version
    await meta.set_metadata({"priority": 2})
    assert (await meta.get_metadata_versioned()).version != first.version
    await meta.set_metadata({"priority": 1})
    # The content is what it was: nothing read at `first` is stale.
    assert (await meta.get_metadata_versioned()).version == first.version
    await meta.delete_metadata(["title"])
    assert (await meta.get_metadata_versioned()).version != first.version


async def test_version_of_a_narrow_read_covers_every_key(store: MetadataStore[ChatMeta]) -> None:
    meta = store.bind("s")
    await meta.set_metadata({"title": "a", "priority": 1})
    narrow = await meta.get_metadata_versioned(["title"])
    assert narrow.metadata.model_fields_set == {"title"}
    assert narrow.version == (await meta.get_metadata_versioned()).version
    await meta.set_metadata({"priority": 5})
    with pytest.raises(ConflictError):
        await meta.set_metadata({"title": "b"}, expected_version=narrow.version)


async def test_conditional_write_refuses_a_stale_version(
    store: MetadataStore[ChatMeta], engine: AsyncEngine
) -> None:
    meta = store.bind("s")
    await meta.set_metadata({"title": "a"})
    read = await meta.get_metadata_versioned()
    await meta.set_metadata({"title": "changed elsewhere"})
    with pytest.raises(ConflictError, match="'s'"):
        await meta.set_metadata({"title": "mine", "priority": 9}, expected_version=read.version)
    assert await stored_rows(engine, "s") == {"title": '"changed elsewhere"'}
    fresh = await meta.get_metadata_versioned()
    with pytest.raises(TypeError, match="version"):
        await meta.set_metadata({"title": "mine"}, expected_version=fresh)  # type: ignore[arg-type]
    await meta.set_metadata({"title": "mine"}, expected_version=fresh.version)
    assert (await meta.get_metadata()).title == "mine"


async def test_conditional_write_to_a_new_session_creates_it_once(
    store: MetadataStore[ChatMeta], engine: AsyncEngine
) -> None:
    meta = store.bind("fresh")
    never = await meta.get_metadata_versioned()
    await meta.set_metadata({"owner_id": "u1"}, expected_version=never.version)
    with pytest.raises(ConflictError):
        await meta.set_metadata({"owner_id": "u2"}, expected_version=never.version)
    assert (await meta.get_metadata()).owner_id == "u1"
    assert await session_ids(engine) == ["fresh"]


async def test_conflict_after_the_session_was_cleared(
    store: MetadataStore[ChatMeta], engine: AsyncEngine
) -> None:
    meta = store.bind("s")
    await meta.set_metadata({"title": "a"})
    read = await meta.get_metadata_versioned()
    await clear_session(engine, "s")
    with pytest.raises(ConflictError):
        await meta.set_metadata({"priority": 1}, expected_version=read.version)
    assert await session_ids(engine) == []


async def _increment(meta: BoundMetadata[ChatMeta]) -> int:
    """The optimistic loop an application writes: read, change, write if unchanged."""
    conflicts = 0
    while True:
        read = await meta.get_metadata_versioned(["priority"])
        try:
            await meta.set_metadata(
                {"priority": (read.metadata.priority or 0) + 1}, expected_version=read.version
            )
        except ConflictError:
            conflicts += 1
            continue
        return conflicts


async def test_concurrent_increments_lose_nothing(wide_engine: AsyncEngine) -> None:
    store = MetadataStore(ChatMeta, wide_engine, create_tables=True)
    await store.create_tables()
    meta = store.bind("counter")
    conflicts = await asyncio.gather(*(_increment(meta) for _ in range(25)))
    assert (await meta.get_metadata()).priority == 25
    # Not a timing assertion: with 25 writers at once, some must have collided.
    assert sum(conflicts) > 0


async def test_concurrent_adds_to_a_list_keep_every_item(wide_engine: AsyncEngine) -> None:
    store = MetadataStore(ChatMeta, wide_engine, create_tables=True)
    await store.create_tables()
    meta = store.bind("tagged")
    await asyncio.gather(*(meta.add_to("tags", f"t{index}") for index in range(50)))
    tags = (await meta.get_metadata()).tags
    assert sorted(tags or []) == sorted(f"t{index}" for index in range(50))
    await asyncio.gather(*(meta.remove_from("tags", f"t{index}") for index in range(0, 50, 2)))
    assert sorted((await meta.get_metadata()).tags or []) == sorted(
        f"t{index}" for index in range(1, 50, 2)
    )


async def test_concurrent_adds_and_removes_on_a_set(wide_engine: AsyncEngine) -> None:
    store = MetadataStore(AllTypes, wide_engine, create_tables=True)
    await store.create_tables()
    meta = store.bind("numbers")
    await meta.set_metadata({"numbers": set(range(0, 100, 2))})
    await asyncio.gather(
        *(meta.add_to("numbers", index) for index in range(1, 100, 2)),
        *(meta.remove_from("numbers", index) for index in range(0, 40, 2)),
        # Plain writes to other keys of the same session run alongside.
        *(meta.set_metadata({"integer": index}) for index in range(20)),
    )
    read = await meta.get_metadata()
    assert read.numbers == set(range(1, 100, 2)) | set(range(40, 100, 2))
    assert read.integer in range(20)


async def test_add_and_remove_semantics(
    store: MetadataStore[ChatMeta], engine: AsyncEngine
) -> None:
    meta = store.bind("s")
    await meta.remove_from("tags", "x")
    assert await session_ids(engine) == []
    await meta.add_to("tags", "a", "b")
    await meta.add_to("tags", "a")
    assert (await meta.get_metadata()).tags == ["a", "b", "a"]
    await meta.remove_from("tags", "a", "missing")
    assert (await meta.get_metadata()).tags == ["b"]
    await meta.add_to("tags")
    assert (await meta.get_metadata()).tags == ["b"]
    # Adding nothing does not create the key.
    await store.bind("other").add_to("tags")
    assert await session_ids(engine) == ["s"]


async def test_add_validates_before_any_io(
    store: MetadataStore[ChatMeta], engine: AsyncEngine
) -> None:
    meta = store.bind("s")
    with pytest.raises(ValidationError):
        await meta.add_to("tags", {"not": "a string"})
    with pytest.raises(TypeError, match="title"):
        await meta.add_to("title", "x")
    with pytest.raises(UnknownKeyError, match="colour"):
        await meta.add_to("colour", "x")
    assert await session_ids(engine) == []


async def test_add_to_a_value_that_no_longer_fits_raises_and_writes_nothing(
    store: MetadataStore[ChatMeta], engine: AsyncEngine
) -> None:
    meta = store.bind("s")
    await meta.set_metadata({"tags": ["a"]})
    async with engine.begin() as connection:
        await connection.execute(text("UPDATE agent_sessions_metadata SET value = '\"oops\"'"))
    with pytest.raises(StoredValueError):
        await meta.add_to("tags", "b")
    assert await stored_rows(engine, "s") == {"tags": '"oops"'}
