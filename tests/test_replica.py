"""Read replicas: queries go to a PostgreSQL hot standby, everything else to the primary.

Run against a real streaming standby of the test server (``scripts/pg-replica.sh
start`` makes one on 127.0.0.1:5433). Its URL is ``SESSIONMETA_TEST_REPLICA_URL``,
by default the PostgreSQL test URL on port 5433; it must name the same database.
When no standby answers there the tests skip with one line, or fail under CI.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from sessionmeta import DatabaseError, InvalidArgumentError, MetadataStore, field

from .conftest import IN_CI, POSTGRES_URL, require_server, reset_database
from .models import ChatMeta

pytestmark = [pytest.mark.replica, pytest.mark.postgres]

REPLICA_URL = os.environ.get(
    "SESSIONMETA_TEST_REPLICA_URL",
    make_url(POSTGRES_URL).set(port=5433).render_as_string(hide_password=False),
)
CATCH_UP_SECONDS = 60.0
ROOT = Path(__file__).resolve().parent.parent
_problem: list[str | None] = []


async def _standby_problem() -> str | None:
    """None when REPLICA_URL is a hot standby of POSTGRES_URL's server, else why not."""
    primary = create_async_engine(POSTGRES_URL)
    replica = create_async_engine(REPLICA_URL)
    try:
        async with primary.connect() as connection:
            system = await connection.scalar(
                text("SELECT system_identifier FROM pg_control_system()")
            )
        deadline = time.monotonic() + CATCH_UP_SECONDS
        while True:
            try:
                async with replica.connect() as connection:
                    row = (
                        await connection.execute(
                            text(
                                "SELECT pg_is_in_recovery(), system_identifier "
                                "FROM pg_control_system()"
                            )
                        )
                    ).one()
                break
            except Exception as exc:
                # A database just created on the primary reaches the standby a moment later.
                if "does not exist" not in str(exc) or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        if not row[0]:
            return "it is not in recovery (not a standby)"
        if row[1] != system:
            return "it is a standby of another server than the PostgreSQL test server"
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    finally:
        await primary.dispose()
        await replica.dispose()
    return None


def require_standby() -> None:
    require_server("postgres")
    if not _problem:
        _problem.append(asyncio.run(_standby_problem()))
    if _problem[0] is not None:
        shown = make_url(REPLICA_URL).render_as_string(hide_password=True)
        message = (
            f"read replica at {shown} unusable ({_problem[0]}); "
            "start one with scripts/pg-replica.sh start"
        )
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


@pytest.fixture
def standby() -> None:
    require_standby()


@pytest.fixture
async def primary(standby: None) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(POSTGRES_URL)
    await reset_database(engine)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def replica(standby: None) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(REPLICA_URL)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def store(primary: AsyncEngine, replica: AsyncEngine) -> MetadataStore[ChatMeta]:
    store = MetadataStore(ChatMeta, primary, read_engine=replica)
    await store.create_tables()
    await caught_up(primary, replica)
    return store


async def caught_up(primary: AsyncEngine, replica: AsyncEngine) -> None:
    """Wait until the standby has replayed everything the primary has written so far."""
    async with primary.connect() as connection:
        lsn = await connection.scalar(text("SELECT pg_current_wal_lsn()::text"))
    deadline = time.monotonic() + CATCH_UP_SECONDS
    async with replica.connect() as connection:
        while not await connection.scalar(
            # Passed as text: asyncpg would take a pg_lsn parameter as a number.
            text("SELECT pg_last_wal_replay_lsn() >= CAST(CAST(:lsn AS text) AS pg_lsn)"),
            {"lsn": lsn},
        ):
            assert time.monotonic() < deadline, f"the standby did not replay up to {lsn}"
            await asyncio.sleep(0.05)


class Statements:
    """The statements each engine runs, seen by SQLAlchemy's cursor events."""

    def __init__(self, **engines: AsyncEngine) -> None:
        self.seen: dict[str, list[str]] = {name: [] for name in engines}
        self._listeners = []
        for name, engine in engines.items():

            def seen(*args: Any, name: str = name) -> None:
                self.seen[name].append(args[2])

            event.listen(engine.sync_engine, "before_cursor_execute", seen)
            self._listeners.append((engine, seen))

    def take(self) -> dict[str, int]:
        """How many statements each engine ran since the last call."""
        counts = {name: len(statements) for name, statements in self.seen.items()}
        for statements in self.seen.values():
            statements.clear()
        return counts

    def remove(self) -> None:
        for engine, seen in self._listeners:
            event.remove(engine.sync_engine, "before_cursor_execute", seen)


@pytest.fixture
def statements(primary: AsyncEngine, replica: AsyncEngine) -> Iterator[Statements]:
    watcher = Statements(primary=primary, replica=replica)
    try:
        yield watcher
    finally:
        watcher.remove()


async def test_the_read_engine_is_the_standby(primary: AsyncEngine, replica: AsyncEngine) -> None:
    async with replica.connect() as connection:
        port, in_recovery = (
            await connection.execute(text("SELECT inet_server_port(), pg_is_in_recovery()"))
        ).one()
    async with primary.connect() as connection:
        primary_port = await connection.scalar(text("SELECT inet_server_port()"))
    assert in_recovery is True
    assert port == make_url(REPLICA_URL).port != primary_port


