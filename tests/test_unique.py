"""Unique fields: declared on the model, enforced by the database on every write path.

Every write or delete path of the store (set_metadata, set_many, conditional and
scoped writes, create=False writes, delete_metadata, delete_many, the caller's
transaction) is held to: a second session is refused with UniqueValueError naming
the key, the value, the session written and the holder, and nothing of the call is
written. get_or_create_by finds the holder or creates one session. Races are in
tests/test_unique_races.py.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import pytest
from pydantic import Field, ValidationError, create_model
from sqlalchemy import column, delete, select, table, text
from sqlalchemy.ext.asyncio import AsyncEngine

from sessionmeta import (
    ConflictError,
    InvalidArgumentError,
    MetadataStore,
    ModelDefinitionError,
    SessionMeta,
    SessionNotInScopeError,
    Unique,
    UniqueValueError,
)
from sessionmeta.core.spec import ModelSpec

CLAIMS = "agent_sessions_metadata_unique"


class Thread(SessionMeta):
    owner_id: str | None = None
    title: str | None = None
    slack_thread: Annotated[str | None, Unique()] = None
    ticket: Annotated[int | None, Unique(per="owner_id")] = None
    tags: list[str] | None = None


@pytest.fixture
async def threads(engine: AsyncEngine) -> MetadataStore[Thread]:
    store = MetadataStore(Thread, engine, create_tables=True)
    await store.create_tables()
    return store


async def stored(store: MetadataStore[Thread], session_id: str) -> dict[str, Any]:
    meta = await store.bind(session_id).get_metadata()
    return {name: getattr(meta, name) for name in sorted(meta.model_fields_set)}


async def claim_rows(engine: AsyncEngine) -> list[tuple[str, str]]:
    claims = table(CLAIMS, column("key"), column("session_id"))
    async with engine.connect() as connection:
        rows = await connection.execute(select(claims.c.key, claims.c.session_id))
        return sorted((row[0], row[1]) for row in rows)


async def delete_value_row(engine: AsyncEngine, session_id: str, key: str) -> None:
    """Delete a value row behind the store's back, as an expiry sweep or a person might."""
    values = table("agent_sessions_metadata", column("session_id"), column("key"))
    async with engine.begin() as connection:
        await connection.execute(
            delete(values).where(values.c.session_id == session_id, values.c.key == key)
        )


# Declarations ----------------------------------------------------------------------------


def test_unique_declarations_are_read_from_the_model() -> None:
    spec = ModelSpec(Thread)
    assert set(spec.unique) == {"slack_thread", "ticket"}
    assert spec.unique["slack_thread"].per is None
    assert spec.unique["ticket"].per == "owner_id"


@pytest.mark.parametrize(
    ("annotation", "default", "message"),
    [
        (Annotated[list[str] | None, Unique()], None, "a list, set, dict or nested model"),
        (Annotated[dict[str, Any] | None, Unique()], None, "cannot be unique"),
        (Annotated[str | None, Unique(per="nobody")], None, r"per='nobody'\) names no field"),
        (Annotated[str | None, Unique(per="external")], None, "cannot name the field itself"),
        (Annotated[str | None, Unique(per="tags")], None, "scope field must hold a single"),
        (Annotated[str | None, Unique(), Unique()], None, "more than once"),
        (Annotated[str | None, Unique], None, "an instance"),
    ],
)
def test_nonsensical_declarations_are_refused_when_the_model_is_used(
    annotation: Any, default: Any, message: str
) -> None:
    model = create_model(
        "Bad",
        __base__=SessionMeta,
        tags=(list[str] | None, None),
        external=(annotation, default),
    )
    with pytest.raises(ModelDefinitionError, match=message):
        ModelSpec(model)


class Aliased(SessionMeta):
    owner: str | None = Field(default=None, alias="owner-id")
    by_name: Annotated[str | None, Unique(per="owner")] = None
    by_alias: Annotated[str | None, Unique(per="owner-id")] = None


def test_per_may_name_the_scope_field_by_its_python_name_or_its_alias() -> None:
    unique = ModelSpec(Aliased).unique
    assert unique["by_name"].per == unique["by_alias"].per == "owner-id"


# Enforcement on every write path -------------------------------------------------------------


async def test_a_second_session_is_refused_naming_key_value_writer_and_holder(
    threads: MetadataStore[Thread],
) -> None:
    await threads.bind("a").set_metadata({"slack_thread": "T1", "title": "A"})
    await threads.bind("a").set_metadata({"slack_thread": "T1"})  # the same session again: fine
    with pytest.raises(UniqueValueError) as caught:
        await threads.bind("b").set_metadata({"slack_thread": "T1", "title": "B"})
    error = caught.value
    assert isinstance(error, ConflictError)
    assert (error.key, error.value, error.session_id, error.holder) == (
        "slack_thread",
        "T1",
        "b",
        "a",
    )
    assert str(error) == (
        "session 'b': 'slack_thread' = 'T1' is unique and session 'a' holds it; nothing was written"
    )
    # Nothing of the call: not the title, not even the session row.
    assert not await threads.bind("b").exists()
    assert await stored(threads, "a") == {"slack_thread": "T1", "title": "A"}


