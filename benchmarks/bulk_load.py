"""Time ``store.set_many`` loading the benchmark's sessions into empty tables.

    python benchmarks/bulk_load.py                         # 10,000 sessions, SQLite and PostgreSQL
    python benchmarks/bulk_load.py --sessions 2000 --backends sqlite --compare 2000

Each session is the benchmark model's ten keys (``data.BenchMeta``, ``data.values_of``:
a list among them, so the items table is written too). A round drops and recreates the
tables, then loads every session with one ``set_many`` call. The first round runs on a
new store, so it includes compiling the statement shapes (once per process); the rest
reuse them. ``--compare N`` also times N ``bind(...).set_metadata`` calls, one per
session, on fresh tables. SQLite is a file in a temporary directory; PostgreSQL is
``--postgres-url``, else ``SESSIONMETA_BENCH_POSTGRES_URL``, else
``SESSIONMETA_TEST_POSTGRES_URL``, else the local server; MariaDB/MySQL (``--backends
...,mysql``) is ``--mysql-url``, else ``SESSIONMETA_TEST_MYSQL_URL``. Only tables named
``smbench_bulk_*`` are created and dropped. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# Benchmark this checkout's code, whatever is installed.
sys.path[:0] = [str(HERE), str(HERE.parent / "src")]

from data import BenchMeta, session_id, values_of  # noqa: E402
from sqlalchemy import text  # noqa: E402
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine  # noqa: E402

from sessionmeta import MetadataStore  # noqa: E402
from sessionmeta.core.bulk import encode_sessions  # noqa: E402

SESSIONS_TABLE = "smbench_bulk_sessions"
METADATA_TABLE = "smbench_bulk_metadata"
DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


def postgres_url(given: str | None) -> str:
    return (
        given
        or os.environ.get("SESSIONMETA_BENCH_POSTGRES_URL")
        or os.environ.get("SESSIONMETA_TEST_POSTGRES_URL")
        or DEFAULT_POSTGRES_URL
    )


def new_store(engine: AsyncEngine) -> MetadataStore[BenchMeta]:
    return MetadataStore(
        BenchMeta,
        engine,
        create_tables=True,
        sessions_table=SESSIONS_TABLE,
        metadata_table=METADATA_TABLE,
    )


async def fresh_tables(engine: AsyncEngine, store: MetadataStore[BenchMeta]) -> None:
    async with engine.begin() as connection:
        for table in (
            f"{METADATA_TABLE}_unique",
            f"{METADATA_TABLE}_items",
            METADATA_TABLE,
            SESSIONS_TABLE,
        ):
            await connection.execute(text(f"DROP TABLE IF EXISTS {table}"))
    await store.create_tables()


async def stored_rows(engine: AsyncEngine) -> tuple[int, int]:
    async with engine.connect() as connection:
        values = await connection.scalar(text(f"SELECT count(*) FROM {METADATA_TABLE}"))
        items = await connection.scalar(text(f"SELECT count(*) FROM {METADATA_TABLE}_items"))
    return int(values or 0), int(items or 0)


async def measure(url: str, sessions: int, rounds: int, compare: int) -> dict[str, Any]:
    engine = create_async_engine(url)
    values = {session_id(index): values_of(index) for index in range(sessions)}
    try:
        store = new_store(engine)
        started = time.perf_counter()
        encode_sessions(store.spec, values)
        encode = time.perf_counter() - started
        loads: list[float] = []
        for _ in range(rounds):
            await fresh_tables(engine, store)
            started = time.perf_counter()
            await store.set_many(values)
            loads.append(time.perf_counter() - started)
        rows, items = await stored_rows(engine)
        assert rows == sum(len(v) for v in values.values()), rows
        single = None
        if compare:
            await fresh_tables(engine, store)
            started = time.perf_counter()
            for index in range(compare):
                await store.bind(session_id(index)).set_metadata(values_of(index))
            single = time.perf_counter() - started
        await fresh_tables(engine, store)
        async with engine.begin() as connection:
            for table in (
                f"{METADATA_TABLE}_unique",
                f"{METADATA_TABLE}_items",
                METADATA_TABLE,
                SESSIONS_TABLE,
            ):
                await connection.execute(text(f"DROP TABLE IF EXISTS {table}"))
    finally:
        await engine.dispose()
    return {
        "encode": encode,
        "first": loads[0],
        "warm": statistics.median(loads[1:]) if len(loads) > 1 else None,
        "rows": rows,
        "items": items,
        "single": single,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=4, help="loads per backend (first cold)")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--postgres-url")
    parser.add_argument("--mysql-url")
    parser.add_argument(
        "--compare", type=int, default=0, help="also time this many single set_metadata calls"
    )
    args = parser.parse_args()
    print(f"set_many of {args.sessions:,} sessions of ten keys (BenchMeta), into empty tables")
    with tempfile.TemporaryDirectory() as workdir:
        urls = {
            "sqlite": f"sqlite+aiosqlite:///{Path(workdir) / 'bulk.sqlite3'}",
            "postgres": postgres_url(args.postgres_url),
            "mysql": args.mysql_url
            or os.environ.get("SESSIONMETA_TEST_MYSQL_URL", "mysql+aiomysql://root@127.0.0.1/test"),
        }
        for backend in args.backends.split(","):
            result = asyncio.run(measure(urls[backend], args.sessions, args.rounds, args.compare))
            warm = result["warm"]
            line = (
                f"{backend:>9}: first call {result['first']:.2f} s, "
                f"then {warm:.2f} s (median of {args.rounds - 1})"
                if warm is not None
                else f"{backend:>9}: {result['first']:.2f} s"
            )
            print(
                f"{line}; {args.sessions / (warm or result['first']):,.0f} sessions/s; "
                f"of which validating and encoding {result['encode']:.2f} s; "
                f"{result['rows']:,} value rows, {result['items']:,} item rows"
            )
            if result["single"] is not None:
                print(
                    f"{'':>9}  {args.compare:,} set_metadata calls, one per session: "
                    f"{result['single']:.2f} s"
                )


if __name__ == "__main__":
    main()