async def test_queries_run_on_the_replica_and_the_rest_on_the_primary(
    store: MetadataStore[ChatMeta],
    primary: AsyncEngine,
    replica: AsyncEngine,
    statements: Statements,
) -> None:
    await store.set_many({f"s{i}": {"owner_id": "u1", "title": f"t{i}"} for i in range(3)})
    meta = store.bind("s0")
    await meta.set_metadata({"tags": ["a"]})
    await meta.add_to("tags", "b")
    assert statements.take()["replica"] == 0
    await caught_up(primary, replica)
    statements.take()

    # Finds, listings, counts and bulk reads: on the replica only.
    assert list(await store.find_sessions(field("owner_id") == "u1")) == ["s0", "s1", "s2"]
    assert await store.find_sessions_by_metadata("title", "t1") == ["s1"]
    assert await meta.find_sessions_by_metadata("title", "t2") == ["s2"]
    listing = await store.list_sessions(order_by="-title", limit=2)
    assert [entry.session_id for entry in listing] == ["s2", "s1"]
    assert await store.count_sessions() == 3
    assert (await store.get_many(["s0", "s9"]))["s0"].tags == ["a", "b"]
    tenant = store.scoped(owner_id="u1")
    assert await tenant.count_sessions(field("tags").contains("b")) == 1
    assert list(await tenant.find_sessions()) == ["s0", "s1", "s2"]
    assert len(await tenant.list_sessions()) == 3
    assert set(await tenant.get_many(["s1", "s2"])) == {"s1", "s2"}
    assert statements.take() == {"primary": 0, "replica": 10}

    # One session's reads, versioned reads, existence and scoped single reads: primary.
    assert (await meta.get_metadata()).tags == ["a", "b"]
    assert (await meta.get_metadata_versioned()).version
    assert await meta.exists()
    assert (await tenant.bind("s1").get_metadata()).title == "t1"
    assert await tenant.exists("s2")
    assert statements.take() == {"primary": 5, "replica": 0}

    # Writes through a scoped view (their scope checks included): primary.
    await tenant.bind("s1").set_metadata({"title": "renamed"})
    await tenant.bind("s2").delete_metadata(["title"])
    assert statements.take()["replica"] == 0

    # Asked for: the primary.
    on_primary = store.on_primary()
    assert await on_primary.count_sessions() == 3
    assert list(await on_primary.find_sessions({"title": "renamed"})) == ["s1"]
    assert await on_primary.scoped(owner_id="u1").count_sessions() == 3
    assert await tenant.on_primary().count_sessions(field("title").exists()) == 2
    assert len(await on_primary.get_many(["s0", "s1"])) == 2
    assert statements.take() == {"primary": 5, "replica": 0}

    # In the caller's transaction: on its connection, the primary.
    async with primary.begin() as connection:
        joined = store.using(connection)
        await joined.bind("s9").set_metadata({"owner_id": "u1"})
        assert await joined.count_sessions() == 4
        assert list(await joined.scoped(owner_id="u1").find_sessions(limit=1)) == ["s0"]
    assert statements.take()["replica"] == 0


async def test_lag_is_visible_on_the_replica_and_primary_reads_are_exact(
    store: MetadataStore[ChatMeta], primary: AsyncEngine, replica: AsyncEngine
) -> None:
    """The standby's replay paused: what the primary writes meanwhile is not on it yet."""
    await store.bind("old").set_metadata({"owner_id": "u1", "title": "before"})
    await caught_up(primary, replica)
    async with replica.connect() as paused:
        await paused.execute(text("SELECT pg_wal_replay_pause()"))
        try:
            deadline = time.monotonic() + CATCH_UP_SECONDS
            while await paused.scalar(text("SELECT pg_get_wal_replay_pause_state()")) != "paused":
                assert time.monotonic() < deadline, "the standby's replay did not pause"
                await asyncio.sleep(0.05)
            await store.bind("new").set_metadata({"owner_id": "u1", "title": "after"})
            await store.bind("old").set_metadata({"title": "changed"})

            # The replica lags: the new session and the change are not there.
            assert list(await store.find_sessions({"owner_id": "u1"})) == ["old"]
            assert await store.find_sessions_by_metadata("title", "after") == []
            assert await store.count_sessions() == 1
            assert (await store.get_many(["old", "new"])) == {
                "old": ChatMeta(owner_id="u1", title="before"),
                "new": ChatMeta(),
            }
            assert await store.scoped(owner_id="u1").count_sessions() == 1

            # Primary reads are exact.
            exact = store.on_primary()
            assert list(await exact.find_sessions({"owner_id": "u1"})) == ["new", "old"]
            assert await exact.find_sessions_by_metadata("title", "after") == ["new"]
            assert await exact.count_sessions() == 2
            assert (await exact.get_many(["old", "new"])) == {
                "old": ChatMeta(owner_id="u1", title="changed"),
                "new": ChatMeta(owner_id="u1", title="after"),
            }
            assert await exact.scoped(owner_id="u1").count_sessions() == 2
            assert await store.scoped(owner_id="u1").on_primary().count_sessions() == 2
            assert (await store.bind("old").get_metadata()).title == "changed"
            assert await store.exists("new")
            async with primary.connect() as connection:
                assert await store.using(connection).count_sessions() == 2
        finally:
            await paused.execute(text("SELECT pg_wal_replay_resume()"))
    await caught_up(primary, replica)
    assert list(await store.find_sessions({"owner_id": "u1"})) == ["new", "old"]
    assert await store.find_sessions_by_metadata("title", "changed") == ["old"]


