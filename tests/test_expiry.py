"""Expiry: keys written with a ttl (or a field's ``Expires``) read as missing once the
database's clock passes it, on every read and query path, and ``sweep`` deletes them.

The clock is the database's: a store made with ``clock_offset`` sees it moved on, so
most tests look at tomorrow without waiting; one test waits for a real second.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Annotated, Any

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from sessionmeta import (
    Expires,
    InvalidArgumentError,
    MetadataStore,
    ModelDefinitionError,
    SessionMeta,
    check_store,
    field,
    migrations,
)

from .racing import Tally, kind, race, run_rounds
from .test_cli import assert_refused, run

HOUR = dt.timedelta(hours=1)
ITEMS = "agent_sessions_metadata_items"


class ChatMeta(SessionMeta):
    owner_id: str | None = None
    title: str | None = None
    tags: list[str] | None = None
    priority: int | None = None
    incognito: bool | None = None
    # Each write of a draft expires half an hour after it, unless the call says otherwise.
    draft: Annotated[str | None, Expires(dt.timedelta(minutes=30))] = None


Store = MetadataStore[ChatMeta]


@pytest.fixture
async def chats(engine: AsyncEngine) -> Store:
    store = MetadataStore(ChatMeta, engine)
    await store.create_tables()
    return store


def at(store: Store, offset: dt.timedelta) -> Store:
    """The same tables, seen through a database clock moved on by ``offset``."""
    return MetadataStore(ChatMeta, store.engine, clock_offset=offset)


async def raw_count(engine: AsyncEngine, table: str) -> int:
    async with engine.connect() as connection:
        return int(await connection.scalar(text(f"SELECT count(*) FROM {table}")) or 0)


async def test_expired_keys_read_as_missing_everywhere(chats: Store) -> None:
    await chats.bind("s1").set_metadata(
        {"owner_id": "u1", "title": "Secret", "tags": ["a", "b"], "priority": 5}, ttl=HOUR
    )
    await chats.bind("s2").set_metadata({"owner_id": "u1", "title": "Kept", "priority": 1})
    later = at(chats, 2 * HOUR)
    before = at(chats, dt.timedelta(minutes=59))

    # Before the hour is up, everything is there.
    assert (await before.bind("s1").get_metadata()).title == "Secret"
    assert await before.find_sessions(field("tags").contains("a")) == ["s1"]

    # After it: the one-session reads.
    read = await later.bind("s1").get_metadata()
    assert read.model_fields_set == set() and read.title is None
    assert (await later.bind("s1").get_metadata(keys=["title"])).title is None
    versioned = await later.bind("s1").get_metadata_versioned()
    assert versioned.metadata.model_fields_set == set()
    assert await later.bind("s1").exists()  # the session row stays
    many = await later.get_many(["s1", "s2"])
    assert many["s1"].model_fields_set == set() and many["s2"].title == "Kept"

    # Queries: equality, membership, ranges, contains, exists, and the negations.
    assert await later.find_sessions_by_metadata("owner_id", "u1") == ["s2"]
    assert await later.find_sessions(field("title") == "Secret") == []
    assert await later.find_sessions(field("title").is_in(["Secret", "Kept"])) == ["s2"]
    assert await later.find_sessions(field("priority") > 3) == []
    assert await later.find_sessions(field("tags").contains("a")) == []
    assert await later.find_sessions(field("tags").contains("a") | (field("priority") == 1)) == [
        "s2"
    ]
    assert await later.find_sessions(field("title").exists()) == ["s2"]
    assert await later.find_sessions(field("title").missing()) == ["s1"]
    assert await later.find_sessions(field("title") != "Kept") == ["s1"]
    assert await later.find_sessions(field("title").not_in(["Kept"])) == ["s1"]
    assert await later.count_sessions({"owner_id": "u1"}) == 1
    # Inside a group, each key's row is joined once: the expired row is no row.
    grouped = (field("priority") > 3) | (field("title") == "Secret")
    assert await later.find_sessions(grouped, field("owner_id").missing()) == []
    assert await later.find_sessions(grouped | field("owner_id").missing()) == ["s1"]

    # Ordering by an expired key sorts as a session lacking it; listings leave it out.
    page = await later.list_sessions(order_by="-priority")
    assert [(item.session_id, item.metadata.priority) for item in page] == [
        ("s2", 1),
        ("s1", None),
    ]
    first = await later.find_sessions(order_by="priority", limit=1)
    assert first == ["s1"]
    assert await later.find_sessions(order_by="priority", cursor=first.next_cursor) == ["s2"]

    # Scoped views see the expired owner as no owner: s1 is no tenant's any more.
    tenant = later.scoped(owner_id="u1")
    assert await tenant.find_sessions() == ["s2"]
    assert not await tenant.bind("s1").exists()

    # check reads only what is live.
    report = await check_store(later)
    assert report.rows == 3 and report.ok

    # The real clock still sees it all.
    assert (await chats.bind("s1").get_metadata()).tags == ["a", "b"]


async def test_field_default_call_ttl_and_rewrites(chats: Store) -> None:
    meta = chats.bind("s1")
    await meta.set_metadata({"draft": "typing...", "title": "T"})
    soon, later = at(chats, dt.timedelta(minutes=29)), at(chats, dt.timedelta(minutes=31))
    assert (await soon.bind("s1").get_metadata()).draft == "typing..."
    read = await later.bind("s1").get_metadata()
    assert read.draft is None and read.title == "T"  # the field's default only

    # A call's ttl beats the field's default, for every key it writes.
    await meta.set_metadata({"draft": "longer", "title": "Short"}, ttl=2 * HOUR)
    read = await at(chats, HOUR).bind("s1").get_metadata()
    assert (read.draft, read.title) == ("longer", "Short")
    read = await at(chats, 3 * HOUR).bind("s1").get_metadata()
    assert (read.draft, read.title) == (None, None)

    # Rewritten without a ttl, a key loses its expiry; a field with a default takes it again.
    await meta.set_metadata({"draft": "again", "title": "Forever"})
    read = await at(chats, 3 * HOUR).bind("s1").get_metadata()
    assert (read.draft, read.title) == (None, "Forever")
    assert (await soon.bind("s1").get_metadata()).draft == "again"

    # add_to rewrites the key: the list restarts its expiry from the write, or loses it.
    await meta.set_metadata({"tags": ["a"]}, ttl=HOUR)
    await meta.add_to("tags", "b")
    assert (await at(chats, 2 * HOUR).bind("s1").get_metadata()).tags == ["a", "b"]
    # An expired list counts as empty for add_to, as a missing one does.
    await meta.set_metadata({"tags": ["old"]}, ttl=HOUR)
    await at(chats, 2 * HOUR).bind("s1").add_to("tags", "new")
    assert (await chats.bind("s1").get_metadata()).tags == ["new"]
    assert await chats.find_sessions(field("tags").contains("old")) == []


async def test_set_many_scoped_and_versions(chats: Store) -> None:
    await chats.set_many(
        {"s1": {"owner_id": "u1", "title": "a"}, "s2": {"owner_id": "u1", "title": "b"}},
        ttl=HOUR,
    )
    later = at(chats, 2 * HOUR)
    assert await later.count_sessions() == 2  # the session rows stay
    assert await later.count_sessions(field("owner_id").exists()) == 0

    # A scoped claim keeps the tenant's key when the rest expires.
    tenant = chats.scoped(owner_id="u2")
    await tenant.bind("s3").set_metadata({"title": "mine"}, ttl=HOUR)
    assert await at(chats, 2 * HOUR).scoped(owner_id="u2").find_sessions() == ["s3"]
    assert (await at(chats, 2 * HOUR).bind("s3").get_metadata()).title is None

    # A version read after expiry covers the live keys only; a write at it succeeds.
    read = await later.bind("s1").get_metadata_versioned()
    await later.bind("s1").set_metadata({"title": "new"}, expected_version=read.version)
    assert (await chats.bind("s1").get_metadata()).title == "new"


@pytest.mark.parametrize(
    "ttl", [dt.timedelta(0), dt.timedelta(seconds=-1), 60, dt.timedelta(days=40_000), "1h"]
)
async def test_bad_ttls_are_refused_before_any_io(chats: Store, ttl: Any) -> None:
    with pytest.raises(InvalidArgumentError, match="session 's1': ttl must be"):
        await chats.bind("s1").set_metadata({"title": "x"}, ttl=ttl)
    with pytest.raises(InvalidArgumentError, match="set_many: ttl must be"):
        await chats.set_many({"s1": {"title": "x"}}, ttl=ttl)
    with pytest.raises(InvalidArgumentError, match="session 's1': ttl must be"):
        await chats.scoped(owner_id="u1").bind("s1").set_metadata({"title": "x"}, ttl=ttl)
    assert not await chats.exists("s1")


def test_expires_must_be_a_positive_timedelta() -> None:
    with pytest.raises(InvalidArgumentError, match="Expires: ttl must be"):
        Expires(dt.timedelta(0))

    class Twice(SessionMeta):
        draft: Annotated[str | None, Expires(HOUR), Expires(HOUR)] = None

    with pytest.raises(ModelDefinitionError, match=r"Twice\.draft declares Expires 2 times"):
        MetadataStore(Twice, _sqlite_engine())


def _sqlite_engine() -> AsyncEngine:
    from sqlalchemy.ext.asyncio import create_async_engine

    return create_async_engine("sqlite+aiosqlite://")


async def test_sweep_deletes_expired_rows_and_items_in_batches(chats: Store) -> None:
    engine = chats.engine
    await chats.set_many(
        {f"s{n}": {"title": "t", "tags": ["a", f"x{n}"]} for n in range(25)}, ttl=HOUR
    )
    await chats.set_many({f"k{n}": {"title": "kept", "tags": ["a"]} for n in range(5)})
    await chats.bind("s0").set_metadata({"title": "rewritten"})  # no expiry any more
    assert await raw_count(engine, "agent_sessions_metadata") == 60
    assert await raw_count(engine, ITEMS) == 55

    # Nothing has expired on the real clock.
    assert (await chats.sweep()).rows == 0
    later = at(chats, 2 * HOUR)
    limited = await later.sweep(batch_size=10, max_batches=2)
    assert (limited.batches, limited.rows) == (2, 20)
    rest = await later.sweep(batch_size=10)
    assert limited.rows + rest.rows == 49 and rest.batches >= 3
    assert (await later.sweep()).rows == 0

    assert await raw_count(engine, "agent_sessions_metadata") == 11
    # Only the kept sessions' items are left: s0's tags expired with their value.
    assert await raw_count(engine, ITEMS) == 5
    assert await chats.find_sessions(field("tags").contains("a")) == [f"k{n}" for n in range(5)]
    assert await chats.count_sessions() == 30  # session rows stay
    assert (await chats.bind("s0").get_metadata()).title == "rewritten"


@pytest.mark.parametrize("argument", [{"batch_size": 0}, {"max_batches": 0}, {"pause": -1}])
async def test_sweep_arguments_are_checked(chats: Store, argument: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgumentError, match="sweep: "):
        await chats.sweep(**argument)


ROUNDS = 40


async def test_sweep_never_takes_a_key_rewritten_meanwhile(
    engine: AsyncEngine, backend: str
) -> None:
    """A sweep raced against a rewrite of the expired key (without a ttl): the rewritten
    value stays, with its items, whichever runs first."""
    chats = MetadataStore(ChatMeta, engine)
    await chats.create_tables()
    later = at(chats, 2 * HOUR)
    tally = Tally(backend, ROUNDS)

    async def one_round(index: int, rng: Any) -> None:
        session_id = f"r{index}"
        await chats.bind(session_id).set_metadata({"tags": ["old"], "title": "t"}, ttl=HOUR)
        swept, written = await race(
            tally,
            rng,
            lambda: later.sweep(batch_size=1),
            lambda: chats.bind(session_id).set_metadata({"tags": ["new", f"n{index}"]}),
        )
        tally.outcomes[f"sweep {kind(swept)}"] += 1
        tally.outcomes[f"write {kind(written)}"] += 1
        read = await later.bind(session_id).get_metadata()
        tally.expect(read.tags == ["new", f"n{index}"], "rewritten value kept", index, read)
        found = await later.find_sessions(field("tags").contains(f"n{index}"))
        tally.expect(found == [session_id], "its items kept", index, found)

    await run_rounds(ROUNDS, 4, 7, one_round)
    await later.sweep()
    tally.verdict(["sweep ok"], ["write ok"])
    # Every expired title went; every rewritten list stayed, with its items only.
    assert await raw_count(engine, "agent_sessions_metadata") == ROUNDS
    assert await raw_count(engine, ITEMS) == 2 * ROUNDS


async def test_expiry_on_the_real_clock(chats: Store) -> None:
    """No offset: a key written with a ttl of one second is gone two seconds later."""
    await chats.bind("s1").set_metadata(
        {"title": "brief", "tags": ["a"]}, ttl=dt.timedelta(seconds=1)
    )
    await chats.bind("s1").set_metadata({"owner_id": "u1"})
    assert (await chats.bind("s1").get_metadata()).title == "brief"
    assert await chats.find_sessions(field("tags").contains("a")) == ["s1"]
    await asyncio.sleep(2.0)
    read = await chats.bind("s1").get_metadata()
    assert read.model_fields_set == {"owner_id"}
    assert await chats.find_sessions(field("tags").contains("a")) == []
    assert (await chats.sweep()).rows == 2
    assert (await chats.bind("s1").get_metadata()).owner_id == "u1"


async def make_pre_expiry_table(engine: AsyncEngine, backend: str) -> None:
    """The metadata table as sessionmeta created it before expiry: no expires_at, and
    query indexes without it."""
    table = "agent_sessions_metadata"
    key = engine.dialect.identifier_preparer.quote("key")
    async with engine.begin() as connection:
        for index in ("expires", "key_hash", "key_sort"):
            on = f" ON {table}" if backend == "mysql" else ""
            await connection.execute(text(f"DROP INDEX idx_{table}_{index}{on}"))
        await connection.execute(text(f"ALTER TABLE {table} DROP COLUMN expires_at"))
        for index, column in (("key_hash", "value_hash"), ("key_sort", "sort_key")):
            await connection.execute(
                text(f"CREATE INDEX idx_{table}_{index} ON {table} ({key}, {column}, session_id)")
            )


async def index_columns(engine: AsyncEngine) -> dict[str, list[str]]:
    async with engine.connect() as connection:
        found = await connection.run_sync(
            lambda sync: inspect(sync).get_indexes("agent_sessions_metadata")
        )
    return {str(index["name"]): [str(c) for c in index["column_names"]] for index in found}


async def test_add_expiry_migrates_tables_made_before_it(chats: Store, backend: str) -> None:
    engine = chats.engine
    await chats.bind("s1").set_metadata({"title": "old", "tags": ["a"]})
    made = await index_columns(engine)
    await make_pre_expiry_table(engine, backend)
    assert "idx_agent_sessions_metadata_expires" not in await index_columns(engine)
    migration = pytest.importorskip("alembic.migration")
    operations = pytest.importorskip("alembic.operations")

    def run(sync: Any) -> None:
        op = operations.Operations(migration.MigrationContext.configure(sync))
        migrations.add_expiry(op)
        migrations.add_expiry(op)  # a second run finds everything there

    async with engine.begin() as connection:
        await connection.run_sync(run)
    # The same indexes as create_tables makes.
    assert await index_columns(engine) == made
    fresh = MetadataStore(ChatMeta, engine)
    assert (await fresh.bind("s1").get_metadata()).title == "old"
    await fresh.bind("s2").set_metadata({"title": "new", "tags": ["a"]}, ttl=HOUR)
    later = at(fresh, 2 * HOUR)
    assert (await later.bind("s2").get_metadata()).title is None
    assert await later.find_sessions(field("tags").contains("a")) == ["s1"]
    assert (await later.sweep()).rows == 2


async def test_sweep_command(chats: Store, db_url: str) -> None:
    await chats.set_many({f"s{n}": {"title": "t", "tags": ["a"]} for n in range(3)}, ttl=HOUR)
    await chats.bind("k").set_metadata({"title": "kept"})
    nothing = await run("sweep", url=db_url)
    assert (nothing.code, nothing.out) == (0, "deleted 0 expired rows in 0 batches\n"), nothing
    # Expired rows are what the database's clock says: move them into the past.
    async with chats.engine.begin() as connection:
        await connection.execute(
            text(
                "UPDATE agent_sessions_metadata SET expires_at = :past WHERE expires_at IS NOT NULL"
            ),
            {"past": dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)},
        )
    swept = await run("sweep", "--batch-size", "4", "--max-batches", "1", "--json", url=db_url)
    assert (swept.code, swept.json()) == (0, {"deleted_rows": 4, "batches": 1}), swept
    rest = await run("sweep", "--pause", "0.01", url=db_url)
    assert (rest.code, rest.out) == (0, "deleted 2 expired rows in 1 batch\n"), rest
    assert await raw_count(chats.engine, "agent_sessions_metadata") == 1
    assert_refused(await run("sweep", "--batch-size", "0", url=db_url), "--batch-size")


async def test_sweep_beside_deletes_of_the_session_row(engine: AsyncEngine, backend: str) -> None:
    """A sweep raced against a delete of the session row (as the Agents SDK's
    clear_session does, cascading to the metadata): both succeed, neither deadlocks."""
    chats = MetadataStore(ChatMeta, engine)
    await chats.create_tables()
    later = at(chats, 2 * HOUR)
    tally = Tally(backend, ROUNDS)

    async def delete_session(session_id: str) -> None:
        async with engine.begin() as connection:
            await connection.execute(
                text("DELETE FROM agent_sessions WHERE session_id = :sid"), {"sid": session_id}
            )

    async def one_round(index: int, rng: Any) -> None:
        ids = [f"d{index}-{n}" for n in range(3)]
        await chats.set_many({sid: {"tags": ["a", "b"], "title": "t"} for sid in ids}, ttl=HOUR)
        swept, deleted = await race(
            tally, rng, lambda: later.sweep(batch_size=4), lambda: delete_session(ids[1])
        )
        tally.outcomes[f"sweep {kind(swept)}"] += 1
        tally.outcomes[f"delete {kind(deleted)}"] += 1
        tally.expect(kind(swept) == "ok", "sweep succeeded", index, swept)
        tally.expect(kind(deleted) == "ok", "session delete succeeded", index, deleted)

    await run_rounds(ROUNDS, 4, 11, one_round)
    await later.sweep()
    tally.verdict(["sweep ok"], ["delete ok"])
    assert await raw_count(engine, "agent_sessions_metadata") == 0
    assert await raw_count(engine, ITEMS) == 0
