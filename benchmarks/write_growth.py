"""Write latency as the tables grow, on one pool kept for the whole run.

    python benchmarks/write_growth.py                  # PostgreSQL and MariaDB, 1k to 1M sessions
    python benchmarks/write_growth.py --quick          # seconds: proves the command works
    python benchmarks/write_growth.py --backends postgres --sizes 1000,10000,100000

For each backend one engine (one SQLAlchemy pool, default settings) and one store are
made at the start and kept to the end. The store first writes and reads a few sessions
on the empty tables, as an application starting on a new database does, so its pooled
connections prepare their statements while the tables are empty (those sessions are
then deleted). Then the tables grow in steps, the benchmark model's ten keys per session
(a list among them), with one ``set_metadata`` and one ``get_metadata`` through the pool
between chunks, so it keeps serving as the tables grow. MariaDB and SQLite load through
the same store, ``set_many`` of ``--chunk`` sessions at a time. PostgreSQL loads with
COPY on a connection of its own, the rows exactly as ``set_many`` stores them
(``setup_db.check_encoding``): ``set_many`` on a pool that has served since the tables
were empty slows down as they grow (its foreign-key checks run a plan cached then; see
benchmarks/README.md), to about 100 sessions a second past 100,000, so a million would
take a day; ``--load set_many`` loads through the store there too. At each size
(``--sizes``) three calls are timed:

* ``set existing``: ``bind(sid).set_metadata(...)`` of all ten keys, new values, to a
  session already stored (a different one each call, spread over the whole table);
* ``set new``: the same to a session that does not exist yet (its id sorts next to a
  stored one, so new rows land all over the table's index, as random ids do);
* ``get``: ``bind(sid).get_metadata()`` of a stored session.

The same three calls run on a fresh engine (a new pool, its connections opened at this
size) in the same rounds, in a rotating order, so both see the same noise. Each figure
is the median of ``--calls`` calls (after ``--warmup``), with its ratio to the figure at
the first size. The new sessions are deleted after each step, so every step measures
the size it names. A ``SELECT 1`` on the fresh pool, timed in the same rounds, shows how
loaded the machine was at each size. Recorded too, per timed call: on PostgreSQL the
blocks of these tables read from outside the shared buffers, their sequential scans and
the rows these read, and (server-wide) WAL full-page images and bytes; on MariaDB
InnoDB's pages read from disk and its logical reads (server-wide). On PostgreSQL also
the counts of generic and custom plans of a pooled connection's prepared statements
(``pg_prepared_statements``), and whether the tables were ever analyzed. Output: a
table, and ``write_growth.json`` in ``--out``.
PostgreSQL is ``--postgres-url``, else ``SESSIONMETA_BENCH_POSTGRES_URL``, else
``SESSIONMETA_TEST_POSTGRES_URL``, else the local ``test`` database; MariaDB/MySQL
likewise ``--mysql-url``, ``SESSIONMETA_BENCH_MYSQL_URL``, ``SESSIONMETA_TEST_MYSQL_URL``;
SQLite (``--backends sqlite``) a file in a temporary directory. Only the tables
``smbench_grow_*`` are created, and they are dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# Benchmark this checkout's code, whatever is installed.
sys.path[:0] = [str(HERE), str(HERE.parent / "src")]

from data import KEYS, BenchMeta, session_id, values_of  # noqa: E402
from harness import Entry, Result, measure  # noqa: E402
from setup_db import ITEM_COLUMNS, all_rows, batches, check_encoding  # noqa: E402
from sqlalchemy import text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine  # noqa: E402
from sqlalchemy.pool import NullPool  # noqa: E402

import sessionmeta  # noqa: E402
from sessionmeta import MetadataStore  # noqa: E402

SESSIONS = "smbench_grow_sessions"
METADATA = "smbench_grow_metadata"
TABLES = (f"{METADATA}_items", METADATA, SESSIONS)
VALUE_COLUMNS = ["session_id", "key", "value", "value_hash", "sort_key"]
OPS = ("set existing", "set new", "get")
ROUND_TRIP = "SELECT 1"
POOLED, FRESH = "pooled", "fresh pool"
DEFAULT_URLS = {
    "postgres": "postgresql+asyncpg://postgres@127.0.0.1:5432/test",
    "mysql": "mysql+aiomysql://root@127.0.0.1:3306/test",
}


def say(text_: str) -> None:
    print(f"  {text_}", file=sys.stderr, flush=True)


def server_url(backend: str, given: str | None) -> str:
    name = "POSTGRES" if backend == "postgres" else "MYSQL"
    return (
        given
        or os.environ.get(f"SESSIONMETA_BENCH_{name}_URL")
        or os.environ.get(f"SESSIONMETA_TEST_{name}_URL")
        or DEFAULT_URLS[backend]
    )


def new_store(engine: AsyncEngine) -> MetadataStore[BenchMeta]:
    return MetadataStore(BenchMeta, engine, sessions_table=SESSIONS, metadata_table=METADATA)


async def drop_tables(admin: AsyncEngine) -> None:
    async with admin.begin() as connection:
        # The claims of unique fields too: the store's create_tables() makes that table.
        for table in (f"{METADATA}_unique", *TABLES):
            await connection.execute(text(f"DROP TABLE IF EXISTS {table}"))


async def delete_sessions(admin: AsyncEngine, ids: list[str]) -> None:
    """Delete session rows (their metadata and items follow by cascade)."""
    async with admin.begin() as connection:
        for first in range(0, len(ids), 500):
            chunk = ids[first : first + 500]
            marks = ", ".join(f":id{number}" for number in range(len(chunk)))
            await connection.execute(
                text(f"DELETE FROM {SESSIONS} WHERE session_id IN ({marks})"),
                {f"id{number}": sid for number, sid in enumerate(chunk)},
            )


async def load(
    store: MetadataStore[BenchMeta], start: int, stop: int, chunk: int, copy: Any = None
) -> None:
    """Sessions ``start`` to ``stop``: ``set_many`` of ``chunk`` at a time, or COPY on the
    asyncpg connection ``copy`` (chunks of at least 5,000).

    Between chunks the store keeps serving single calls, a write and a read, as an
    application's would: its pooled connections keep their prepared statements (asyncpg
    drops one unused for five minutes), and the plans cached for them.
    """
    started = time.perf_counter()
    step = max((stop - start) // 10, 1)
    shown = start
    for batch in batches(start, stop, chunk if copy is None else max(chunk, 5000)):
        if copy is None:
            await store.set_many({session_id(index): values_of(index) for index in batch})
        else:
            ids = [(session_id(index),) for index in batch]
            await copy.copy_records_to_table(SESSIONS, records=ids, columns=["session_id"])
            rows, items = all_rows(batch)
            await copy.copy_records_to_table(METADATA, records=rows, columns=VALUE_COLUMNS)
            await copy.copy_records_to_table(TABLES[0], records=items, columns=ITEM_COLUMNS)
        bound = store.bind(session_id(batch.start))
        await bound.set_metadata(values_of(batch.start))
        await bound.get_metadata()
        if batch.stop - shown >= step and batch.stop < stop:
            shown = batch.stop
            rate = (batch.stop - start) / (time.perf_counter() - started)
            say(f"loaded {batch.stop:,} sessions ({rate:,.0f} a second)")


class Calls:
    """The three timed calls on one store, each on its own sessions."""

    def __init__(self, store: MetadataStore[BenchMeta], size: int, label: str, shift: int):
        self.store = store
        self.size = size
        self.label = label
        self.shift = shift
        # The values written over a stored session's: another session's, never its own,
        # and not what the other pool writes should both pick the same session.
        self.bump = 1 if label == POOLED else 2
        self.created: list[str] = []

    def stored(self, i: int) -> int:
        # A different session each call, anywhere in the table.
        return (i * 7_919 + self.shift) % self.size

    async def set_existing(self, i: int) -> None:
        index = self.stored(i)
        # All ten keys change: the list field's elements are replaced too.
        await self.store.bind(session_id(index)).set_metadata(values_of(index + self.bump))

    async def set_new(self, i: int) -> None:
        index = self.stored(i + 1)
        sid = f"{session_id(index)}-new-{self.label[0]}{i}"
        self.created.append(sid)
        await self.store.bind(sid).set_metadata(values_of(index))

    async def get(self, i: int) -> None:
        got = await self.store.bind(session_id(self.stored(i + 2))).get_metadata()
        assert len(got.model_fields_set) == len(KEYS), got

    def entries(self) -> list[Entry]:
        calls: list[Callable[[int], Awaitable[None]]] = [self.set_existing, self.set_new, self.get]
        return [Entry(f"{op}, {self.label}", call) for op, call in zip(OPS, calls, strict=True)]


async def postgres_state(engine: AsyncEngine, admin: AsyncEngine) -> dict[str, Any]:
    """Plans cached on one of ``engine``'s pooled connections, and the tables' statistics."""
    state: dict[str, Any] = {}
    async with engine.connect() as connection:
        rows = await connection.exec_driver_sql(
            "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements"
            " ORDER BY generic_plans + custom_plans DESC"
        )
        state["prepared"] = [
            {"statement": shown, "generic_plans": generic, "custom_plans": custom}
            for shown, generic, custom in ((" ".join(s.split()), g, c) for s, g, c in rows)
            if METADATA in shown and shown.startswith(("SELECT", "WITH", "INSERT", "DELETE"))
        ]
    async with admin.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT relname, n_live_tup, n_mod_since_analyze,"
                " greatest(last_analyze, last_autoanalyze) IS NOT NULL"
                " FROM pg_stat_user_tables WHERE relname LIKE 'smbench_grow_%' ORDER BY relname"
            )
        )
        state["tables"] = [
            {"table": name, "live": live, "modified_since_analyze": modified, "analyzed": done}
            for name, live, modified, done in rows
        ]
    return state


# What the database did during the timed calls, read before and after them: blocks of
# our tables read from outside PostgreSQL's shared buffers (from the OS or the disk) and
# sequential scans of them (a plan that stopped using an index shows here), and,
# server-wide (other clients count too), WAL full-page images and bytes, or InnoDB's
# pages read from disk and logical reads.
COUNTERS = {
    "postgres": (
        "SELECT 'blocks read', sum(coalesce(heap_blks_read, 0) + coalesce(idx_blks_read, 0))"
        " FROM pg_statio_user_tables WHERE relname LIKE 'smbench_grow_%'"
        " UNION ALL SELECT 'blocks hit',"
        " sum(coalesce(heap_blks_hit, 0) + coalesce(idx_blks_hit, 0))"
        " FROM pg_statio_user_tables WHERE relname LIKE 'smbench_grow_%'"
        " UNION ALL SELECT 'sequential scans', sum(seq_scan)"
        " FROM pg_stat_user_tables WHERE relname LIKE 'smbench_grow_%'"
        " UNION ALL SELECT 'rows read by them', sum(seq_tup_read)"
        " FROM pg_stat_user_tables WHERE relname LIKE 'smbench_grow_%'"
        " UNION ALL SELECT 'WAL full-page images (server)', wal_fpi FROM pg_stat_wal"
        " UNION ALL SELECT 'WAL bytes (server)', wal_bytes FROM pg_stat_wal"
    ),
    "mysql": (
        "SELECT 'InnoDB pages read from disk (server)', VARIABLE_VALUE"
        " FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'INNODB_BUFFER_POOL_READS'"
        " UNION ALL SELECT 'InnoDB logical reads (server)', VARIABLE_VALUE"
        " FROM information_schema.GLOBAL_STATUS"
        " WHERE VARIABLE_NAME = 'INNODB_BUFFER_POOL_READ_REQUESTS'"
    ),
}
# PostgreSQL's backends report their statistics at most once a second, and an idle one
# within ten: wait that long before reading them.
STATISTICS_DELAY_S = {"postgres": 11.0}


async def counters(backend: str, admin: AsyncEngine, settle: bool) -> dict[str, float]:
    if backend not in COUNTERS:
        return {}
    if settle:
        await asyncio.sleep(STATISTICS_DELAY_S.get(backend, 0))
    async with admin.connect() as connection:
        rows = await connection.execute(text(COUNTERS[backend]))
        return {str(name): float(value or 0) for name, value in rows}


async def run_backend(backend: str, url: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    engine = create_async_engine(url)  # the one pool, kept for the whole run
    admin = create_async_engine(url, poolclass=NullPool)  # DDL and clean-up, outside it
    store = new_store(engine)
    steps: list[dict[str, Any]] = []
    copy = None
    if backend == "postgres" and args.load == "auto":
        import asyncpg

        check_encoding()  # COPY stores exactly what set_many would
        copy = await asyncpg.connect(
            make_url(url).set(drivername="postgresql").render_as_string(False)
        )
    try:
        await drop_tables(admin)
        await store.create_tables()
        # An application starting on empty tables: the pooled connections prepare the
        # statements now.
        warm = Calls(store, 1, "warm", 0)
        for i in range(max(args.warmup, 10)):
            await warm.set_new(i)
            bound = store.bind(warm.created[-1])
            await bound.set_metadata(values_of(i + 1))  # to a session that exists
            await bound.get_metadata()
        await delete_sessions(admin, warm.created)
        loaded = 0
        for size in sorted(args.sizes):
            started = time.perf_counter()
            await load(store, loaded, size, args.chunk, copy)
            loaded = size
            load_s = time.perf_counter() - started
            say(f"{backend}: {size:,} sessions loaded ({load_s:.0f} s)")
            fresh_engine = create_async_engine(url)
            pooled = Calls(store, size, POOLED, 13)
            fresh = Calls(new_store(fresh_engine), size, FRESH, 13 + size // 2)

            async def select_1(i: int, engine: AsyncEngine = fresh_engine) -> None:
                # The round trip alone: how loaded the machine and the server are.
                async with engine.connect() as connection:
                    await connection.exec_driver_sql("SELECT 1")

            before = await counters(backend, admin, settle=not args.quick)
            started = time.perf_counter()
            try:
                results = await measure(
                    backend,
                    "write growth",
                    [*pooled.entries(), *fresh.entries(), Entry(ROUND_TRIP, select_1)],
                    rounds=args.calls,
                    warmup=args.warmup,
                    sessions=size,
                )
            finally:
                await fresh_engine.dispose()
            measured_s = time.perf_counter() - started
            after = await counters(backend, admin, settle=not args.quick)
            calls = 2 * len(OPS) * (args.calls + args.warmup)
            step: dict[str, Any] = {
                "backend": backend,
                "sessions": size,
                "load_seconds": round(load_s, 1),
                "measure_seconds": round(measured_s, 1),
                "results": results,
                "per_call": {name: (after[name] - before[name]) / calls for name in after},
            }
            if backend == "postgres":
                step["postgres"] = await postgres_state(engine, admin)
            steps.append(step)
            await delete_sessions(admin, pooled.created + fresh.created)
            say(f"{backend}: {size:,} sessions measured")
    finally:
        if copy is not None:
            await copy.close()
        await store.close()
        await engine.dispose()
        try:
            await drop_tables(admin)
        finally:
            await admin.dispose()
    return steps


def figure(step: dict[str, Any], name: str) -> float:
    result: Result = next(r for r in step["results"] if r.impl == name)
    return result.median_us / 1000


def table(steps: list[dict[str, Any]]) -> str:
    """One row per size and backend: each median in ms, with its ratio to the first size."""
    names = [f"{op}, {where}" for where in (POOLED, FRESH) for op in OPS] + [ROUND_TRIP]
    headers = ["sessions", "backend"]
    headers += [name.replace(", ", " (") + ")" if ", " in name else name for name in names]
    lines = [headers]
    first: dict[tuple[str, str], float] = {}
    for step in steps:
        row = [f"{step['sessions']:,}", step["backend"]]
        for name in names:
            ms = figure(step, name)
            base = first.setdefault((step["backend"], name), ms)
            row.append(f"{ms:.2f} ({ms / base:.2f}x)")
        lines.append(row)
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]
    out = []
    for number, line in enumerate(lines):
        cells = [
            cell.ljust(width) if i == 1 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
        if number == 0:
            out.append("  ".join("-" * width for width in widths))
    return "\n".join(out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--backends", default="postgres,mysql", help="comma-separated: postgres, mysql, sqlite"
    )
    parser.add_argument("--postgres-url", help="an async SQLAlchemy URL (postgresql+asyncpg://...)")
    parser.add_argument("--mysql-url", help="an async SQLAlchemy URL (mysql+aiomysql://...)")
    parser.add_argument(
        "--sizes", default="1000,10000,100000,1000000", help="table sizes in sessions, ascending"
    )
    parser.add_argument("--calls", type=int, default=300, help="timed calls of each operation")
    parser.add_argument("--warmup", type=int, default=20, help="untimed calls before them")
    parser.add_argument("--chunk", type=int, default=1000, help="sessions per set_many call")
    parser.add_argument(
        "--load",
        choices=("auto", "set_many"),
        default="auto",
        help="auto: COPY on PostgreSQL, set_many elsewhere; set_many: through the store everywhere",
    )
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--quick", action="store_true", help="a tiny run, to check that it works")
    args = parser.parse_args(argv)
    given = " ".join(sys.argv if argv is None else argv)
    if args.quick:
        args.calls, args.warmup, args.chunk = 5, 2, 100
        if "--sizes" not in given:
            args.sizes = "200,500"
    args.sizes = sorted(int(size) for size in args.sizes.split(",") if size.strip())
    args.backends = [name.strip() for name in args.backends.split(",") if name.strip()]
    unknown = [name for name in args.backends if name not in ("postgres", "mysql", "sqlite")]
    if unknown:
        parser.error(f"unknown backends {', '.join(unknown)}: choose from postgres, mysql, sqlite")
    if not args.sizes or args.sizes[0] < 10:
        parser.error("--sizes: at least one size, each at least 10 sessions")
    return args


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    steps: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="sessionmeta-growth-") as tmp:
        for backend in args.backends:
            if backend == "sqlite":
                url = f"sqlite+aiosqlite:///{Path(tmp) / 'growth.sqlite3'}"
            else:
                url = server_url(backend, getattr(args, f"{backend}_url"))
            steps += await run_backend(backend, url, args)
    print(
        f"\nMedian ms of {args.calls} calls (x the figure at {args.sizes[0]:,} sessions); "
        "one pool for the whole run, and a fresh pool at each size"
    )
    print(table(steps))
    for step in steps:
        notes = []
        if step["per_call"]:
            notes.append(
                "per timed call: "
                + ", ".join(f"{name} {value:,.1f}" for name, value in step["per_call"].items())
            )
        for prepared in step.get("postgres", {}).get("prepared", []):
            notes.append(
                f"{prepared['generic_plans']} generic / {prepared['custom_plans']} custom plans: "
                f"{prepared['statement'][:70]}..."
            )
        for stats in step.get("postgres", {}).get("tables", []):
            notes.append(
                f"{stats['table']}: {stats['live']:,} live rows, "
                f"{stats['modified_since_analyze']:,} changed since the last analyze"
                + ("" if stats["analyzed"] else " (never analyzed)")
            )
        if notes:
            print(f"\n{step['backend']} at {step['sessions']:,} sessions:")
            print("\n".join(f"  {note}" for note in notes))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "write_growth.json"
    info = {
        "command": " ".join(sys.argv),
        "sessionmeta": sessionmeta.__version__,
        "python": platform.python_version(),
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "load average": os.getloadavg(),
        "calls": args.calls,
        "warmup": args.warmup,
        "chunk": args.chunk,
        "load": args.load,
    }
    serial = [{**step, "results": [vars(result) for result in step["results"]]} for step in steps]
    path.write_text(json.dumps({"info": info, "steps": serial}, indent=2, default=str) + "\n")
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