async def test_replica_errors_are_sessionmeta_errors_naming_the_replica(
    store: MetadataStore[ChatMeta], primary: AsyncEngine
) -> None:
    # A database on the standby without the tables: the replica refuses the query.
    elsewhere = make_url(REPLICA_URL).set(database="postgres", password="s3cret")
    replica = create_async_engine(elsewhere)
    try:
        broken = MetadataStore(ChatMeta, primary, read_engine=replica)
        with pytest.raises(DatabaseError) as refused:
            await broken.count_sessions()
        message = str(refused.value)
        assert "read replica postgresql+asyncpg://postgres:***@127.0.0.1" in message
        assert "s3cret" not in message
        assert "UndefinedTableError" in message
        # The primary still serves everything else.
        await broken.bind("s").set_metadata({"title": "kept"})
        assert (await broken.bind("s").get_metadata()).title == "kept"
        assert await broken.on_primary().count_sessions() == 1
    finally:
        await replica.dispose()
    # A replica that does not answer.
    nowhere = make_url(REPLICA_URL).set(port=1, password="s3cret")
    unreachable = create_async_engine(nowhere)
    try:
        down = MetadataStore(ChatMeta, primary, read_engine=unreachable, connect_timeout=5)
        with pytest.raises(DatabaseError) as failed:
            await down.find_sessions()
        assert "cannot connect to the read replica postgresql+asyncpg://postgres:***@" in str(
            failed.value
        )
        assert "s3cret" not in str(failed.value)
    finally:
        await unreachable.dispose()


async def test_from_url_with_read_url_owns_both_engines(
    primary: AsyncEngine, replica: AsyncEngine
) -> None:
    read_url = make_url(REPLICA_URL).set(password="s3cret").render_as_string(hide_password=False)
    name = "sessionmeta-test-read-url"
    store = MetadataStore.from_url(
        ChatMeta,
        POSTGRES_URL,
        read_url=read_url,
        engine_kwargs={"connect_args": {"server_settings": {"application_name": name}}},
    )
    assert "read_engine='postgresql+asyncpg://postgres:***@127.0.0.1:" in repr(store)
    assert "s3cret" not in repr(store)

    async def on_replica() -> int:
        async with replica.connect() as connection:
            found = await connection.scalar(
                text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :name"),
                {"name": name},
            )
        return int(found)

    async with store:
        await store.create_tables()
        await caught_up(primary, replica)
        assert list(await store.find_sessions()) == []
        assert await on_replica() == 1
    # close() disposed of the replica's engine too: its connection goes.
    deadline = time.monotonic() + 10
    while await on_replica():
        assert time.monotonic() < deadline, "close() left a connection to the replica open"
        await asyncio.sleep(0.05)


def test_a_read_engine_must_speak_the_primary_dialect_and_driver() -> None:
    primary = create_async_engine("sqlite+aiosqlite://")
    with pytest.raises(InvalidArgumentError, match=r"postgresql\+asyncpg, but the store's engine"):
        MetadataStore(ChatMeta, primary, read_engine=create_async_engine(REPLICA_URL))
    with pytest.raises(InvalidArgumentError, match="read_engine must be a SQLAlchemy AsyncEngine"):
        MetadataStore(ChatMeta, primary, read_engine=REPLICA_URL)  # type: ignore[arg-type]


async def test_the_replica_benchmark_measures_both_nodes_and_drops_its_tables(
    primary: AsyncEngine, tmp_path: Path
) -> None:
    out = tmp_path / "replica.json"
    tiny = ["--sessions", "300", "--calls", "3", "--delay-writes", "2"]
    tiny += ["--seconds", "0.3", "--repeats", "1", "--concurrency", "2"]
    command = [sys.executable, "benchmarks/replica.py", *tiny, "--out", str(out)]
    command += ["--postgres-url", POSTGRES_URL, "--replica-url", REPLICA_URL]
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 300)
    assert process.returncode == 0, stderr.decode()
    found = json.loads(out.read_text())
    measured = {(row["op"], row["impl"]) for row in found["latency"]}
    assert ("find (equality, 100 sessions)", "standby") in measured
    assert ("get_metadata (one session)", "primary") in measured
    assert found["replication_delay_ms"]["writes"] == 2
    assert all(rate["two_readers_per_s"] > 0 for rate in found["throughput"])
    assert "two readers /s" in stdout.decode()
    async with primary.connect() as connection:
        names = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
    assert [name for name in names if name.startswith("smbench_replica")] == []
