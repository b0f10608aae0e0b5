"""The core store on every backend: write, read, delete and find typed metadata."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import pytest
from pydantic import Field, ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from sessionmeta import (
    InvalidSessionIdError,
    MetadataStore,
    ModelDefinitionError,
    SessionMeta,
    StoredValueError,
    TableNameError,
    UnknownKeyError,
)

from .models import AllTypes, ChatMeta, Priority, Settings


async def stored_rows(engine: AsyncEngine, session_id: str) -> dict[str, str]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT `key`, value FROM agent_sessions_metadata WHERE session_id = :sid")
            if engine.dialect.name in ("mysql", "mariadb")
            else text('SELECT "key", value FROM agent_sessions_metadata WHERE session_id = :sid'),
            {"sid": session_id},
        )
        return dict(rows.all())


async def session_rows(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as connection:
        rows = await connection.execute(text("SELECT session_id FROM agent_sessions"))
        return sorted(row[0] for row in rows)


ALL_VALUES: dict[str, Any] = {
    "text": "héllo ✓ 🙂",
    "integer": 2**70,
    "number": 0.1,
    "flag": False,
    "amount": Decimal("12.3400"),
    "moment": dt.datetime(
        2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.timezone(dt.timedelta(hours=-3, minutes=-30))
    ),
    "day": dt.date(1999, 12, 31),
    "ident": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "level": Priority.HIGH,
    "mode": "slow",
    "words": ["b", "a", "b"],
    "numbers": {3, 1, 2},
    "pair": (7, "seven"),
    "dates": [dt.date(2020, 1, 1)],
    "extra": {"nested": {"list": [1, 2.5, "x", None, True]}, "empty": {}},
    "settings": Settings(temperature=0.9, model="large"),
    "renamed": "kept",
    "blob": b"\x00\xff binary",
}


async def test_every_field_type_round_trips(engine: AsyncEngine) -> None:
    store = MetadataStore(AllTypes, engine, create_tables=True)
    meta = store.bind("s1")
    await meta.set_metadata(ALL_VALUES)
    read = await meta.get_metadata()
    for name, value in ALL_VALUES.items():
        assert getattr(read, name) == value, name
        assert type(getattr(read, name)) is type(value), name
    assert read.model_fields_set == set(ALL_VALUES)
    assert read.moment is not None and read.moment.utcoffset() == dt.timedelta(
        hours=-3, minutes=-30
    )
    assert str(read.amount) == "12.3400"


async def test_naive_datetime_stays_naive(engine: AsyncEngine) -> None:
    store = MetadataStore(AllTypes, engine, create_tables=True)
    naive = dt.datetime(2024, 1, 2, 3, 4, 5)
    await store.bind("s").set_metadata({"moment": naive})
    read = (await store.bind("s").get_metadata()).moment
    assert read == naive and read is not None and read.tzinfo is None


@pytest.mark.parametrize("tricky", ["42", "true", "null", "None", "", "[1]", '"quoted"', "0.10"])
async def test_strings_that_look_like_other_things_stay_strings(
    engine: AsyncEngine, tricky: str
) -> None:
    store = MetadataStore(AllTypes, engine, create_tables=True)
    await store.bind("s").set_metadata({"text": tricky, "extra": {"v": tricky}})
    read = await store.bind("s").get_metadata()
    assert read.text == tricky
    assert read.extra == {"v": tricky}


@pytest.mark.parametrize(
    "values",
    [
        {"number": float("nan")},
        {"number": float("inf")},
        {"amount": Decimal("NaN")},
        {"extra": {"x": float("-inf")}},
        {"extra": {"tags": {"a", "b"}}},
        {"text": "lone \ud800 surrogate"},
    ],
)
async def test_values_that_cannot_round_trip_are_refused(
    store: MetadataStore[ChatMeta], engine: AsyncEngine, values: dict[str, Any]
) -> None:
    all_types = MetadataStore(AllTypes, engine)
    with pytest.raises(ValidationError) as caught:
        await all_types.bind("s").set_metadata({**values, "integer": 1})
    assert [error["loc"][0] for error in caught.value.errors()] == list(values)
    assert await stored_rows(engine, "s") == {}
    assert await session_rows(engine) == []


async def test_set_validates_every_field_before_writing(
    store: MetadataStore[ChatMeta], engine: AsyncEngine
) -> None:
    meta = store.bind("s1")
    await meta.set_metadata({"title": "before"})
    with pytest.raises(ValidationError) as caught:
        await meta.set_metadata({"title": "after", "priority": "high", "tags": "not-a-list"})
    assert {error["loc"][0] for error in caught.value.errors()} == {"priority", "tags"}
    assert (await meta.get_metadata()).title == "before"


async def test_unknown_key_is_named_and_nothing_is_written(
    store: MetadataStore[ChatMeta], engine: AsyncEngine
) -> None:
    meta = store.bind("s1")
    with pytest.raises(UnknownKeyError, match="'colour'") as caught:
        await meta.set_metadata({"title": "x", "colour": "red"})
    assert caught.value.keys == ["colour"]
    assert "s1" in str(caught.value)
    assert await session_rows(engine) == []


async def test_model_instance_writes_only_its_explicitly_set_fields(
    store: MetadataStore[ChatMeta], engine: AsyncEngine
) -> None:
    meta = store.bind("s1")
    await meta.set_metadata({"owner_id": "u1", "title": "first"})
    await meta.set_metadata(ChatMeta(title="second", tags=None))
    assert set(await stored_rows(engine, "s1")) == {"owner_id", "title", "tags"}
    read = await meta.get_metadata()
    assert (read.owner_id, read.title, read.tags) == ("u1", "second", None)
    assert read.model_fields_set == {"owner_id", "title", "tags"}


async def test_get_with_keys_reads_only_those(store: MetadataStore[ChatMeta]) -> None:
    meta = store.bind("s1")
    await meta.set_metadata({"owner_id": "u1", "title": "t", "priority": 3})
    read = await meta.get_metadata(["owner_id", "tags"])
    assert read.owner_id == "u1" and read.title is None and read.tags is None
    assert read.model_fields_set == {"owner_id"}
    with pytest.raises(UnknownKeyError, match="'nope'"):
        await meta.get_metadata(["owner_id", "nope"])


async def test_missing_session_reads_defaults(store: MetadataStore[ChatMeta]) -> None:
    read = await store.bind("never-written").get_metadata()
    assert read == ChatMeta()
    assert read.model_fields_set == set()


async def test_delete_named_keys_or_all(
    store: MetadataStore[ChatMeta], engine: AsyncEngine
) -> None:
    meta = store.bind("s1")
    other = store.bind("s2")
    await meta.set_metadata({"owner_id": "u1", "title": "t", "tags": ["a"]})
    await other.set_metadata({"owner_id": "u2"})
    await meta.delete_metadata(["tags"])
    assert set(await stored_rows(engine, "s1")) == {"owner_id", "title"}
    await meta.delete_metadata()
    assert await stored_rows(engine, "s1") == {}
    assert (await other.get_metadata()).owner_id == "u2"
    with pytest.raises(UnknownKeyError):
        await meta.delete_metadata(["nope"])


async def test_find_matches_what_set_stored(store: MetadataStore[ChatMeta]) -> None:
    for index in range(5):
        await store.bind(f"s{index}").set_metadata(
            {"owner_id": "u1" if index % 2 == 0 else "u2", "priority": index}
        )
    assert await store.find_sessions_by_metadata("owner_id", "u1") == ["s0", "s2", "s4"]
    assert await store.find_sessions_by_metadata("owner_id", "u1", limit=2) == ["s0", "s2"]
    # Validated through the field's type: "3" is the int 3.
    assert await store.find_sessions_by_metadata("priority", "3") == ["s3"]
    assert await store.find_sessions_by_metadata("owner_id", "U1") == []
    assert await store.bind("s0").find_sessions_by_metadata("priority", 4) == ["s4"]
    with pytest.raises(ValidationError):
        await store.find_sessions_by_metadata("priority", "high")
    with pytest.raises(UnknownKeyError):
        await store.find_sessions_by_metadata("colour", "red")
    with pytest.raises(ValueError, match="limit"):
        await store.find_sessions_by_metadata("owner_id", "u1", limit=0)


async def test_find_by_a_huge_value(engine: AsyncEngine) -> None:
    store = MetadataStore(AllTypes, engine, create_tables=True)
    huge = "x" * 1_000_000
    await store.bind("big").set_metadata({"text": huge})
    await store.bind("small").set_metadata({"text": "x"})
    assert (await store.bind("big").get_metadata()).text == huge
    assert await store.find_sessions_by_metadata("text", huge) == ["big"]


async def test_session_ids_are_case_sensitive(store: MetadataStore[ChatMeta]) -> None:
    await store.bind("abc").set_metadata({"title": "lower"})
    await store.bind("ABC").set_metadata({"title": "upper"})
    await store.bind("abç").set_metadata({"title": "cedilla"})
    assert (await store.bind("abc").get_metadata()).title == "lower"
    assert (await store.bind("ABC").get_metadata()).title == "upper"
    assert (await store.bind("abç").get_metadata()).title == "cedilla"
    assert await store.find_sessions_by_metadata("title", "lower") == ["abc"]


async def test_alias_is_the_storage_key(engine: AsyncEngine) -> None:
    store = MetadataStore(AllTypes, engine, create_tables=True)
    await store.bind("s").set_metadata({"renamed": "by name"})
    assert await stored_rows(engine, "s") == {"old_name": '"by name"'}
    await store.bind("s").set_metadata({"old_name": "by alias"})
    assert (await store.bind("s").get_metadata(["old_name"])).renamed == "by alias"
    assert await store.find_sessions_by_metadata("renamed", "by alias") == ["s"]


async def test_bind_accepts_objects_with_a_session_id(store: MetadataStore[ChatMeta]) -> None:
    class AgentSession:
        session_id = "from-object"

    await store.bind(AgentSession()).set_metadata({"title": "t"})
    assert (await store.bind("from-object").get_metadata()).title == "t"


async def test_undeclared_stored_keys_are_ignored_and_kept(
    store: MetadataStore[ChatMeta], engine: AsyncEngine
) -> None:
    class Wider(SessionMeta):
        title: str | None = None
        retired: str | None = None

    await MetadataStore(Wider, engine).bind("s").set_metadata({"retired": "old", "title": "t"})
    meta = store.bind("s")
    await meta.set_metadata({"title": "new"})
    read = await meta.get_metadata()
    assert read.title == "new" and read.model_fields_set == {"title"}
    assert (await stored_rows(engine, "s"))["retired"] == '"old"'


async def test_stored_value_that_no_longer_fits_raises(
    store: MetadataStore[ChatMeta], engine: AsyncEngine
) -> None:
    await store.bind("s9").set_metadata({"priority": 1, "title": "t"})
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "UPDATE agent_sessions_metadata SET value = :v "
                "WHERE session_id = 's9' AND value = '1'"
            ),
            {"v": '"urgent"'},
        )
    with pytest.raises(StoredValueError) as caught:
        await store.bind("s9").get_metadata()
    error = caught.value
    assert (error.session_id, error.key, error.stored_text) == ("s9", "priority", '"urgent"')
    assert "s9" in str(error) and "priority" in str(error) and "urgent" in str(error)
    # Only the broken key fails; the others still read.
    assert (await store.bind("s9").get_metadata(["title"])).title == "t"


async def test_on_invalid_default_reads_the_default_and_keeps_the_row(
    engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    lenient = MetadataStore(ChatMeta, engine, create_tables=True, on_invalid="default")
    await lenient.bind("s").set_metadata({"priority": 1, "title": "t"})
    async with engine.begin() as connection:
        await connection.execute(
            text("UPDATE agent_sessions_metadata SET value = 'not json' WHERE value = '1'")
        )
    read = await lenient.bind("s").get_metadata()
    assert read.priority is None and read.title == "t"
    assert read.model_fields_set == {"title"}
    assert "'s'" in caplog.text and "'priority'" in caplog.text
    assert (await stored_rows(engine, "s"))["priority"] == "not json"


async def test_concurrent_writers_create_one_session_row(
    store: MetadataStore[ChatMeta], engine: AsyncEngine
) -> None:
    await asyncio.gather(
        *(store.bind("shared").set_metadata({"priority": index}) for index in range(20)),
        *(store.bind("shared").set_metadata({"title": f"t{index}"}) for index in range(20)),
    )
    assert await session_rows(engine) == ["shared"]
    read = await store.bind("shared").get_metadata()
    assert read.priority in range(20) and read.title in {f"t{index}" for index in range(20)}


async def test_existing_sessions_table_is_not_altered(engine: AsyncEngine) -> None:
    session_id_type = (
        "VARCHAR(255) COLLATE utf8mb4_bin" if engine.dialect.name == "mysql" else "VARCHAR"
    )
    async with engine.begin() as connection:
        await connection.execute(
            text(
                f"CREATE TABLE agent_sessions (session_id {session_id_type} PRIMARY KEY, "
                "created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP NOT NULL, "
                "updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP NOT NULL, legacy INTEGER)"
            )
        )
        await connection.execute(
            text("INSERT INTO agent_sessions (session_id, legacy) VALUES ('old', 7)")
        )
    store = MetadataStore(ChatMeta, engine, create_tables=True)
    await store.bind("old").set_metadata({"title": "kept"})
    await store.bind("new").set_metadata({"title": "fresh"})
    async with engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT session_id, legacy FROM agent_sessions ORDER BY session_id")
        )
        assert [tuple(row) for row in rows] == [("new", None), ("old", 7)]


async def test_deleting_the_session_row_cascades(
    store: MetadataStore[ChatMeta], engine: AsyncEngine
) -> None:
    await store.bind("gone").set_metadata({"title": "t"})
    await store.bind("stays").set_metadata({"title": "t"})
    # Any connection of the engine, the application's own included: on SQLite the
    # store turned foreign keys on for every one it hands out.
    async with engine.begin() as connection:
        await connection.execute(text("DELETE FROM agent_sessions WHERE session_id = 'gone'"))
    assert await stored_rows(engine, "gone") == {}
    assert await stored_rows(engine, "stays") != {}


def test_field_without_default_is_refused_at_bind_time() -> None:
    class NoDefault(SessionMeta):
        owner_id: str

    with pytest.raises(ModelDefinitionError, match="owner_id"):
        MetadataStore.from_url(NoDefault, "sqlite+aiosqlite://")


def test_storage_key_longer_than_255_is_refused() -> None:
    class LongKey(SessionMeta):
        title: str | None = Field(default=None, alias="k" * 256)

    with pytest.raises(ModelDefinitionError, match="title"):
        MetadataStore.from_url(LongKey, "sqlite+aiosqlite://")


@pytest.mark.parametrize("name", ["", "agent sessions", "x; DROP TABLE y", "1abc", "a" * 49, "ä"])
def test_table_names_must_be_plain_identifiers(name: str) -> None:
    with pytest.raises(TableNameError):
        MetadataStore.from_url(ChatMeta, "sqlite+aiosqlite://", metadata_table=name)


async def test_custom_table_names(engine: AsyncEngine) -> None:
    store = MetadataStore(
        ChatMeta, engine, create_tables=True, sessions_table="chats", metadata_table="chat_meta"
    )
    await store.bind("s").set_metadata({"title": "t"})
    assert (await store.bind("s").get_metadata()).title == "t"
    async with engine.connect() as connection:
        count = await connection.scalar(text("SELECT COUNT(*) FROM chat_meta"))
    assert count == 1


async def test_explicit_none_is_stored_and_read_as_set(
    store: MetadataStore[ChatMeta], engine: AsyncEngine
) -> None:
    meta = store.bind("s")
    await meta.set_metadata({"title": None, "tags": ["a"]})
    read = await meta.get_metadata()
    assert read.title is None and read.model_fields_set == {"title", "tags"}
    assert await stored_rows(engine, "s") == {"title": "null", "tags": '["a"]'}


@pytest.mark.parametrize("session_id", ["", "x" * 256, "nul\x00inside", "lone \udc00"])
def test_unstorable_session_ids_are_refused(
    store: MetadataStore[ChatMeta], session_id: str
) -> None:
    with pytest.raises(InvalidSessionIdError):
        store.bind(session_id)


async def test_non_ascii_session_ids_round_trip(store: MetadataStore[ChatMeta]) -> None:
    session_id = "séance-会话-🙂-" + "x" * 200
    await store.bind(session_id).set_metadata({"title": "t"})
    assert await store.find_sessions_by_metadata("title", "t") == [session_id]
