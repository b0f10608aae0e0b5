"""The shelf of idle checked-out connections (``io.shelf``): what it keeps, for how long,
where it is off, and that dispose(), event loops, cancellations and the pool's size
limit find every connection where it should be."""

from __future__ import annotations

import asyncio
import gc
import logging
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool, StaticPool

from sessionmeta import MetadataStore
from sessionmeta.io import shelf
from sessionmeta.io.shelf import CIRCULATION_S, LINGER_S

from .conftest import require_server, reset_database, server_url
from .models import ChatMeta

# A bound on waiting for something that should happen soon; never a timing assertion.
HANG_GUARD_S = 60


async def _store_on(engine: AsyncEngine) -> MetadataStore[ChatMeta]:
    store = MetadataStore(ChatMeta, engine, create_tables=True)
    await store.create_tables()
    return store


async def _until(condition: Any, what: str) -> None:
    for _ in range(HANG_GUARD_S * 100):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not within {HANG_GUARD_S} s: {what}")


def _shelved(engine: AsyncEngine) -> int:
    shelves = engine.sync_engine.__dict__.get("_sessionmeta_shelves")
    if shelves is None:
        return 0
    return sum(len(shelf.held) for shelf in shelves.by_loop.values())


@pytest.fixture
def long_linger(monkeypatch: pytest.MonkeyPatch) -> None:
    """A linger long enough that what a test shelved is still there when it looks, on a
    machine that may pause for more than 20 ms."""
    monkeypatch.setattr(shelf, "LINGER_S", 30.0)


