"""A MariaDB Galera cluster: three nodes, one database, every node written at once.

The nodes are the URLs in ``SESSIONMETA_TEST_GALERA_URLS`` (comma-separated; default
the three nodes ``scripts/galera.sh start`` runs on 127.0.0.1:3311-3313). A cluster
that is not up skips these tests with one line, or fails the run when ``CI=true``.
The node-kill test kills one node's server and restarts it through
``scripts/galera.sh``, so it needs the cluster that script started. docs/scaling.md
says what a store on a cluster does and why.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Iterable
from pathlib import Path
from typing import Any

import pytest
from pydantic import create_model
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from sessionmeta import DatabaseError, MetadataStore, SessionMeta, field

from .conftest import IN_CI, reset_database
from .models import ChatMeta

pytestmark = [pytest.mark.galera, pytest.mark.mysql]

ROOT = Path(__file__).resolve().parents[1]
GALERA_SCRIPT = ROOT / "scripts" / "galera.sh"
GALERA_DIR = Path(os.environ.get("SESSIONMETA_GALERA_DIR", "/tmp/sessionmeta-galera"))
_DEFAULT_URLS = ",".join(
    f"mysql+aiomysql://root@127.0.0.1:{port}/test" for port in (3311, 3312, 3313)
)
GALERA_URLS = [
    url.strip()
    for url in os.environ.get("SESSIONMETA_TEST_GALERA_URLS", _DEFAULT_URLS).split(",")
    if url.strip()
]
# Ordinary load for one session: the figure, 30 writers on each of three nodes.
WRITERS = 90
# A bound on waiting for something that should happen; never a timing assertion.
HANG_GUARD_S = 120

Wide = create_model(  # type: ignore[call-overload]
    "Wide",
    __base__=SessionMeta,
    **{f"k{index:03d}": (int | None, None) for index in range(WRITERS)},
)

_problem: list[str | None] = []


def _shown(urls: Iterable[str]) -> str:
    return ", ".join(make_url(url).render_as_string(hide_password=True) for url in urls)


async def _node_status(url: str) -> dict[str, str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                text(
                    "SHOW STATUS WHERE Variable_name IN ('wsrep_local_state_comment', "
                    "'wsrep_cluster_size', 'wsrep_cluster_state_uuid', 'wsrep_gcomm_uuid')"
                )
            )
            return {str(name).lower(): str(value) for name, value in rows}
    finally:
        await engine.dispose()


async def _cluster_problem() -> str | None:
    """None when the URLs are the synced nodes of one cluster of their number, else why not."""
    if len(GALERA_URLS) < 2:
        return f"SESSIONMETA_TEST_GALERA_URLS names {len(GALERA_URLS)} node(s), not 2 or more"
    statuses: list[dict[str, str]] = []
    for url in GALERA_URLS:
        try:
            status = await asyncio.wait_for(_node_status(url), timeout=5)
        except Exception as exc:
            shown = getattr(exc, "orig", None) or exc  # the driver's words, not SQLAlchemy's
            first = str(shown).splitlines()[0] if str(shown) else ""
            return f"{_shown([url])}: {type(shown).__name__}: {first}"
        if status.get("wsrep_local_state_comment") != "Synced":
            return f"{_shown([url])} is not a synced Galera node ({status or 'no wsrep status'})"
        statuses.append(status)
    if len({status["wsrep_cluster_state_uuid"] for status in statuses}) != 1:
        return "the URLs are nodes of different clusters"
    if len({status["wsrep_gcomm_uuid"] for status in statuses}) != len(GALERA_URLS):
        return "two URLs reach the same node"
    sizes = {status["wsrep_cluster_size"] for status in statuses}
    if sizes != {str(len(GALERA_URLS))}:
        return f"cluster size {', '.join(sorted(sizes))}, not the {len(GALERA_URLS)} nodes named"
    return None


def require_cluster() -> None:
    """Skip (or, under CI, fail) when the nodes are not one synced cluster."""
    if not _problem:
        _problem.append(asyncio.run(_cluster_problem()))
    problem = _problem[0]
    if problem is not None:
        message = f"Galera cluster unavailable: {problem} (scripts/galera.sh start)"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


@pytest.fixture
def galera_urls() -> list[str]:
    """The nodes' URLs, once the cluster answered (a sync fixture: it runs its own loop)."""
    require_cluster()
    return GALERA_URLS