async def test_equal_values_are_one_value_as_equality_finds_them(engine: AsyncEngine) -> None:
    class Numbered(SessionMeta):
        number: Annotated[float | None, Unique()] = None

    store = MetadataStore(Numbered, engine, create_tables=True)
    await store.bind("a").set_metadata({"number": 1})
    with pytest.raises(UniqueValueError):
        await store.bind("b").set_metadata({"number": 1.0})


async def test_none_claims_nothing_and_releases_the_value(
    threads: MetadataStore[Thread],
) -> None:
    await threads.bind("a").set_metadata({"slack_thread": None})
    await threads.bind("b").set_metadata({"slack_thread": None})
    await threads.bind("c").set_metadata({"slack_thread": "T1"})
    await threads.bind("c").set_metadata({"slack_thread": None})
    await threads.bind("a").set_metadata({"slack_thread": "T1"})
    assert await stored(threads, "a") == {"slack_thread": "T1"}


async def test_rewriting_or_deleting_the_key_frees_the_old_value(
    threads: MetadataStore[Thread], engine: AsyncEngine
) -> None:
    meta = threads.bind("a")
    await meta.set_metadata({"slack_thread": "T1", "title": "x"})
    await meta.set_metadata({"slack_thread": "T2"})
    await threads.bind("b").set_metadata({"slack_thread": "T1"})
    await meta.delete_metadata(["slack_thread"])
    await threads.bind("c").set_metadata({"slack_thread": "T2"})
    await threads.bind("c").delete_metadata()
    await threads.bind("d").set_metadata({"slack_thread": "T2"})
    await threads.delete_many(["b"], ["slack_thread"])
    await threads.bind("e").set_metadata({"slack_thread": "T1"})
    await threads.delete_many(["e"])
    await threads.bind("f").set_metadata({"slack_thread": "T1"})
    assert await claim_rows(engine) == [("slack_thread", "d"), ("slack_thread", "f")]


async def test_deleting_the_session_row_frees_its_values(
    threads: MetadataStore[Thread], engine: AsyncEngine
) -> None:
    await threads.bind("a").set_metadata({"slack_thread": "T1"})
    async with engine.begin() as connection:  # as the SDK's clear_session() does
        await connection.execute(text("DELETE FROM agent_sessions WHERE session_id = 'a'"))
    await threads.bind("b").set_metadata({"slack_thread": "T1"})
    assert await claim_rows(engine) == [("slack_thread", "b")]


async def test_set_many_moves_values_between_its_sessions_and_refuses_duplicates(
    threads: MetadataStore[Thread],
) -> None:
    await threads.set_many({"a": {"slack_thread": "T1"}, "b": {"slack_thread": "T2"}})
    # A swap inside one call: each statement's rows agree with each other.
    await threads.set_many({"a": {"slack_thread": "T2"}, "b": {"slack_thread": "T1"}})
    assert (await stored(threads, "a"))["slack_thread"] == "T2"
    assert (await stored(threads, "b"))["slack_thread"] == "T1"
    # Two sessions of one call with one value: refused before any I/O.
    with pytest.raises(UniqueValueError) as caught:
        await threads.set_many({"c": {"slack_thread": "T3"}, "d": {"slack_thread": "T3"}})
    assert (caught.value.session_id, caught.value.holder) == ("d", "c")
    # One held outside the call: the whole call is refused, nothing written.
    with pytest.raises(UniqueValueError) as caught:
        await threads.set_many({"e": {"title": "e"}, "f": {"slack_thread": "T1"}})
    assert (caught.value.key, caught.value.session_id, caught.value.holder) == (
        "slack_thread",
        "f",
        "b",
    )
    assert not await threads.bind("e").exists()
    assert not await threads.bind("f").exists()


