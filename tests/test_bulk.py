"""Bulk writes and deletes: ``store.set_many`` and ``store.delete_many`` on every backend."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pytest
from pydantic import ValidationError, field_validator
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

import sessionmeta.sql.statements
from sessionmeta import (
    InvalidArgumentError,
    InvalidSessionIdError,
    MetadataStore,
    UnknownKeyError,
    field,
)
from sessionmeta.io.scoped import ScopedStore

from .models import AllTypes, ChatMeta

Store = MetadataStore[ChatMeta]


def chat_values(index: int) -> dict[str, Any]:
    return {
        "owner_id": f"u{index % 3}",
        "title": f"Conversation {index}",
        "tags": ["all", f"t{index % 5}"] if index % 4 else ["all"],
        "priority": index,
    }


async def table_rows(engine: AsyncEngine) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Every value row (without timestamps) and every items row, sorted."""
    quote = "`" if engine.dialect.name in ("mysql", "mariadb") else '"'
    async with engine.connect() as connection:
        values = await connection.execute(
            text(
                f"SELECT session_id, {quote}key{quote}, value, value_hash, sort_key "
                "FROM agent_sessions_metadata"
            )
        )
        items = await connection.execute(
            text(
                f"SELECT session_id, {quote}key{quote}, value_hash, item_hash "
                "FROM agent_sessions_metadata_items"
            )
        )
        return sorted(map(tuple, values.all())), sorted(map(tuple, items.all()))