@pytest.fixture
async def nodes(galera_urls: list[str]) -> AsyncIterator[list[AsyncEngine]]:
    """One engine per node, on an empty database; pools wide enough for every writer."""
    engines = [
        create_async_engine(
            url,
            pool_size=WRITERS // len(galera_urls) + 5,
            max_overflow=0,
            pool_timeout=HANG_GUARD_S,
            # A restarted node's pooled connections are dead: replaced on checkout.
            pool_pre_ping=True,
        )
        for url in galera_urls
    ]
    try:
        await reset_database(engines[0])  # DDL replicates to every node
        yield engines
    finally:
        for engine in engines:
            await engine.dispose()


async def _stores(engines: list[AsyncEngine], model: type[Any] = ChatMeta) -> list[Any]:
    stores = [MetadataStore(model, engine, create_tables=True) for engine in engines]
    await stores[0].create_tables()
    return stores


async def _all_succeed(calls: Iterable[Awaitable[Any]]) -> list[Any]:
    """Run ``calls`` at once; fail listing every call that raised."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    failed = [repr(result) for result in results if isinstance(result, BaseException)]
    assert not failed, f"{len(failed)} of {len(results)} calls failed: {failed[:5]}"
    return results


async def _stored_titles(engine: AsyncEngine) -> dict[str, str]:
    """Every session's stored title on one node (a read that waits for the cluster)."""
    async with engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT session_id, value FROM agent_sessions_metadata WHERE `key` = 'title'")
        )
        return {str(row[0]): str(row[1]) for row in rows}


async def test_the_store_makes_each_node_wait_for_the_cluster(nodes: list[AsyncEngine]) -> None:
    # Reads, updates and deletes, and inserts wait until the node has applied what the
    # cluster acknowledged (1 | 2 | 4); a bit the application set (8: SHOW) stays.
    application = create_async_engine(
        GALERA_URLS[1], connect_args={"init_command": "SET SESSION wsrep_sync_wait = 8"}
    )
    try:
        for engine, expected in ((nodes[0], 7), (application, 15)):
            MetadataStore(ChatMeta, engine)
            async with engine.connect() as connection:
                wait = await connection.scalar(text("SELECT @@session.wsrep_sync_wait"))
            assert wait == expected
    finally:
        await application.dispose()


async def test_a_write_on_one_node_is_read_found_and_deleted_on_the_others(
    nodes: list[AsyncEngine],
) -> None:
    stores = await _stores(nodes)
    count = len(stores)
    # Without the store's wsrep_sync_wait, about one read in three and one delete in
    # seven on another node missed the write just acknowledged (measured on this host).
    for round_ in range(25):
        for writer in range(count):
            session_id = f"s{round_}-{writer}"
            owner = f"u{round_}-{writer}"
            here = stores[writer]
            there = stores[(writer + 1) % count]
            elsewhere = stores[(writer + 2) % count]
            await here.bind(session_id).set_metadata({"owner_id": owner, "tags": [owner]})
            assert (await there.bind(session_id).get_metadata()).owner_id == owner
            assert await elsewhere.find_sessions_by_metadata("owner_id", owner) == [session_id]
            assert await there.find_sessions(field("tags").contains(owner)) == [session_id]
            await there.bind(session_id).delete_metadata(["owner_id"])
            assert (await here.bind(session_id).get_metadata()).owner_id is None
            assert await elsewhere.find_sessions_by_metadata("owner_id", owner) == []


async def test_ninety_writers_over_every_node_create_one_session_and_all_land(
    nodes: list[AsyncEngine],
) -> None:
    stores = await _stores(nodes, Wide)
    for round_ in range(2):
        session_id = f"shared-{round_}"
        # The session does not exist yet: writers on every node also race to create it.
        await _all_succeed(
            stores[index % len(stores)].bind(session_id).set_metadata({f"k{index:03d}": index})
            for index in range(WRITERS)
        )
        for store in stores:
            read = await store.bind(session_id).get_metadata()
            assert {name: getattr(read, name) for name in read.model_fields_set} == {
                f"k{index:03d}": index for index in range(WRITERS)
            }