@pytest.fixture
async def own_engine(db_url: str, engine: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    """An engine of the test's own on the emptied database (the ``engine`` fixture's)."""
    mine = create_async_engine(db_url)
    try:
        yield mine
    finally:
        await mine.dispose()


async def test_a_connection_waits_on_the_shelf_then_goes_back_to_the_pool(
    own_engine: AsyncEngine,
) -> None:
    store = await _store_on(own_engine)
    meta = store.bind("s")
    await meta.set_metadata({"title": "one"})
    assert own_engine.pool.checkedout() == 1  # type: ignore[attr-defined]
    assert _shelved(own_engine) == 1
    # Its dispose() listener leaves other users' connections as fast as they were: no
    # engine-wide flag telling each Connection to look for event listeners.
    sync_engine = own_engine.sync_engine
    assert sync_engine._has_events == type(sync_engine)._has_events
    # The next call takes it: nothing more is checked out.
    assert (await meta.get_metadata()).title == "one"
    assert own_engine.pool.checkedout() == 1  # type: ignore[attr-defined]
    await _until(lambda: own_engine.pool.checkedout() == 0, "the shelf returned its connection")  # type: ignore[attr-defined]
    assert _shelved(own_engine) == 0


async def test_a_busy_connection_is_checked_in_at_least_once_a_circulation(
    own_engine: AsyncEngine,
) -> None:
    store = await _store_on(own_engine)
    meta = store.bind("s")
    pool = own_engine.pool
    loop = asyncio.get_running_loop()
    started = loop.time()
    seen_back = False
    while loop.time() - started < CIRCULATION_S * 2.5:
        await meta.set_metadata({"priority": 1})
        if pool.checkedout() == 0:  # type: ignore[attr-defined]
            seen_back = True
        await asyncio.sleep(LINGER_S / 4)
    assert seen_back, "a connection used every few ms was never checked in for real"


@pytest.mark.parametrize(
    "kind", ["null pool", "one connection", "checkout listener", "reset listener", "echo"]
)
async def test_the_shelf_is_off_where_it_would_change_what_the_application_sees(
    backend: str, db_url: str, engine: AsyncEngine, kind: str
) -> None:
    all_options: dict[str, dict[str, Any]] = {
        "null pool": {"poolclass": NullPool},
        "one connection": {"pool_size": 1, "max_overflow": 0},
        "echo": {"echo": True},
    }
    options = all_options.get(kind, {})
    other = create_async_engine(db_url, **options)
    calls: list[str] = []
    try:
        if kind in ("checkout listener", "reset listener"):
            name = kind.split()[0]

            @event.listens_for(other.sync_engine, name)
            def count(*args: object) -> None:
                calls.append(name)

        store = await _store_on(other)
        meta = store.bind("s")
        await meta.set_metadata({"title": "first"})  # the session row, then its value
        calls.clear()
        for round_ in range(5):
            await meta.set_metadata({"priority": round_})
            assert (await meta.get_metadata()).priority == round_
            if kind != "null pool":
                assert other.pool.checkedout() == 0  # type: ignore[attr-defined]
            assert _shelved(other) == 0
        if kind == "checkout listener":
            # An application's listener (a tenant, a search_path) sees every unit of work.
            assert len(calls) == 10
    finally:
        await other.dispose()


@pytest.mark.sqlite
async def test_a_static_pool_shares_its_one_connection_as_before() -> None:
    engine = create_async_engine("sqlite+aiosqlite://", poolclass=StaticPool)
    try:
        store = await _store_on(engine)
        await store.bind("s").set_metadata({"title": "x"})
        assert _shelved(engine) == 0
        assert (await store.bind("s").get_metadata()).title == "x"
    finally:
        await engine.dispose()


async def test_the_stores_own_pool_listeners_leave_the_shelf_on(
    backend: str, own_engine: AsyncEngine
) -> None:
    # SQLite's pragmas and WAL switch, Galera's sync wait: checkout listeners of the store.
    store = await _store_on(own_engine)
    await store.bind("s").set_metadata({"title": "x"})
    assert _shelved(own_engine) == 1


async def _server_connections(admin: AsyncEngine) -> int:
    """How many connections other than ``admin``'s own the test database has."""
    async with admin.connect() as connection:
        if admin.dialect.name == "postgresql":
            query = (
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        else:
            query = (
                "SELECT count(*) FROM information_schema.processlist "
                "WHERE db = DATABASE() AND id <> CONNECTION_ID()"
            )
        return int(await connection.scalar(text(query)))


@pytest.fixture
async def admin(db_url: str, engine: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    """A pool-less engine for looking at the server: it keeps no connection open."""
    if engine.dialect.name == "sqlite":
        pytest.skip("SQLite has no server connections to count")
    await engine.dispose()
    looker = create_async_engine(db_url, poolclass=NullPool)
    try:
        yield looker
    finally:
        await looker.dispose()


async def test_dispose_closes_the_shelved_connections(
    backend: str, db_url: str, admin: AsyncEngine, long_linger: None
) -> None:
    await _until_server_connections(admin, 0)
    engine = create_async_engine(db_url)
    try:
        store = await _store_on(engine)
        await asyncio.gather(*(store.bind(f"s{n}").set_metadata({"priority": n}) for n in range(8)))
        assert _shelved(engine) >= 1
        assert await _server_connections(admin) >= _shelved(engine)
    finally:
        await engine.dispose()
    gc.collect()
    assert _shelved(engine) == 0
    await _until_server_connections(admin, 0)


async def _until_server_connections(admin: AsyncEngine, wanted: int) -> None:
    for _ in range(HANG_GUARD_S * 20):
        count = await _server_connections(admin)
        if count == wanted:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{count} server connections, not {wanted}")


def test_dispose_at_the_end_of_asyncio_run_closes_the_last_shelved_one(
    backend: str, db_url: str
) -> None:
    # The common shape of a script: the last call shelves a connection, then main
    # disposes of the engine and the loop closes.
    require_server(backend)

    async def main() -> tuple[int, int]:
        engine = create_async_engine(db_url)
        await reset_database(engine)
        store = await _store_on(engine)
        await store.bind("s").set_metadata({"title": "last"})
        shelved = _shelved(engine)
        await engine.dispose()
        return shelved, _shelved(engine)

    assert asyncio.run(main()) == (1, 0)
    gc.collect()
    if backend != "sqlite":

        async def count() -> int:
            looker = create_async_engine(db_url, poolclass=NullPool)
            try:
                await _until_server_connections(looker, 0)
                return await _server_connections(looker)
            finally:
                await looker.dispose()

        assert asyncio.run(count()) == 0


def test_two_event_loops_in_turn_on_one_engine(backend: str, tmp_path: Path) -> None:
    require_server(backend)
    engine = create_async_engine(server_url(backend, tmp_path))
    store: MetadataStore[ChatMeta] = MetadataStore(ChatMeta, engine, create_tables=True)

    async def first() -> None:
        await reset_database(engine)
        await store.bind("s").set_metadata({"title": "first"})
        assert _shelved(engine) == 1
        await engine.dispose()

    async def second() -> str | None:
        try:
            await store.bind("s").set_metadata({"priority": 2})
            return (await store.bind("s").get_metadata()).title
        finally:
            await engine.dispose()

    asyncio.run(first())
    assert asyncio.run(second()) == "first"
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_a_loops_shutdown_returns_its_shelved_connections(
    backend: str, tmp_path: Path, long_linger: None
) -> None:
    # Without dispose(): the loop's shutdown of its async generators (asyncio.run does
    # it) checks the shelved connections in, as they were before the shelf.
    require_server(backend)
    engine = create_async_engine(server_url(backend, tmp_path))
    loop = asyncio.new_event_loop()
    try:

        async def calls() -> None:
            await reset_database(engine)
            store = await _store_on(engine)
            await asyncio.gather(*(store.bind(f"s{n}").get_metadata() for n in range(4)))

        loop.run_until_complete(calls())
        assert _shelved(engine) >= 1
        loop.run_until_complete(loop.shutdown_asyncgens())
        assert _shelved(engine) == 0
        assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    finally:
        loop.run_until_complete(engine.dispose())
        loop.close()


@pytest.mark.sqlite
def test_a_loop_closed_without_shutting_down_gives_its_shelf_back_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, long_linger: None
) -> None:
    # aiosqlite's connections outlive their loop (a thread each), so the next loop can use
    # them: the shelf of the closed loop is returned to the pool, and the log says so.
    engine = create_async_engine(server_url("sqlite", tmp_path))
    store: MetadataStore[ChatMeta] = MetadataStore(ChatMeta, engine, create_tables=True)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(store.bind("s").set_metadata({"title": "x"}))
    assert _shelved(engine) == 1
    loop.close()

    async def next_loop() -> str | None:
        try:
            with caplog.at_level(logging.WARNING, logger="sessionmeta"):
                return (await store.bind("s").get_metadata()).title
        finally:
            await engine.dispose()

    assert asyncio.run(next_loop()) == "x"
    assert "left checked out when their event loop closed" in caplog.text
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_a_small_pool_serves_many_store_calls_and_another_user(
    backend: str, db_url: str, engine: AsyncEngine
) -> None:
    # Shelved connections are checked out of the pool: it never opens more than its
    # size, and a plain user of the engine gets a connection while the store is busy.
    small = create_async_engine(db_url, pool_size=2, max_overflow=0, pool_timeout=20)
    try:
        store = await _store_on(small)
        most_out = 0

        async def call(n: int) -> None:
            nonlocal most_out
            meta = store.bind(f"s{n % 7}")
            await meta.set_metadata({"priority": n})
            await meta.get_metadata()
            most_out = max(most_out, small.pool.checkedout())  # type: ignore[attr-defined]

        async def plain_user() -> int:
            total = 0
            for _ in range(10):
                async with small.connect() as connection:
                    total += int(await connection.scalar(text("SELECT 1")))
                await asyncio.sleep(0)
            return total

        *_, plain = await asyncio.wait_for(
            asyncio.gather(*(call(n) for n in range(50)), plain_user()), HANG_GUARD_S
        )
        assert plain == 10
        assert most_out <= 2
        assert small.pool.overflow() <= 0  # type: ignore[attr-defined]
    finally:
        await small.dispose()


async def test_racing_calls_with_cancellations_leave_every_connection_accounted_for(
    backend: str, db_url: str, engine: AsyncEngine
) -> None:
    racing = create_async_engine(db_url, pool_size=4, max_overflow=0, pool_timeout=30)
    rng = random.Random(7)
    try:
        store = await _store_on(racing)
        for round_ in range(15):

            async def call(n: int, round_: int = round_) -> None:
                meta = store.bind(f"s{n % 5}")
                if n % 3:
                    await meta.get_metadata()
                else:
                    await meta.set_metadata({"priority": round_, "title": f"r{round_}"})

            tasks = [asyncio.create_task(call(n)) for n in range(12)]
            await asyncio.sleep(rng.choice([0, 0.0005, 0.001, 0.003]))
            for task in rng.sample(tasks, 4):
                task.cancel()
            results = await asyncio.wait_for(
                asyncio.gather(*tasks, return_exceptions=True), HANG_GUARD_S
            )
            unexpected = [
                result
                for result in results
                if isinstance(result, BaseException)
                and not isinstance(result, asyncio.CancelledError)
            ]
            assert not unexpected, unexpected
            assert racing.pool.checkedout() <= 4  # type: ignore[attr-defined]
        # Every call after the races works, and the shelf gives everything back.
        for n in range(5):
            await store.bind(f"s{n}").set_metadata({"title": "after"})
            assert (await store.bind(f"s{n}").get_metadata()).title == "after"
        await _until(lambda: racing.pool.checkedout() == 0, "every connection back in the pool")  # type: ignore[attr-defined]
    finally:
        await racing.dispose()