async def test_unique_per_scope(threads: MetadataStore[Thread]) -> None:
    await threads.bind("a").set_metadata({"owner_id": "u1", "ticket": 7})
    await threads.bind("b").set_metadata({"owner_id": "u2", "ticket": 7})  # another owner
    with pytest.raises(UniqueValueError) as caught:
        await threads.bind("c").set_metadata({"owner_id": "u1", "ticket": 7})
    assert "among sessions with owner_id = 'u1'" in str(caught.value)
    assert caught.value.holder == "a"
    # Changing the scope key moves the claim: b into u1 meets a's ticket 7.
    with pytest.raises(UniqueValueError) as caught:
        await threads.bind("b").set_metadata({"owner_id": "u1"})
    assert (caught.value.key, caught.value.session_id, caught.value.holder) == ("ticket", "b", "a")
    assert await stored(threads, "b") == {"owner_id": "u2", "ticket": 7}
    # Once a moves away, b may come.
    await threads.bind("a").set_metadata({"owner_id": "u3"})
    await threads.bind("b").set_metadata({"owner_id": "u1"})
    # Sessions without the scope key form one group of their own.
    await threads.bind("x").set_metadata({"ticket": 9})
    with pytest.raises(UniqueValueError, match="among sessions with no owner_id"):
        await threads.bind("y").set_metadata({"ticket": 9})
    # Deleting the scope key moves the claim into that group.
    await threads.bind("z").set_metadata({"owner_id": "u9", "ticket": 9})
    with pytest.raises(UniqueValueError):
        await threads.bind("z").delete_metadata(["owner_id"])
    assert await stored(threads, "z") == {"owner_id": "u9", "ticket": 9}


async def test_conditional_create_false_and_scoped_writes_are_held_too(
    threads: MetadataStore[Thread],
) -> None:
    await threads.bind("a").set_metadata({"owner_id": "u1", "slack_thread": "T1"})
    await threads.bind("b").set_metadata({"owner_id": "u1", "title": "b"})
    version = (await threads.bind("b").get_metadata_versioned()).version
    with pytest.raises(UniqueValueError):
        await threads.bind("b").set_metadata({"slack_thread": "T1"}, expected_version=version)
    with pytest.raises(UniqueValueError):
        await threads.bind("b").set_metadata({"slack_thread": "T1"}, create=False)
    mine = threads.scoped(owner_id="u1")
    with pytest.raises(UniqueValueError):
        await mine.bind("b").set_metadata({"slack_thread": "T1", "title": "changed"})
    with pytest.raises(UniqueValueError):
        await mine.bind("new").set_metadata({"slack_thread": "T1"})
    assert await stored(threads, "b") == {"owner_id": "u1", "title": "b"}
    assert not await threads.bind("new").exists()
    # And they claim what they write.
    await threads.bind("b").set_metadata({"slack_thread": "T2"}, expected_version=version)
    await mine.bind("new").set_metadata({"slack_thread": "T3"})
    with pytest.raises(UniqueValueError):
        await threads.bind("c").set_metadata({"slack_thread": "T3"})
    # A scoped delete frees the value.
    await mine.bind("new").delete_metadata()
    await threads.bind("c").set_metadata({"slack_thread": "T3"})


async def test_add_to_leaves_claims_alone(threads: MetadataStore[Thread]) -> None:
    await threads.bind("a").set_metadata({"slack_thread": "T1"})
    await threads.bind("a").add_to("tags", "x")
    await threads.bind("a").remove_from("tags", "x")
    with pytest.raises(UniqueValueError):
        await threads.bind("b").set_metadata({"slack_thread": "T1"})


async def test_in_the_callers_transaction_a_refusal_is_unique_value_error(
    threads: MetadataStore[Thread], engine: AsyncEngine
) -> None:
    await threads.bind("a").set_metadata({"slack_thread": "T1"})
    with pytest.raises(UniqueValueError) as caught:
        async with engine.begin() as connection:
            await threads.using(connection).bind("b").set_metadata({"slack_thread": "T1"})
    assert (caught.value.key, caught.value.session_id) == ("slack_thread", "b")
    assert not await threads.bind("b").exists()
    async with engine.begin() as connection:
        await threads.using(connection).bind("b").set_metadata({"slack_thread": "T2"})
    with pytest.raises(UniqueValueError):
        await threads.bind("c").set_metadata({"slack_thread": "T2"})


async def test_a_claim_whose_value_row_went_by_other_means_holds_nothing(
    threads: MetadataStore[Thread], engine: AsyncEngine
) -> None:
    await threads.bind("a").set_metadata({"slack_thread": "T1", "title": "a"})
    await delete_value_row(engine, "a", "slack_thread")
    assert await claim_rows(engine) == [("slack_thread", "a")]
    assert await threads.get_or_create_by("slack_thread", "T1") != ("a", False)
    await threads.bind("b").set_metadata({"slack_thread": "T9"})
    await delete_value_row(engine, "b", "slack_thread")
    await threads.bind("c").set_metadata({"slack_thread": "T9"})
    assert ("slack_thread", "c") in await claim_rows(engine)


async def test_validation_comes_first(threads: MetadataStore[Thread]) -> None:
    await threads.bind("a").set_metadata({"slack_thread": "T1"})
    with pytest.raises(ValidationError):
        await threads.bind("b").set_metadata({"slack_thread": "T1", "ticket": "many"})
    assert not await threads.bind("b").exists()