async def test_ninety_writers_over_every_node_of_one_key_leave_one_whole_write(
    nodes: list[AsyncEngine],
) -> None:
    stores = await _stores(nodes)
    meta = [store.bind("shared") for store in stores]
    await _all_succeed(
        meta[index % len(meta)].set_metadata({"priority": index, "title": f"t{index}"})
        for index in range(WRITERS)
    )
    reads = [await handle.get_metadata() for handle in meta]
    assert reads[0].priority in range(WRITERS)
    assert reads[0].title == f"t{reads[0].priority}"
    assert all(read == reads[0] for read in reads)


async def test_writers_of_many_sessions_over_every_node_all_land(
    nodes: list[AsyncEngine],
) -> None:
    stores = await _stores(nodes)

    async def write(index: int) -> None:
        meta = stores[index % len(stores)].bind(f"s{index:03d}")
        await meta.set_metadata({"owner_id": "u1", "title": f"t{index}"})
        await meta.add_to("tags", "new")
        await meta.set_metadata({"priority": index})

    await _all_succeed(write(index) for index in range(WRITERS))
    for store in stores:
        assert await store.count_sessions(field("tags").contains("new")) == WRITERS
        found = await store.get_many(f"s{index:03d}" for index in range(WRITERS))
        assert {
            session_id: (read.owner_id, read.title, read.priority)
            for session_id, read in found.items()
        } == {f"s{index:03d}": ("u1", f"t{index}", index) for index in range(WRITERS)}


async def test_add_to_from_every_node_loses_no_item(nodes: list[AsyncEngine]) -> None:
    stores = await _stores(nodes)
    for round_ in range(2):
        session_id = f"tagged-{round_}"
        await _all_succeed(
            stores[index % len(stores)].bind(session_id).add_to("tags", f"x{round_}-{index}")
            for index in range(WRITERS)
        )
        wanted = {f"x{round_}-{index}" for index in range(WRITERS)}
        for store in stores:
            tags = (await store.bind(session_id).get_metadata()).tags or []
            assert sorted(tags) == sorted(wanted)
            assert await store.find_sessions(field("tags").contains(f"x{round_}-89")) == [
                session_id
            ]


async def test_every_node_creating_the_schema_at_once(nodes: list[AsyncEngine]) -> None:
    for round_ in range(3):
        await reset_database(nodes[0])
        stores = [MetadataStore(ChatMeta, engine, create_tables=True) for engine in nodes]
        # Each node's DDL is replicated in total order: one CREATE wins, the others find
        # the table made (or fail "already exists" and look again).
        await _all_succeed(store.create_tables() for store in stores)
        for writer, store in enumerate(stores):
            await store.bind(f"s{round_}-{writer}").set_metadata({"title": "made"})
        for store in stores:
            assert await store.find_sessions_by_metadata("title", "made") == [
                f"s{round_}-{writer}" for writer in range(len(stores))
            ]


def test_benchmark_command_runs_on_the_cluster(galera_urls: list[str], tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "benchmarks/galera.py",
            "--quick",
            "--urls",
            ",".join(galera_urls),
            "--mysql-url",
            "",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "galera.json").read_text())
    measured = {(row["op"], row["impl"]) for row in report["results"]}
    nodes = [f"node{number}" for number in range(1, len(galera_urls) + 1)]
    for op in ("set", "get", "find", "get after set elsewhere", "SELECT 1, wsrep_sync_wait=7"):
        assert {(op, node) for node in nodes} <= measured
    assert {(row["op"], row["nodes"]) for row in report["throughput"]} == {
        ("set", 1),
        ("set", len(nodes)),
        ("find", 1),
        ("find", len(nodes)),
    }
    assert asyncio.run(_benchmark_tables(galera_urls[-1])) == []


