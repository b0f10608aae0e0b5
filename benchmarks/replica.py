"""Reads on a PostgreSQL hot standby: latency per node, replication delay, and the find
throughput one reader (the primary) holds against two (the primary and the standby).

    bash scripts/pg-replica.sh start             # a standby of the local server on :5433
    python benchmarks/replica.py                 # 20,000 sessions, 10 s per throughput run
    python benchmarks/replica.py --quick         # 2,000 sessions, 2 s per run

PostgreSQL is ``--postgres-url`` (else SESSIONMETA_BENCH_POSTGRES_URL,
SESSIONMETA_TEST_POSTGRES_URL, the local ``test`` database); the standby
``--replica-url`` (else SESSIONMETA_BENCH_REPLICA_URL, SESSIONMETA_TEST_REPLICA_URL, the
PostgreSQL URL on port 5433): a standby of that server, holding the same database. Only
tables named ``smbench_replica_*`` are created and dropped.

Three measurements, each on the same data (``--sessions`` sessions of ten keys):

1. Latency per node: the median of one call at a time, interleaved, of a find (equality,
   100 sessions), a listing (equality, 50 sessions with their metadata), a count (the
   sessions whose tags hold an element: half the table), and a single session's read, on
   the primary and on the standby (through a store whose engine is the standby's: reads
   only); and a write, on the primary (a standby takes none).
2. Replication delay: from a write's commit on the primary until a find on the standby
   returns it, polled every millisecond.
3. Throughput: ``--concurrency`` tasks call one operation in a loop for ``--seconds``,
   all on the primary ("one reader"), or every other task through a store whose
   ``read_engine`` is the standby ("two readers"); the runs alternate, ``--repeats``
   times, and the median rate is reported.

Caveat: the primary, the standby and this client share one host (here 2 cores). A
standby on a machine of its own adds its CPU; here it only shares the same cores, and
replaying the primary's WAL costs it some. Read the figures as what routing costs and
what a second server on a saturated host gives, not as what a second host would.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "src")]

from data import SESSIONS_PER_OWNER, BenchMeta, owner_of, session_id, values_of  # noqa: E402
from harness import Entry, add_ratios, format_table, measure  # noqa: E402
from sqlalchemy import text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine  # noqa: E402

from sessionmeta import MetadataStore, field  # noqa: E402

SESSIONS_TABLE = "smbench_replica_sessions"
METADATA_TABLE = "smbench_replica_metadata"
TABLES = (f"{METADATA_TABLE}_unique", f"{METADATA_TABLE}_items", METADATA_TABLE, SESSIONS_TABLE)

Operation = Callable[[MetadataStore[BenchMeta], int], Awaitable[Any]]


def _say(message: str) -> None:
    print(f"replica benchmark: {message}", file=sys.stderr, flush=True)


def primary_url(given: str | None) -> str:
    return (
        given
        or os.environ.get("SESSIONMETA_BENCH_POSTGRES_URL")
        or os.environ.get("SESSIONMETA_TEST_POSTGRES_URL")
        or "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
    )


def replica_url(given: str | None, primary: str) -> str:
    return (
        given
        or os.environ.get("SESSIONMETA_BENCH_REPLICA_URL")
        or os.environ.get("SESSIONMETA_TEST_REPLICA_URL")
        or make_url(primary).set(port=5433).render_as_string(hide_password=False)
    )


def operations(sessions: int) -> dict[str, Operation]:
    owners = max(1, sessions // SESSIONS_PER_OWNER)

    async def find(store: MetadataStore[BenchMeta], index: int) -> Any:
        owner = owner_of((index % owners) * SESSIONS_PER_OWNER)
        return await store.find_sessions({"owner_id": owner}, limit=100)

    async def listing(store: MetadataStore[BenchMeta], index: int) -> Any:
        owner = owner_of((index % owners) * SESSIONS_PER_OWNER)
        return await store.list_sessions({"owner_id": owner}, limit=50)

    async def count(store: MetadataStore[BenchMeta], index: int) -> Any:
        return await store.count_sessions(field("tags").contains("billing"))

    return {
        "find (equality, 100 sessions)": find,
        "list (equality, 50 sessions)": listing,
        "count (contains, half the table)": count,
    }


async def caught_up(primary: AsyncEngine, replica: AsyncEngine, timeout: float = 300) -> None:
    async with primary.connect() as connection:
        lsn = await connection.scalar(text("SELECT pg_current_wal_lsn()::text"))
    deadline = time.monotonic() + timeout
    async with replica.connect() as connection:
        while not await connection.scalar(
            text("SELECT pg_last_wal_replay_lsn() >= CAST(CAST(:lsn AS text) AS pg_lsn)"),
            {"lsn": lsn},
        ):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the standby did not replay up to {lsn} in {timeout} s")
            await asyncio.sleep(0.05)


async def check_standby(primary: AsyncEngine, replica: AsyncEngine) -> None:
    async with primary.connect() as connection:
        system = await connection.scalar(text("SELECT system_identifier FROM pg_control_system()"))
    async with replica.connect() as connection:
        in_recovery, standby_of = (
            await connection.execute(
                text("SELECT pg_is_in_recovery(), system_identifier FROM pg_control_system()")
            )
        ).one()
    if not in_recovery or standby_of != system:
        raise SystemExit(
            f"{make_url(str(replica.url)).render_as_string(hide_password=True)} is not a "
            "standby of the PostgreSQL server (scripts/pg-replica.sh start makes one)"
        )


async def load(store: MetadataStore[BenchMeta], sessions: int) -> None:
    async with store.engine.begin() as connection:
        for table in TABLES:
            await connection.execute(text(f"DROP TABLE IF EXISTS {table}"))
    await store.create_tables()
    chunk = 2000
    for start in range(0, sessions, chunk):
        stop = min(start + chunk, sessions)
        await store.set_many({session_id(i): values_of(i) for i in range(start, stop)})
    async with store.engine.connect() as connection:
        await connection.execute(text(f"ANALYZE {METADATA_TABLE}"))
        await connection.execute(text(f"ANALYZE {METADATA_TABLE}_items"))
        await connection.execute(text(f"ANALYZE {SESSIONS_TABLE}"))
        await connection.commit()


async def latencies(
    on_primary: MetadataStore[BenchMeta],
    on_standby: MetadataStore[BenchMeta],
    sessions: int,
    calls: int,
) -> list[Any]:
    results = []
    for name, operation in operations(sessions).items():

        def entry(impl: str, store: MetadataStore[BenchMeta], op: Operation = operation) -> Entry:
            async def call(index: int) -> Any:
                return await op(store, index)

            return Entry(impl, call)

        results += await measure(
            "postgresql",
            name,
            [entry("primary", on_primary), entry("standby", on_standby)],
            rounds=calls,
            warmup=max(5, calls // 10),
        )

    async def read_primary(index: int) -> Any:
        return await on_primary.bind(session_id(index % sessions)).get_metadata()

    async def read_standby(index: int) -> Any:
        return await on_standby.bind(session_id(index % sessions)).get_metadata()

    results += await measure(
        "postgresql",
        "get_metadata (one session)",
        [Entry("primary", read_primary), Entry("standby", read_standby)],
        rounds=calls,
        warmup=max(5, calls // 10),
    )

    async def write(index: int) -> Any:
        return await on_primary.bind(session_id(index % sessions)).set_metadata(
            {"message_count": index % 97}
        )

    results += await measure(
        "postgresql",
        "set_metadata (one key)",
        [Entry("primary", write)],
        rounds=calls,
        warmup=max(5, calls // 10),
    )
    add_ratios(results, ["primary"])
    return results


async def replication_delay(
    on_primary: MetadataStore[BenchMeta], routed: MetadataStore[BenchMeta], writes: int
) -> list[float]:
    """Milliseconds from a write's return on the primary until a find on the standby sees it."""
    delays = []
    for number in range(writes):
        marker = f"delay-{number}-{time.time_ns()}"
        await on_primary.bind("delay-probe").set_metadata({"title": marker})
        start = time.perf_counter()
        while not await routed.find_sessions_by_metadata("title", marker, limit=1):
            if time.perf_counter() - start > 30:
                raise RuntimeError("the standby did not show a write within 30 s")
            await asyncio.sleep(0.001)
        delays.append((time.perf_counter() - start) * 1000)
    return delays