async def session_row_ids(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as connection:
        rows = await connection.execute(text("SELECT session_id FROM agent_sessions"))
        return sorted(row[0] for row in rows)


@contextmanager
def counted_statements(engine: AsyncEngine) -> Iterator[list[str]]:
    """The statements the engine runs meanwhile, but SQLite's ``BEGIN IMMEDIATE`` (the
    other databases begin without a statement). The listener takes the SQLAlchemy path."""
    seen: list[str] = []

    def before_cursor_execute(*args: Any) -> None:
        if not args[2].startswith("BEGIN"):
            seen.append(args[2])

    event.listen(engine.sync_engine, "before_cursor_execute", before_cursor_execute)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", before_cursor_execute)


@contextmanager
def small_chunks(rows: int, text_bytes: int = 1 << 30) -> Iterator[None]:
    """Bulk statements of at most ``rows`` rows and ``text_bytes`` of text."""
    module = sessionmeta.sql.statements
    saved = module.BULK_ROWS, module.BULK_BYTES
    module.BULK_ROWS, module.BULK_BYTES = rows, text_bytes
    try:
        yield
    finally:
        module.BULK_ROWS, module.BULK_BYTES = saved


# ---- round trips ------------------------------------------------------------------------


async def test_set_many_round_trips_many_sessions(store: Store) -> None:
    values = {f"s{index:04d}": chat_values(index) for index in range(300)}
    await store.set_many(values)
    read = await store.get_many(values)
    assert {sid: model.model_dump(exclude_unset=True) for sid, model in read.items()} == values
    assert await store.count_sessions() == 300
    # List elements are findable, exactly as after single writes.
    expected = sorted(sid for sid, meta in values.items() if "t1" in meta["tags"])
    assert list(await store.find_sessions(field("tags").contains("t1"), limit=1000)) == expected
    assert await store.count_sessions(field("tags").contains("all")) == 300
    assert await store.find_sessions_by_metadata("priority", 7) == ["s0007"]


async def test_set_many_takes_models_and_mappings_by_name_or_alias(engine: AsyncEngine) -> None:
    store = MetadataStore(AllTypes, engine, create_tables=True)
    await store.set_many(
        {
            "a": AllTypes(renamed="x", numbers={3, 1}),
            "b": {"old_name": "y", "words": ["b", "a", "b"]},
            "c": {},  # nothing to write, as set_metadata({}) writes nothing
        }
    )
    read = await store.get_many(["a", "b", "c"])
    assert (read["a"].renamed, read["a"].numbers) == ("x", {1, 3})
    assert (read["b"].renamed, read["b"].words) == ("y", ["b", "a", "b"])
    assert read["c"].model_fields_set == set()
    assert await session_row_ids(engine) == ["a", "b"]
    assert list(await store.find_sessions(field("numbers").contains(3))) == ["a"]


@pytest.mark.parametrize("chunk_rows", [3, 4096])
async def test_set_many_stores_exactly_what_single_writes_store(
    store: Store, engine: AsyncEngine, chunk_rows: int
) -> None:
    """Same value rows, same items rows: first writes, then rewrites of lists and scalars."""
    first = {f"s{index:03d}": chat_values(index) for index in range(23)}
    second = {
        f"s{index:03d}": {"tags": ["all", "new"] if index % 2 else ["all"], "title": "again"}
        for index in range(0, 23, 3)
    }
    for writes in (first, second):
        for session_id, values in writes.items():
            await store.bind(f"single-{session_id}").set_metadata(values)
    single = await table_rows(engine)
    async with engine.begin() as connection:
        await connection.execute(text("DELETE FROM agent_sessions"))
    with small_chunks(chunk_rows):
        for writes in (first, second):
            await store.set_many({f"single-{sid}": values for sid, values in writes.items()})
    assert await table_rows(engine) == single
    assert await store.count_sessions(field("tags").contains("new")) == 4


async def test_chunks_by_text_size_keep_large_values_whole(store: Store) -> None:
    big = "x" * 50_000
    values = {f"s{index}": {"title": big + str(index), "tags": [big]} for index in range(7)}
    with small_chunks(4096, text_bytes=120_000):
        await store.set_many(values)
    read = await store.get_many(values)
    assert {sid: meta.title for sid, meta in read.items()} == {
        sid: meta["title"] for sid, meta in values.items()
    }
    assert await store.count_sessions(field("tags").contains(big)) == 7


async def test_other_sessions_and_other_keys_stay(store: Store) -> None:
    await store.bind("kept").set_metadata({"owner_id": "u9", "tags": ["old"]})
    await store.bind("s1").set_metadata({"owner_id": "u1", "tags": ["old"], "incognito": True})
    await store.set_many({"s1": {"title": "T", "tags": ["new"]}, "s2": {"title": "U"}})
    read = await store.get_many(["kept", "s1", "s2"])
    assert read["kept"] == ChatMeta(owner_id="u9", tags=["old"])
    assert read["s1"] == ChatMeta(owner_id="u1", title="T", tags=["new"], incognito=True)
    assert read["s2"] == ChatMeta(title="U")
    assert list(await store.find_sessions(field("tags").contains("old"))) == ["kept"]


async def test_set_many_of_nothing_does_nothing(store: Store, engine: AsyncEngine) -> None:
    with counted_statements(engine) as seen:
        await store.set_many({})
        await store.set_many({"s1": {}})
        await store.delete_many([])
        await store.delete_many(["s1"], keys=[])
    assert seen == []


# ---- everything is checked first --------------------------------------------------------


async def test_a_bad_value_in_the_last_session_writes_nothing(
    store: Store, engine: AsyncEngine
) -> None:
    await store.bind("s0001").set_metadata({"title": "before"})
    before = await table_rows(engine)
    values: dict[str, Any] = {f"s{index:04d}": chat_values(index) for index in range(500)}
    values["s9999"] = {"title": "fine", "priority": "not a number", "tags": ["a", 5]}
    with pytest.raises(ValidationError) as caught:
        await store.set_many(values)
    errors = caught.value.errors()
    assert [error["loc"] for error in errors] == [("s9999", "tags", 1), ("s9999", "priority")]
    assert "s9999.priority" in str(caught.value)
    assert await table_rows(engine) == before
    assert await session_row_ids(engine) == ["s0001"]


async def test_every_bad_value_of_every_session_is_named(store: Store) -> None:
    with pytest.raises(ValidationError) as caught:
        await store.set_many(
            {
                "a": {"priority": "x"},
                "b": {"title": "fine"},
                "c": {"priority": 1.5, "incognito": "perhaps"},
            }
        )
    located = sorted(error["loc"] for error in caught.value.errors())
    assert located == [("a", "priority"), ("c", "incognito"), ("c", "priority")]
    assert await store.count_sessions() == 0


class Checked(ChatMeta):
    @field_validator("title")
    @classmethod
    def _no_shouting(cls, title: str | None) -> str | None:
        if title is not None and title.isupper():
            raise ValueError("no shouting")
        return title


async def test_unstorable_values_and_validator_errors_are_located(engine: AsyncEngine) -> None:
    store = MetadataStore(Checked, engine, create_tables=True)
    other = MetadataStore(AllTypes, engine, create_tables=True)
    with pytest.raises(ValidationError) as caught:
        await store.set_many({"ok": {"title": "fine"}, "loud": {"title": "HEY"}})
    (error,) = caught.value.errors()
    assert error["loc"] == ("loud", "title")
    assert "no shouting" in error["msg"]
    with pytest.raises(ValidationError) as caught:
        await other.set_many({"ok": {"text": "fine"}, "nan": {"extra": {"x": float("nan")}}})
    (error,) = caught.value.errors()
    assert error["loc"][:2] == ("nan", "extra")
    assert await store.count_sessions() == 0


@pytest.mark.parametrize(
    ("values", "raised"),
    [
        ({"s1": {"title": "a"}, "": {"title": "b"}}, InvalidSessionIdError),
        ({"s1": {"title": "a"}, "x" * 300: {"title": "b"}}, InvalidSessionIdError),
        ({"s1": {"title": "a"}, "s2": {"nope": 1}}, UnknownKeyError),
        ({"s1": {"title": "a"}, "s2": ["title"]}, InvalidArgumentError),
        ([("s1", {"title": "a"})], InvalidArgumentError),
    ],
)
async def test_bad_arguments_raise_before_any_io(
    store: Store, engine: AsyncEngine, values: Any, raised: type[Exception]
) -> None:
    with counted_statements(engine) as seen, pytest.raises(raised):
        await store.set_many(values)
    assert seen == []
    assert await store.count_sessions() == 0


async def test_unknown_key_error_names_the_session(store: Store) -> None:
    with pytest.raises(UnknownKeyError) as caught:
        await store.set_many({"s1": {"title": "a"}, "s2": {"nope": 1}})
    assert caught.value.session_id == "s2"


# ---- one transaction --------------------------------------------------------------------


async def test_a_failure_midway_writes_nothing(store: Store, engine: AsyncEngine) -> None:
    await store.bind("s0000").set_metadata({"title": "before", "tags": ["old"]})
    before = await table_rows(engine)
    values = {f"s{index:04d}": chat_values(index) for index in range(40)}
    statements = 0

    def fail_late(*args: Any) -> None:
        nonlocal statements
        statements += 1
        if statements == 6:
            raise RuntimeError("the database went away")

    event.listen(engine.sync_engine, "before_cursor_execute", fail_late)
    try:
        with small_chunks(16), pytest.raises(RuntimeError, match="went away"):
            await store.set_many(values)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", fail_late)
    assert statements == 6
    assert await table_rows(engine) == before
    assert await session_row_ids(engine) == ["s0000"]
    # The store is usable afterwards, and the same call then writes everything.
    with small_chunks(16):
        await store.set_many(values)
    assert await store.count_sessions() == 40


async def test_set_many_joins_the_callers_transaction(store: Store, engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        await connection.begin()
        await store.using(connection).set_many({"s1": {"title": "a"}, "s2": {"tags": ["x"]}})
        assert await store.using(connection).count_sessions() == 2
        await connection.rollback()
    assert await store.count_sessions() == 0
    assert await session_row_ids(engine) == []


# ---- statements -------------------------------------------------------------------------


@asynccontextmanager
async def statements_of(engine: AsyncEngine) -> AsyncIterator[list[str]]:
    with counted_statements(engine) as seen:
        yield seen


async def test_as_many_statements_for_ten_sessions_as_for_two_thousand(
    store: Store, engine: AsyncEngine
) -> None:
    def sessions(prefix: str, count: int) -> dict[str, dict[str, Any]]:
        return {
            f"{prefix}{index:05d}": {"title": f"T{index}", "tags": ["a", f"t{index}"]}
            for index in range(count)
        }

    counts = {}
    for prefix, count in (("few-", 10), ("many-", 2000)):
        async with statements_of(engine) as seen:
            await store.set_many(sessions(prefix, count))
        counts[count] = len(seen)
    assert counts[10] == counts[2000], counts
    # PostgreSQL: one statement; elsewhere session rows, values, old items, new items.
    assert counts[10] in (1, 4), counts
    # Rewriting them all is as cheap.
    async with statements_of(engine) as seen:
        await store.set_many(sessions("many-", 2000))
    assert len(seen) == counts[2000]
    assert await store.count_sessions(field("tags").contains("a")) == 2010

    deletes = {}
    for prefix, count in (("few-", 10), ("many-", 2000)):
        ids = list(sessions(prefix, count))
        async with statements_of(engine) as seen:
            await store.delete_many(ids, keys=["tags"])
        deletes[count] = len(seen)
    # PostgreSQL and MySQL lock the sessions first, in a statement of their own
    # (Spelling.delete_locks_sessions); PostgreSQL then deletes the values and their items
    # in one statement, the others the values, then their items.
    wanted = {"postgresql": 2, "mysql": 3, "sqlite": 2}[engine.dialect.name]
    assert deletes[10] == deletes[2000] == wanted, deletes
    assert await store.count_sessions(field("tags").contains("a")) == 0
    assert await store.count_sessions() == 2010


async def test_statements_grow_by_chunks_only(store: Store, engine: AsyncEngine) -> None:
    with small_chunks(64):
        async with statements_of(engine) as seen:
            await store.set_many({f"s{index:04d}": {"title": "x"} for index in range(640)})
        # Ten chunks of session rows and ten of values (PostgreSQL: ten statements).
        assert len(seen) in (10, 20)
        async with statements_of(engine) as seen:
            await store.delete_many([f"s{index:04d}" for index in range(640)])
        # Ten chunks of deletes, each after a chunk of session locks (PostgreSQL, MySQL)
        # and before a chunk of item deletes (MySQL, SQLite).
        assert len(seen) == {"postgresql": 20, "mysql": 30, "sqlite": 20}[engine.dialect.name]
    assert await store.count_sessions({"title": "x"}) == 0


# ---- delete_many ------------------------------------------------------------------------


async def test_delete_many_removes_exactly_what_was_asked(
    store: Store, engine: AsyncEngine
) -> None:
    values = {f"s{index}": chat_values(index) for index in range(1, 9)}
    await store.set_many(values)
    await store.delete_many(["s1", "s2", "unknown"], keys=["tags", "title"])
    await store.delete_many(["s3", "s4"])
    read = await store.get_many(values)
    for session_id, model in read.items():
        stored = model.model_dump(exclude_unset=True)
        if session_id in ("s1", "s2"):
            kept = {"owner_id", "priority"}
            assert stored == {key: values[session_id][key] for key in kept}
        elif session_id in ("s3", "s4"):
            assert stored == {}
        else:
            assert stored == values[session_id]
    # The session rows stay; the items of deleted lists went with them.
    assert await session_row_ids(engine) == sorted(values)
    _, items = await table_rows(engine)
    assert {row[0] for row in items} == {"s5", "s6", "s7", "s8"}
    found = await store.find_sessions(field("tags").contains("all"))
    assert list(found) == ["s5", "s6", "s7", "s8"]


async def test_delete_many_takes_objects_with_session_ids_and_aliases(engine: AsyncEngine) -> None:
    class Session:
        def __init__(self, session_id: str) -> None:
            self.session_id = session_id

    store = MetadataStore(AllTypes, engine, create_tables=True)
    await store.set_many({"a": {"renamed": "x", "text": "t"}, "b": {"renamed": "y"}})
    await store.delete_many([Session("a"), "b", "a"], keys=["old_name"])
    read = await store.get_many(["a", "b"])
    assert read["a"].model_fields_set == {"text"}
    assert read["b"].model_fields_set == set()


@pytest.mark.parametrize(
    ("sessions", "keys", "raised"),
    [
        ("s1", None, InvalidArgumentError),
        (["s1", ""], None, InvalidSessionIdError),
        (["s1"], ["nope"], UnknownKeyError),
        (None, None, InvalidArgumentError),
    ],
)
async def test_delete_many_checks_everything_first(
    store: Store, engine: AsyncEngine, sessions: Any, keys: Any, raised: type[Exception]
) -> None:
    await store.bind("s1").set_metadata({"title": "kept"})
    with counted_statements(engine) as seen, pytest.raises(raised):
        await store.delete_many(sessions, keys=keys)
    assert seen == []
    assert (await store.bind("s1").get_metadata()).title == "kept"


# ---- scale and scope --------------------------------------------------------------------


async def test_ten_thousand_sessions_load(store: Store) -> None:
    values = {f"s{index:05d}": chat_values(index) for index in range(10_000)}
    await store.set_many(values)
    assert await store.count_sessions() == 10_000
    assert await store.count_sessions(field("owner_id") == "u1") == 3333
    assert await store.count_sessions(field("tags").contains("t2")) == 1500
    sample = [f"s{index:05d}" for index in range(0, 10_000, 997)]
    read = await store.get_many(sample)
    assert {sid: read[sid].model_dump(exclude_unset=True) for sid in sample} == {
        sid: values[sid] for sid in sample
    }
    await store.delete_many(list(values), keys=["tags"])
    assert await store.count_sessions(field("tags").contains("all")) == 0


def test_scoped_views_have_no_bulk_writes() -> None:
    # A scoped bulk write would have to check (and claim) every session in its
    # transaction; until it does, there is no way round the scope's checks.
    assert not hasattr(ScopedStore, "set_many")
    assert not hasattr(ScopedStore, "delete_many")
