"""Latency on each node of a MariaDB Galera cluster, against a standalone MariaDB.

    bash scripts/galera.sh start                # the 3-node cluster on 127.0.0.1:3311-3313
    python benchmarks/galera.py                 # about a minute
    python benchmarks/galera.py --quick         # seconds: proves the command works

One store per node (its own engine, default settings) and one on the standalone
server. Timed, one call at a time, each round in a rotating order over the nodes and
the standalone server so all see the same noise:

* ``set``: ``bind(sid).set_metadata`` of two keys to a stored session (a different one
  each call): on a node, the commit waits until every node has certified the write;
* ``get``: ``bind(sid).get_metadata()`` of a stored session's ten keys;
* ``find``: ``find_sessions_by_metadata`` by owner (100 sessions);
* ``get after set elsewhere``: ``get_metadata`` on this node of a session the previous
  node (in ring order) has just written: the read waits until this node has applied it;
* ``SELECT 1, wsrep_sync_wait=0`` and ``=7``: the same statement on a connection held
  open, without and with the causality wait the store sets on a cluster's
  connections (docs/scaling.md): what that wait costs one statement.

Then throughput: ``--callers`` concurrent callers for ``--seconds``, all on node 1,
then spread over every node, writing (``set``) and then reading (``find``).

The cluster is ``--urls`` (comma-separated), else ``SESSIONMETA_BENCH_GALERA_URLS``,
else ``SESSIONMETA_TEST_GALERA_URLS``, else the three local nodes; the standalone
server ``--mysql-url``, else ``SESSIONMETA_BENCH_MYSQL_URL``,
``SESSIONMETA_TEST_MYSQL_URL``, the local server (``--mysql-url ''`` leaves it out).
Only the tables ``smbench_galera_*`` are created, and they are dropped at the end.
Output: a table, and ``galera.json`` in ``--out``.

Read the figures with this machine's caveat: every node runs on one host with two
cores, so a node's certification round trip is a loopback one and the nodes compete
for the same CPUs. Across hosts, each commit and each causal wait costs a network
round trip more, and nodes add capacity instead of sharing it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# Benchmark this checkout's code, whatever is installed.
sys.path[:0] = [str(HERE), str(HERE.parent / "src")]

from data import SESSIONS_PER_OWNER, BenchMeta, owner_of, session_id, values_of  # noqa: E402
from harness import Entry, Result, format_table, measure  # noqa: E402
from sqlalchemy import text  # noqa: E402
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine  # noqa: E402
from sqlalchemy.util import greenlet_spawn  # noqa: E402

from sessionmeta import MetadataStore  # noqa: E402

SESSIONS_TABLE = "smbench_galera_sessions"
METADATA_TABLE = "smbench_galera_metadata"
DEFAULT_URLS = ",".join(
    f"mysql+aiomysql://root@127.0.0.1:{port}/test" for port in (3311, 3312, 3313)
)
STANDALONE = "standalone"


def cluster_urls(given: str | None) -> list[str]:
    urls = (
        given
        or os.environ.get("SESSIONMETA_BENCH_GALERA_URLS")
        or os.environ.get("SESSIONMETA_TEST_GALERA_URLS")
        or DEFAULT_URLS
    )
    return [url.strip() for url in urls.split(",") if url.strip()]


def standalone_url(given: str | None) -> str | None:
    if given is not None:
        return given or None
    return (
        os.environ.get("SESSIONMETA_BENCH_MYSQL_URL")
        or os.environ.get("SESSIONMETA_TEST_MYSQL_URL")
        or "mysql+aiomysql://root@127.0.0.1:3306/test"
    )


class Held:
    """``SELECT 1`` on one driver connection held open, at a given wsrep_sync_wait."""

    def __init__(self, engine: AsyncEngine, sync_wait: int) -> None:
        self.engine = engine
        self.sync_wait = sync_wait
        self.connection: Any = None
        self.pooled: Any = None

    async def open(self) -> None:
        self.pooled = await self.engine.raw_connection()
        self.connection = self.pooled.driver_connection
        async with self.connection.cursor() as cursor:
            await cursor.execute(f"SET SESSION wsrep_sync_wait = {self.sync_wait}")

    async def select_one(self, index: int) -> None:
        async with self.connection.cursor() as cursor:
            await cursor.execute("SELECT 1")
            await cursor.fetchall()

    async def close(self) -> None:
        if self.pooled is not None:
            # Its sync_wait is ours, not the pool's: dropped, not pooled again.
            await greenlet_spawn(self.pooled.invalidate)


async def seed(store: MetadataStore[BenchMeta], sessions: int) -> None:
    await store.create_tables()
    for start in range(0, sessions, 500):
        await store.set_many(
            {
                session_id(index): values_of(index)
                for index in range(start, min(start + 500, sessions))
            }
        )


async def drop(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.execute(text(f"DROP TABLE IF EXISTS {METADATA_TABLE}_unique"))
        await connection.execute(text(f"DROP TABLE IF EXISTS {METADATA_TABLE}_items"))
        await connection.execute(text(f"DROP TABLE IF EXISTS {METADATA_TABLE}"))
        await connection.execute(text(f"DROP TABLE IF EXISTS {SESSIONS_TABLE}"))


async def latency(
    names: list[str],
    stores: dict[str, MetadataStore[BenchMeta]],
    held: dict[str, tuple[Held, Held]],
    *,
    sessions: int,
    rounds: int,
    warmup: int,
) -> list[Result]:
    results: list[Result] = []
    nodes = [name for name in names if name != STANDALONE]

    def spread(index: int, offset: int) -> str:
        # A different stored session each call and each implementation.
        return session_id((index * len(names) + offset) * 7919 % sessions)

    def op_set(name: str, offset: int) -> Entry:
        store = stores[name]

        async def call(index: int) -> None:
            await store.bind(spread(index, offset)).set_metadata(
                {"title": f"retitled {index}", "priority": index}
            )

        return Entry(name, call)

    def op_get(name: str, offset: int) -> Entry:
        store = stores[name]

        async def call(index: int) -> None:
            await store.bind(spread(index, offset)).get_metadata()

        return Entry(name, call)

    def op_find(name: str, offset: int) -> Entry:
        store = stores[name]
        owners = max(1, sessions // SESSIONS_PER_OWNER)

        async def call(index: int) -> None:
            await store.find_sessions_by_metadata(
                "owner_id", owner_of((index % owners) * SESSIONS_PER_OWNER)
            )

        return Entry(name, call)

    def op_after(name: str, offset: int) -> Entry:
        # The previous node in the ring writes (untimed); this node reads it back.
        store = stores[name]
        writer = stores[nodes[(nodes.index(name) - 1) % len(nodes)]]

        async def prepare(index: int) -> None:
            await writer.bind(spread(index, offset)).set_metadata({"title": f"moved {index}"})

        async def call(index: int) -> None:
            read = await store.bind(spread(index, offset)).get_metadata()
            assert read.title == f"moved {index}", (read.title, index)

        return Entry(name, call, prepare)

    for op, make, who in (
        ("set", op_set, names),
        ("get", op_get, names),
        ("find", op_find, names),
        ("get after set elsewhere", op_after, nodes if len(nodes) > 1 else []),
    ):
        if not who:
            continue
        entries = [make(name, offset) for offset, name in enumerate(who)]
        results += await measure("galera", op, entries, rounds=rounds, warmup=warmup)
    for wait, position in (("0", 0), ("7", 1)):
        entries = [Entry(name, held[name][position].select_one) for name in nodes]
        results += await measure(
            "galera", f"SELECT 1, wsrep_sync_wait={wait}", entries, rounds=rounds, warmup=warmup
        )
    return results


async def calls_per_second(
    kind: str,
    targets: list[MetadataStore[BenchMeta]],
    *,
    sessions: int,
    callers: int,
    seconds: float,
) -> float:
    """How many ``kind`` calls ``callers`` concurrent callers, spread over ``targets``, make."""
    owners = max(1, sessions // SESSIONS_PER_OWNER)
    stop = time.perf_counter() + seconds
    done = 0

    async def caller(number: int) -> None:
        nonlocal done
        store = targets[number % len(targets)]
        index = number
        while time.perf_counter() < stop:
            if kind == "set":
                await store.bind(session_id(index * 7919 % sessions)).set_metadata(
                    {"priority": index}
                )
            else:
                await store.find_sessions_by_metadata(
                    "owner_id", owner_of((index % owners) * SESSIONS_PER_OWNER)
                )
            done += 1
            index += callers

    started = time.perf_counter()
    await asyncio.gather(*(caller(number) for number in range(callers)))
    return done / (time.perf_counter() - started)


async def throughput(
    nodes: list[str],
    stores: dict[str, MetadataStore[BenchMeta]],
    *,
    sessions: int,
    callers: int,
    seconds: float,
) -> list[dict[str, Any]]:
    """Calls per second of ``callers`` concurrent callers on node 1, then on every node."""
    rows: list[dict[str, Any]] = []
    for kind in ("set", "find"):
        for spread_over in ([nodes[0]], nodes):
            rate = await calls_per_second(
                kind,
                [stores[name] for name in spread_over],
                sessions=sessions,
                callers=callers,
                seconds=seconds,
            )
            rows.append(
                {"op": kind, "nodes": len(spread_over), "callers": callers, "calls_per_s": rate}
            )
    return rows


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--urls", help="the cluster's nodes, comma-separated")
    parser.add_argument("--mysql-url", help="a standalone MariaDB to compare ('' for none)")
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--callers", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--quick", action="store_true", help="a tiny run")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    if args.quick:
        args.sessions, args.rounds, args.warmup, args.seconds = 200, 5, 1, 0.3
    urls = cluster_urls(args.urls)
    standalone = standalone_url(args.mysql_url)
    nodes = [f"node{number}" for number in range(1, len(urls) + 1)]
    names = nodes + ([STANDALONE] if standalone else [])
    engines = {name: create_async_engine(url) for name, url in zip(nodes, urls, strict=True)}
    if standalone:
        engines[STANDALONE] = create_async_engine(standalone)
    stores = {
        name: MetadataStore(
            BenchMeta,
            engine,
            sessions_table=SESSIONS_TABLE,
            metadata_table=METADATA_TABLE,
        )
        for name, engine in engines.items()
    }
    held: dict[str, tuple[Held, Held]] = {}
    try:
        for name in (nodes[0], STANDALONE) if standalone else (nodes[0],):
            await drop(engines[name])
            await seed(stores[name], args.sessions)
        for name in nodes:
            held[name] = (Held(engines[name], 0), Held(engines[name], 7))
            for one in held[name]:
                await one.open()
        results = await latency(
            names,
            stores,
            held,
            sessions=args.sessions,
            rounds=args.rounds,
            warmup=args.warmup,
        )
        rates = await throughput(
            nodes,
            stores,
            sessions=args.sessions,
            callers=args.callers,
            seconds=args.seconds,
        )
    finally:
        for pair in held.values():
            for one in pair:
                await one.close()
        for name in (nodes[0], STANDALONE) if standalone else (nodes[0],):
            await drop(engines[name])
        for engine in engines.values():
            await engine.dispose()
    print(format_table(results, []))
    print()
    for row in rates:
        print(
            f"{row['op']:<5} {row['callers']} callers on {row['nodes']} node(s): "
            f"{row['calls_per_s']:,.0f} calls/s"
        )
    info = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs; every node on this one host",
        "python": platform.python_version(),
        "sessions": args.sessions,
        "rounds": args.rounds,
        "nodes": len(nodes),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "galera.json").write_text(
        json.dumps(
            {"info": info, "results": [asdict(r) for r in results], "throughput": rates},
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    asyncio.run(main())