# get_or_create_by ---------------------------------------------------------------------------


async def test_get_or_create_by_creates_once_then_finds(threads: MetadataStore[Thread]) -> None:
    session_id, created = await threads.get_or_create_by(
        "slack_thread", "C1/1700000000.1", {"title": "Refund", "owner_id": "u1"}
    )
    assert created and len(session_id) == 32
    assert await stored(threads, session_id) == {
        "owner_id": "u1",
        "slack_thread": "C1/1700000000.1",
        "title": "Refund",
    }
    again = await threads.get_or_create_by("slack_thread", "C1/1700000000.1", {"title": "other"})
    assert again == (session_id, False)
    assert (await stored(threads, session_id))["title"] == "Refund"  # defaults only on creation


async def test_get_or_create_by_takes_an_id_factory(threads: MetadataStore[Thread]) -> None:
    made = iter(["thread-1", "thread-2"])
    assert await threads.get_or_create_by("slack_thread", "T1", session_id=lambda: next(made)) == (
        "thread-1",
        True,
    )
    assert await threads.get_or_create_by("slack_thread", "T2", session_id=lambda: next(made)) == (
        "thread-2",
        True,
    )


async def test_get_or_create_by_per_scope_looks_up_within_the_scope(
    threads: MetadataStore[Thread],
) -> None:
    one, created_one = await threads.get_or_create_by("ticket", 42, {"owner_id": "u1"})
    two, created_two = await threads.get_or_create_by("ticket", 42, {"owner_id": "u2"})
    assert created_one and created_two and one != two
    assert await threads.get_or_create_by("ticket", 42, {"owner_id": "u1"}) == (one, False)
    view = threads.scoped(owner_id="u2")
    assert await view.get_or_create_by("ticket", 42) == (two, False)
    three, created = await threads.scoped(owner_id="u3").get_or_create_by("ticket", 42)
    assert created and (await stored(threads, three))["owner_id"] == "u3"


async def test_scoped_get_or_create_by_refuses_another_tenants_holder(
    threads: MetadataStore[Thread],
) -> None:
    holder, _ = await threads.get_or_create_by("slack_thread", "T1", {"owner_id": "u1"})
    assert await threads.scoped(owner_id="u1").get_or_create_by("slack_thread", "T1") == (
        holder,
        False,
    )
    with pytest.raises(SessionNotInScopeError):
        await threads.scoped(owner_id="u2").get_or_create_by("slack_thread", "T1")


@pytest.mark.parametrize(
    ("key", "value", "defaults", "message"),
    [
        ("title", "x", None, "not declared Unique()"),
        ("slack_thread", None, None, "None is no value"),
        ("slack_thread", "T1", {"slack_thread": "T2"}, "defaults give 'slack_thread' again"),
        ("slack_thread", "T1", ["title"], "defaults must be a mapping"),
    ],
)
async def test_get_or_create_by_refuses_bad_arguments_before_any_io(
    threads: MetadataStore[Thread], key: str, value: Any, defaults: Any, message: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        await threads.get_or_create_by(key, value, defaults)
    assert await threads.count_sessions() == 0


async def test_get_or_create_by_conflicting_defaults_raise_and_write_nothing(
    threads: MetadataStore[Thread],
) -> None:
    await threads.bind("a").set_metadata({"owner_id": "u1", "ticket": 5})
    with pytest.raises(UniqueValueError) as caught:
        await threads.get_or_create_by("slack_thread", "T1", {"owner_id": "u1", "ticket": 5})
    assert (caught.value.key, caught.value.holder) == ("ticket", "a")
    assert await threads.count_sessions() == 1


def test_the_sql_and_the_core_agree_on_the_empty_scope() -> None:
    from sessionmeta.core import claims as core_claims
    from sessionmeta.sql import claims as sql_claims

    assert sql_claims.NO_SCOPE == core_claims.NO_SCOPE


async def test_an_expired_value_holds_no_claim(threads: MetadataStore[Thread]) -> None:
    """An expired value reads as missing, so it no longer keeps another session from it."""
    await threads.bind("a").set_metadata({"slack_thread": "T1"}, ttl=dt.timedelta(minutes=5))
    with pytest.raises(UniqueValueError):
        await threads.bind("b").set_metadata({"slack_thread": "T1"})

    later = MetadataStore(Thread, threads.engine, clock_offset=dt.timedelta(minutes=10))
    assert (await later.bind("a").get_metadata()).slack_thread is None
    await later.bind("b").set_metadata({"slack_thread": "T1"})
    assert (await later.bind("b").get_metadata()).slack_thread == "T1"
    assert await later.get_or_create_by("slack_thread", "T1") == ("b", False)
    assert await claim_rows(threads.engine) == [("slack_thread", "b")]
