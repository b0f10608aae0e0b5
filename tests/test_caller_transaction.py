"""``store.using(connection)``: the store's whole API inside the caller's transaction.

The view runs every statement on the caller's ``AsyncConnection`` (or the connection
of an ``AsyncSession``) and never commits or rolls back by itself: the caller's
commit keeps the metadata, the session row and the application's own rows together,
and the caller's rollback undoes them together. Checked on every backend, from a
separate connection (``tests/dbstate.py``).
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sessionmeta import (
    ConflictError,
    MetadataStore,
    SessionNotInScopeError,
    UnknownKeyError,
    field,
)

from .dbstate import all_value_rows, session_ids, stored_rows
from .models import ChatMeta

# The application's own tables, written in the same transactions as the metadata.
APP_TABLES = MetaData()
ORDERS = Table(
    "app_orders",
    APP_TABLES,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("session_id", String(255), nullable=False),
    Column("note", String(100), nullable=False),
)


class Base(DeclarativeBase):
    pass


class Ticket(Base):
    """An ORM-mapped application row, added through an ``AsyncSession``."""

    __tablename__ = "app_tickets"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    session_id: Mapped[str] = mapped_column(String(255))


class Abort(Exception):
    """Raised inside ``session.begin()`` to make the ORM roll the transaction back."""


@pytest.fixture
async def app_tables(engine: AsyncEngine) -> None:
    # Before any transaction of the test: DDL commits implicitly on MySQL.
    async with engine.begin() as connection:
        await connection.run_sync(APP_TABLES.create_all)
        await connection.run_sync(Base.metadata.create_all)


async def order_notes(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as connection:
        rows = await connection.execute(select(ORDERS.c.note).order_by(ORDERS.c.id))
        return [row[0] for row in rows]


async def ticket_ids(engine: AsyncEngine) -> list[int]:
    async with engine.connect() as connection:
        rows = await connection.execute(select(Ticket.id).order_by(Ticket.id))
        return [row[0] for row in rows]


async def item_rows(engine: AsyncEngine) -> int:
    """Rows of the items table (the elements of list values, which serve ``contains``)."""
    async with engine.connect() as connection:
        count = await connection.scalar(text("SELECT COUNT(*) FROM agent_sessions_metadata_items"))
    return int(count or 0)


async def assert_nothing_stored(engine: AsyncEngine) -> None:
    assert await session_ids(engine) == []
    assert await all_value_rows(engine) == 0
    assert await item_rows(engine) == 0


async def test_rollback_undoes_the_metadata_and_the_session_row(
    store: MetadataStore[ChatMeta], engine: AsyncEngine
) -> None:
    async with engine.connect() as connection:
        transaction = await connection.begin()
        meta = store.using(connection).bind("s1")
        await meta.set_metadata({"owner_id": "u1", "title": "Draft", "tags": ["a", "b"]})
        await meta.add_to("tags", "c")
        # The view neither committed nor rolled back: the caller's transaction is the same one.
        assert connection.get_transaction() is transaction
        assert transaction.is_active
        await transaction.rollback()
    assert await stored_rows(engine, "s1") == {}
    await assert_nothing_stored(engine)


async def test_commit_keeps_the_metadata_and_the_session_row(
    store: MetadataStore[ChatMeta], engine: AsyncEngine
) -> None:
    async with engine.connect() as connection:
        transaction = await connection.begin()
        meta = store.using(connection).bind("s1")
        await meta.set_metadata({"owner_id": "u1", "title": "Draft", "tags": ["a"]})
        # Nothing is visible outside the transaction before the caller commits.
        assert await session_ids(engine) == []
        assert await stored_rows(engine, "s1") == {}
        assert connection.get_transaction() is transaction
        await transaction.commit()
    assert await session_ids(engine) == ["s1"]
    assert set(await stored_rows(engine, "s1")) == {"owner_id", "title", "tags"}
    assert await item_rows(engine) == 1
    # And the store, on its own connections, reads what the transaction wrote.
    assert await store.bind("s1").get_metadata() == ChatMeta(
        owner_id="u1", title="Draft", tags=["a"]
    )
    assert await store.find_sessions(field("tags").contains("a")) == ["s1"]


async def test_bound_calls_see_the_transaction_s_own_writes(
    store: MetadataStore[ChatMeta], engine: AsyncEngine
) -> None:
    async with engine.connect() as connection:
        transaction = await connection.begin()
        meta = store.using(connection).bind("s1")
        await meta.set_metadata({"owner_id": "u1", "title": "One", "tags": ["a"], "priority": 1})
        assert await meta.get_metadata() == ChatMeta(
            owner_id="u1", title="One", tags=["a"], priority=1
        )
        only = await meta.get_metadata(keys=["title"])
        assert only.model_fields_set == {"title"} and only.title == "One"

        await meta.add_to("tags", "b")
        assert (await meta.get_metadata()).tags == ["a", "b"]

        versioned = await meta.get_metadata_versioned()
        assert versioned.metadata.tags == ["a", "b"]
        await meta.set_metadata({"title": "Renamed"}, expected_version=versioned.version)
        assert (await meta.get_metadata()).title == "Renamed"

        await meta.delete_metadata(keys=["title"])
        read = await meta.get_metadata()
        assert read.title is None and read.model_fields_set == {"owner_id", "tags", "priority"}

        assert connection.get_transaction() is transaction and transaction.is_active
        await transaction.rollback()
    await assert_nothing_stored(engine)


async def test_queries_see_the_transaction_s_own_writes(
    store: MetadataStore[ChatMeta], engine: AsyncEngine
) -> None:
    async with engine.connect() as connection:
        transaction = await connection.begin()
        view = store.using(connection)
        await view.bind("s1").set_metadata(
            {"owner_id": "u1", "title": "One", "tags": ["a"], "priority": 1}
        )
        await view.bind("s2").set_metadata({"owner_id": "u1", "title": "Two", "priority": 5})
        await view.bind("s3").set_metadata({"owner_id": "u2", "title": "Three", "priority": 9})

        assert await view.find_sessions(field("owner_id") == "u1") == ["s1", "s2"]
        assert await view.find_sessions(field("priority") > 3) == ["s2", "s3"]
        assert await view.find_sessions(field("tags").contains("a")) == ["s1"]

        page = await view.list_sessions(field("owner_id") == "u1", order_by="-priority")
        assert [(item.session_id, item.metadata.priority) for item in page] == [
            ("s2", 5),
            ("s1", 1),
        ]

        assert await view.count_sessions() == 3
        assert await view.count_sessions(field("owner_id") == "u1") == 2

        many = await view.get_many(["s1", "s3", "never-written"])
        assert many["s1"].tags == ["a"]
        assert many["s3"].title == "Three"
        assert many["never-written"].model_fields_set == set()

        assert connection.get_transaction() is transaction and transaction.is_active
        await transaction.rollback()
    await assert_nothing_stored(engine)


async def test_find_sessions_by_metadata_sees_the_transaction_s_own_writes(
    store: MetadataStore[ChatMeta], engine: AsyncEngine
) -> None:
    async with engine.connect() as connection:
        transaction = await connection.begin()
        view = store.using(connection)
        await view.bind("s1").set_metadata({"owner_id": "u1"})
        assert await view.find_sessions_by_metadata("owner_id", "u1") == ["s1"]
        await transaction.rollback()
    await assert_nothing_stored(engine)


async def test_scoped_view_runs_inside_the_transaction(
    store: MetadataStore[ChatMeta], engine: AsyncEngine
) -> None:
    async with engine.connect() as connection:
        transaction = await connection.begin()
        view = store.using(connection)
        await view.bind("s1").set_metadata({"owner_id": "u1", "title": "Mine"})
        await view.bind("s2").set_metadata({"owner_id": "u2", "title": "Theirs"})

        tenant = view.scoped(owner_id="u1")
        assert await tenant.find_sessions() == ["s1"]
        assert await tenant.count_sessions() == 1
        assert [item.session_id for item in await tenant.list_sessions()] == ["s1"]
        assert (await tenant.bind("s1").get_metadata()).title == "Mine"
        with pytest.raises(SessionNotInScopeError):
            await tenant.bind("s2").get_metadata()

        # Writing to a session nobody owns claims it for the tenant, in the same transaction.
        await tenant.bind("s3").set_metadata({"title": "Claimed"})
        assert (await view.bind("s3").get_metadata()).owner_id == "u1"
        assert await tenant.find_sessions() == ["s1", "s3"]

        assert connection.get_transaction() is transaction and transaction.is_active
        await transaction.rollback()
    await assert_nothing_stored(engine)


async def test_conflict_inside_the_transaction_leaves_it_usable(
    store: MetadataStore[ChatMeta], engine: AsyncEngine
) -> None:
    async with engine.connect() as connection:
        transaction = await connection.begin()
        meta = store.using(connection).bind("s1")
        await meta.set_metadata({"title": "First"})
        stale = await meta.get_metadata_versioned()
        await meta.set_metadata({"title": "Second"})
        with pytest.raises(ConflictError):
            await meta.set_metadata({"title": "Lost"}, expected_version=stale.version)
        # The conflict did not end the caller's transaction, nor undo its earlier writes.
        assert connection.get_transaction() is transaction and transaction.is_active
        assert (await meta.get_metadata()).title == "Second"
        fresh = await meta.get_metadata_versioned()
        await meta.set_metadata({"title": "Third"}, expected_version=fresh.version)
        await transaction.commit()
    assert await stored_rows(engine, "s1") == {"title": '"Third"'}


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
@pytest.mark.usefixtures("app_tables")
async def test_application_rows_share_the_transaction_s_outcome(
    store: MetadataStore[ChatMeta], engine: AsyncEngine, outcome: str
) -> None:
    async with engine.connect() as connection:
        transaction = await connection.begin()
        await connection.execute(insert(ORDERS).values(id=1, session_id="s1", note="before"))
        await store.using(connection).bind("s1").set_metadata({"owner_id": "u1", "tags": ["x"]})
        await connection.execute(insert(ORDERS).values(id=2, session_id="s1", note="after"))
        if outcome == "commit":
            await transaction.commit()
        else:
            await transaction.rollback()
    if outcome == "commit":
        assert await order_notes(engine) == ["before", "after"]
        assert await session_ids(engine) == ["s1"]
        assert set(await stored_rows(engine, "s1")) == {"owner_id", "tags"}
    else:
        assert await order_notes(engine) == []
        await assert_nothing_stored(engine)


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
@pytest.mark.usefixtures("app_tables")
async def test_orm_session_pattern(
    store: MetadataStore[ChatMeta], engine: AsyncEngine, outcome: str
) -> None:
    async def work() -> None:
        async with AsyncSession(engine) as session, session.begin():
            meta = store.using(await session.connection())
            session.add(Ticket(id=7, session_id="s1"))
            await session.flush()  # the ticket row is in the transaction from here on
            await meta.bind("s1").set_metadata({"owner_id": "u1", "title": "From the ORM"})
            assert (await meta.bind("s1").get_metadata()).title == "From the ORM"
            assert await meta.find_sessions(field("owner_id") == "u1") == ["s1"]
            assert (await session.get(Ticket, 7)) is not None
            if outcome == "rollback":
                raise Abort

    if outcome == "commit":
        await work()
        assert await ticket_ids(engine) == [7]
        assert await session_ids(engine) == ["s1"]
        assert await stored_rows(engine, "s1") == {
            "owner_id": '"u1"',
            "title": '"From the ORM"',
        }
    else:
        with pytest.raises(Abort):
            await work()
        assert await ticket_ids(engine) == []
        await assert_nothing_stored(engine)


@pytest.mark.usefixtures("app_tables")
async def test_invalid_value_writes_nothing_and_leaves_the_transaction_usable(
    store: MetadataStore[ChatMeta], engine: AsyncEngine
) -> None:
    async with engine.connect() as connection:
        transaction = await connection.begin()
        view = store.using(connection)
        await view.bind("s1").set_metadata({"owner_id": "u1"})

        # A valid key beside an invalid one: neither is written.
        with pytest.raises(ValidationError):
            await view.bind("s1").set_metadata({"title": "Not written", "priority": "high"})
        # A session not yet in the database: not even its session row is created.
        with pytest.raises(ValidationError):
            await view.bind("s2").set_metadata({"owner_id": "u2", "priority": "high"})
        with pytest.raises(UnknownKeyError):
            await view.bind("s2").set_metadata({"no_such_key": 1})

        # The caller's transaction is still the same one, and still takes statements.
        assert connection.get_transaction() is transaction and transaction.is_active
        assert await connection.scalar(select(1)) == 1
        await connection.execute(insert(ORDERS).values(id=1, session_id="s1", note="after"))
        await view.bind("s1").set_metadata({"title": "Written after"})
        assert await view.bind("s1").get_metadata() == ChatMeta(
            owner_id="u1", title="Written after"
        )
        assert (await view.bind("s2").get_metadata()).model_fields_set == set()
        await transaction.commit()

    assert await session_ids(engine) == ["s1"]
    assert await stored_rows(engine, "s1") == {"owner_id": '"u1"', "title": '"Written after"'}
    assert await order_notes(engine) == ["after"]