async def throughput(
    stores: list[MetadataStore[BenchMeta]], operation: Operation, concurrency: int, seconds: float
) -> float:
    """Calls per second of ``concurrency`` tasks, task ``i`` on ``stores[i % len(stores)]``."""
    done = [0] * concurrency
    stop = time.perf_counter() + seconds

    async def worker(number: int) -> None:
        store = stores[number % len(stores)]
        index = number * 7919
        while time.perf_counter() < stop:
            await operation(store, index)
            index += 1
            done[number] += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker(number) for number in range(concurrency)))
    return sum(done) / (time.perf_counter() - start)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    url = primary_url(args.postgres_url)
    standby_url = replica_url(args.replica_url, url)
    pool = {"pool_size": args.concurrency, "max_overflow": 0}
    primary = create_async_engine(url, **pool)
    replica = create_async_engine(standby_url, **pool)
    try:
        await check_standby(primary, replica)

        def store(engine: AsyncEngine, **more: Any) -> MetadataStore[BenchMeta]:
            return MetadataStore(
                BenchMeta,
                engine,
                sessions_table=SESSIONS_TABLE,
                metadata_table=METADATA_TABLE,
                **more,
            )

        on_primary = store(primary)
        # Reads only: a store whose engine is the standby's (every read there).
        on_standby = store(replica)
        routed = store(primary, read_engine=replica)
        _say(f"loading {args.sessions:,} sessions")
        await load(on_primary, args.sessions)
        await caught_up(primary, replica)

        _say(f"latency per node: {args.calls} calls of each operation")
        results = await latencies(on_primary, on_standby, args.sessions, args.calls)
        await caught_up(primary, replica)
        _say(f"replication delay: {args.delay_writes} writes")
        delays = await replication_delay(on_primary, routed, args.delay_writes)

        rates: list[dict[str, Any]] = []
        for name, operation in operations(args.sessions).items():
            one: list[float] = []
            two: list[float] = []
            for repeat in range(args.repeats):
                _say(f"throughput of {name}: run {repeat + 1} of {args.repeats}")
                one.append(
                    await throughput([on_primary], operation, args.concurrency, args.seconds)
                )
                two.append(
                    await throughput(
                        [on_primary, routed], operation, args.concurrency, args.seconds
                    )
                )
            rates.append(
                {
                    "operation": name,
                    "one_reader_per_s": statistics.median(one),
                    "two_readers_per_s": statistics.median(two),
                    "one_reader_runs": one,
                    "two_readers_runs": two,
                }
            )
        async with primary.begin() as connection:
            for table in TABLES:
                await connection.execute(text(f"DROP TABLE IF EXISTS {table}"))
    finally:
        await primary.dispose()
        await replica.dispose()
    return {
        "info": {
            "sessions": args.sessions,
            "concurrency": args.concurrency,
            "seconds": args.seconds,
            "repeats": args.repeats,
            "cpus": os.cpu_count(),
            # Other work on the host shows here: figures under load are noisier and lower.
            "load_average": [round(load_before, 1), round(os.getloadavg()[0], 1)],
            "python": platform.python_version(),
            "primary": make_url(url).render_as_string(hide_password=True),
            "standby": make_url(standby_url).render_as_string(hide_password=True),
        },
        "latency": [asdict(result) for result in results],
        "replication_delay_ms": {
            "median": statistics.median(delays),
            "min": min(delays),
            "max": max(delays),
            "writes": len(delays),
        },
        "throughput": rates,
        "latency_table": format_table(results, ["primary"]),
    }