async def _benchmark_tables(url: str) -> list[str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                text(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = DATABASE() AND table_name LIKE 'smbench_galera%'"
                )
            )
            return [str(row[0]) for row in rows]
    finally:
        await engine.dispose()


def _script_pid(pid_file: Path) -> int | None:
    """The pid in a node's pid file, when the node is one scripts/galera.sh started."""
    if GALERA_DIR.resolve() not in pid_file.resolve().parents or not pid_file.exists():
        return None
    return int(pid_file.read_text().strip())


async def _server_pid(engine: AsyncEngine) -> int | None:
    """The node's mariadbd pid, when scripts/galera.sh started it; else None."""
    async with engine.connect() as connection:
        pid_file = Path(str(await connection.scalar(text("SELECT @@pid_file"))))
    return _script_pid(pid_file)


async def _galera_script(command: str) -> None:
    process = await asyncio.create_subprocess_exec(
        "bash",
        str(GALERA_SCRIPT),
        command,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), HANG_GUARD_S * 2)
    assert process.returncode == 0, output.decode(errors="replace")


@pytest.mark.slow
async def test_a_node_killed_mid_stream_of_writes(nodes: list[AsyncEngine]) -> None:
    victim = len(nodes) - 1
    pid = await _server_pid(nodes[victim])
    if pid is None:
        message = f"{_shown(GALERA_URLS[victim:])} was not started by scripts/galera.sh"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    stores = await _stores(nodes)
    acknowledged: dict[str, int] = {}  # session id -> the node that acknowledged it
    failures: list[tuple[int, BaseException]] = []
    stop = asyncio.Event()

    async def writer(node: int, task: int) -> None:
        count = 0
        while not stop.is_set():
            session_id = f"n{node}-w{task}-{count}"
            count += 1
            try:
                await stores[node].bind(session_id).set_metadata({"title": session_id})
            except Exception as exc:
                failures.append((node, exc))
                await asyncio.sleep(0.05)  # the node is down: do not spin
            else:
                acknowledged[session_id] = node

    writers = [
        asyncio.create_task(writer(node, task)) for node in range(len(nodes)) for task in range(4)
    ]
    try:
        await asyncio.sleep(1)
        before_kill = len(acknowledged)
        os.kill(pid, signal.SIGKILL)
        # The others declare it gone within seconds (evs.suspect_timeout); their
        # commits wait for that, then go on.
        await asyncio.sleep(8)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*writers), HANG_GUARD_S)
    finally:
        stop.set()
        for task in writers:
            task.cancel()
    try:
        survivors = [node for node in range(len(nodes)) if node != victim]
        # Every failure is sessionmeta's own error, naming the session; none is a raw
        # driver error. The dead node's writers all failed from the kill on.
        unexpected = [exc for _, exc in failures if not isinstance(exc, DatabaseError)]
        assert not unexpected, unexpected[:3]
        assert all(getattr(exc, "session_id", None) is not None for _, exc in failures)
        assert any(node == victim for node, _ in failures)
        # Writes in flight at the kill (four writers keep one each): lost, and said so.
        assert any("lost the database connection" in str(exc) for _, exc in failures)
        assert [exc for node, exc in failures if node != victim] == []
        after_kill = [node for node in list(acknowledged.values())[before_kill:] if node != victim]
        assert after_kill, "the surviving nodes acknowledged no write after the kill"
        # Every acknowledged write is on every surviving node.
        for node in survivors:
            titles = await _stored_titles(nodes[node])
            missing = [sid for sid in acknowledged if titles.get(sid) != f'"{sid}"']
            assert missing == [], f"node {node + 1} lacks {len(missing)} acknowledged writes"
    finally:
        await _galera_script("start")
    # The node rejoined and caught up: it holds every acknowledged write, those made
    # while it was down included, and takes writes again.
    titles = await _stored_titles(nodes[victim])
    assert [sid for sid in acknowledged if titles.get(sid) != f'"{sid}"'] == []
    await stores[victim].bind("after").set_metadata({"title": "back"})
    assert (await stores[0].bind("after").get_metadata()).title == "back"
