"""A model that changes over time reads what older versions of it stored, on every backend."""

from __future__ import annotations

import logging
from typing import Literal

import pytest
from pydantic import Field
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from sessionmeta import MetadataStore, SessionMeta, StoredValueError

from .test_store import stored_rows


class V1(SessionMeta):
    title: str | None = None
    priority: int | None = None
    mode: Literal["fast", "slow"] | None = None
    owner: str | None = None
    score: float | None = None
    label: str = ""


class Added(SessionMeta):
    title: str | None = None
    priority: int | None = None
    mode: Literal["fast", "slow"] | None = None
    owner: str | None = None
    score: float | None = None
    label: str = ""
    language: str = "en"
    retries: int | None = None


class Removed(SessionMeta):
    title: str | None = None


class Renamed(SessionMeta):
    # The attribute got a better name; the alias keeps reading the old storage key.
    heading: str | None = Field(default=None, alias="title")
    priority: int | None = None


class Widened(SessionMeta):
    title: str | None = None
    priority: float | None = None
    mode: Literal["fast", "slow", "auto"] | None = None
    owner: str | int | None = None
    score: float | None = None
    label: str | None = None


class Narrowed(SessionMeta):
    title: str | None = None
    priority: int | None = None
    mode: Literal["fast"] | None = None
    owner: str | None = None
    score: int | None = None


V1_VALUES = {
    "title": "t",
    "priority": 3,
    "mode": "slow",
    "owner": "ann",
    "score": 1.5,
    "label": "x",
}


@pytest.fixture
async def old_rows(engine: AsyncEngine) -> dict[str, str]:
    """Session "s" as version 1 of the model stored it; returns its stored rows."""
    store = MetadataStore(V1, engine, create_tables=True)
    await store.bind("s").set_metadata(V1_VALUES)
    return await stored_rows(engine, "s")


async def test_added_field_reads_its_default(engine: AsyncEngine, old_rows: dict[str, str]) -> None:
    read = await MetadataStore(Added, engine).bind("s").get_metadata()
    assert (read.language, read.retries) == ("en", None)
    assert (read.title, read.priority) == ("t", 3)
    assert read.model_fields_set == set(V1_VALUES)


async def test_removed_field_rows_are_ignored_and_kept(
    engine: AsyncEngine, old_rows: dict[str, str]
) -> None:
    store = MetadataStore(Removed, engine)
    read = await store.bind("s").get_metadata()
    assert read == Removed(title="t")
    assert read.model_fields_set == {"title"}
    # Writing and deleting through the smaller model leaves the retired keys alone.
    await store.bind("s").set_metadata({"title": "u"})
    await store.bind("s").delete_metadata(["title"])
    after = await stored_rows(engine, "s")
    assert after == {key: value for key, value in old_rows.items() if key != "title"}


async def test_alias_keeps_the_old_storage_key(
    engine: AsyncEngine, old_rows: dict[str, str]
) -> None:
    store = MetadataStore(Renamed, engine)
    assert (await store.bind("s").get_metadata()).heading == "t"
    await store.bind("s").set_metadata({"heading": "renamed"})
    assert (await stored_rows(engine, "s"))["title"] == '"renamed"'
    assert await store.find_sessions_by_metadata("heading", "renamed") == ["s"]


async def test_widened_types_read_old_rows(engine: AsyncEngine, old_rows: dict[str, str]) -> None:
    read = await MetadataStore(Widened, engine).bind("s").get_metadata()
    assert read.priority == 3.0
    assert isinstance(read.priority, float)
    assert (read.mode, read.owner, read.title, read.score, read.label) == (
        "slow",
        "ann",
        "t",
        1.5,
        "x",
    )


async def test_widened_number_is_still_found_by_equality(
    engine: AsyncEngine, old_rows: dict[str, str]
) -> None:
    assert await MetadataStore(Widened, engine).find_sessions_by_metadata("priority", 3) == ["s"]


@pytest.mark.parametrize(
    ("key", "stored"), [("mode", '"slow"'), ("score", "1.5")], ids=["literal", "float-to-int"]
)
async def test_narrowed_type_raises_naming_session_key_and_text(
    engine: AsyncEngine, old_rows: dict[str, str], key: str, stored: str
) -> None:
    with pytest.raises(StoredValueError) as caught:
        await MetadataStore(Narrowed, engine).bind("s").get_metadata()
    # The first failing key in storage order is the one reported.
    failing = {"mode": '"slow"', "score": "1.5"}
    first = min(failing)
    assert (caught.value.session_id, caught.value.key) == ("s", first)
    assert caught.value.stored_text == failing[first]
    assert old_rows[key] == stored
    # Each broken key fails alone; the keys that still fit read.
    with pytest.raises(StoredValueError) as alone:
        await MetadataStore(Narrowed, engine).bind("s").get_metadata([key])
    assert (alone.value.key, alone.value.stored_text) == (key, stored)
    fine = await MetadataStore(Narrowed, engine).bind("s").get_metadata(["title", "priority"])
    assert (fine.title, fine.priority) == ("t", 3)


async def test_on_invalid_default_warns_and_leaves_the_rows(
    engine: AsyncEngine, old_rows: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    store = MetadataStore(Narrowed, engine, on_invalid="default")
    with caplog.at_level(logging.WARNING, logger="sessionmeta"):
        read = await store.bind("s").get_metadata()
    assert (read.mode, read.score) == (None, None)
    assert (read.title, read.priority, read.owner) == ("t", 3, "ann")
    assert read.model_fields_set == {"title", "priority", "owner"}
    warned = {(record.args[0], record.args[1]) for record in caplog.records}  # type: ignore[index]
    assert warned == {("s", "mode"), ("s", "score")}
    assert all(record.levelno == logging.WARNING for record in caplog.records)
    # Nothing was rewritten or deleted behind the user's back.
    assert await stored_rows(engine, "s") == old_rows
    # Writing another key through the lenient store leaves the broken rows too.
    await store.bind("s").set_metadata({"title": "new"})
    after = await stored_rows(engine, "s")
    assert after == {**old_rows, "title": '"new"'}


async def test_value_stored_by_hand_that_is_not_json_is_reported(
    engine: AsyncEngine, old_rows: dict[str, str]
) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            text("UPDATE agent_sessions_metadata SET value = '{oops' WHERE value = '3'")
        )
    with pytest.raises(StoredValueError) as caught:
        await MetadataStore(V1, engine).bind("s").get_metadata()
    assert (caught.value.key, caught.value.stored_text) == ("priority", "{oops")