def report(found: dict[str, Any]) -> str:
    info = found["info"]
    lines = [
        f"{info['sessions']:,} sessions; one host, {info['cpus']} cores, shared by the "
        "primary, the standby and this client (load average "
        f"{info['load_average'][0]} before, {info['load_average'][1]} after)",
        "",
        "Latency per node (one call at a time)",
        found["latency_table"],
        "",
        "Replication delay (a write on the primary until a find on the standby sees it): "
        f"median {found['replication_delay_ms']['median']:.1f} ms, "
        f"min {found['replication_delay_ms']['min']:.1f}, "
        f"max {found['replication_delay_ms']['max']:.1f} "
        f"({found['replication_delay_ms']['writes']} writes)",
        "",
        f"Throughput, {info['concurrency']} concurrent tasks, {info['seconds']} s per run, "
        f"median of {info['repeats']} runs",
    ]
    rows = [["operation", "one reader /s", "two readers /s", "ratio"]]
    for rate in found["throughput"]:
        one, two = rate["one_reader_per_s"], rate["two_readers_per_s"]
        rows.append([rate["operation"], f"{one:,.0f}", f"{two:,.0f}", f"{two / one:.2f}"])
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for number, row in enumerate(rows):
        lines.append(
            "  ".join(
                cell.ljust(width) if i == 0 else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )
        if number == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres-url", help="the primary (postgresql+asyncpg://...)")
    parser.add_argument("--replica-url", help="its hot standby, holding the same database")
    parser.add_argument("--sessions", type=int, default=20_000)
    parser.add_argument("--calls", type=int, default=300, help="timed calls per latency")
    parser.add_argument("--delay-writes", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8, help="tasks in throughput runs")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each run")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each configuration")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    parser.add_argument("--quick", action="store_true", help="a tiny run, to check that it works")
    args = parser.parse_args(argv)
    if args.quick:
        args.sessions, args.calls, args.delay_writes = 2_000, 20, 5
        args.seconds, args.repeats = 2.0, 1
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    found = asyncio.run(run(args))
    print(report(found))
    if args.out is not None:
        args.out.write_text(json.dumps(found, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
