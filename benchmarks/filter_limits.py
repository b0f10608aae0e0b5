"""Queries at the documented filter limits, on 100,000 sessions: do they answer in time?

    python benchmarks/filter_limits.py [--sessions 100000] [--postgres-url URL]

The limits (256 conditions, 10 keys, groups 32 deep; docs/queries.md) are checked
before any I/O; this measures the largest queries they let through, on PostgreSQL and
SQLite (WAL), with the store's default settings. Each figure is the median of 3 runs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from data import BenchMeta
from setup_db import METADATA_TABLE, SESSIONS_TABLE, create_tables, load_postgres, load_sqlite
from sqlalchemy.ext.asyncio import create_async_engine

from sessionmeta import MetadataStore, all_of, any_of, field
from sessionmeta.core.filters import MAX_FILTER_CONDITIONS, MAX_FILTER_DEPTH

N = MAX_FILTER_CONDITIONS


def nested(depth: int) -> Any:
    query: Any = field("priority") >= 0
    for level in range(depth - 1):
        group = any_of if level % 2 else all_of
        query = group(query, field("language") == "en")
    return query


NE_EACH_KEY = [
    field("owner_id") != "nobody",
    field("title") != "none",
    field("incognito") != True,  # noqa: E712 - a condition, not a comparison
    field("priority") != -1,
    field("score") != -1.0,
    field("started") != "2000-01-01T00:00:00Z",
    field("status") != "closed",
    field("language") != "xx",
    field("message_count") != -1,
]
PAIRS_OF_NE = any_of(
    *(all_of(field("priority") != i, field("message_count") != i) for i in range(N // 2))
)
PAIRS_OF_CONTAINS = any_of(
    *(
        all_of(field("tags").contains(f"t{i}"), field("tags").contains(f"u{i}"))
        for i in range(N // 2)
    )
)

QUERIES: dict[str, Callable[[MetadataStore[BenchMeta]], Awaitable[object]]] = {
    f"{N} ne ANDed (count)": lambda s: s.count_sessions(
        *(field("priority") != i for i in range(N))
    ),
    f"{N} ne ANDed (page of 50)": lambda s: s.find_sessions(
        *(field("priority") != i for i in range(N)), limit=50
    ),
    f"any_of {N} eq (count)": lambda s: s.count_sessions(
        any_of(*(field("priority") == i * 97 for i in range(N)))
    ),
    f"{N} ranges ANDed (count)": lambda s: s.count_sessions(
        *(field("priority") >= i for i in range(N))
    ),
    f"{N} mixed, owner first (page of 50)": lambda s: s.find_sessions(
        field("owner_id") == "user7",
        *(field("message_count") != i for i in range(N - 1)),
        limit=50,
    ),
    f"groups {MAX_FILTER_DEPTH} deep (count)": lambda s: s.count_sessions(nested(MAX_FILTER_DEPTH)),
    # Conditions on different keys, or in different groups, cannot be combined: these
    # are the most work a query within the limits can ask for.
    "ne on each of 9 keys (count)": lambda s: s.count_sessions(*NE_EACH_KEY),
    "ne on each of 9 keys (page of 50)": lambda s: s.find_sessions(*NE_EACH_KEY, limit=50),
    "any_of ne on each of 9 keys (count)": lambda s: s.count_sessions(any_of(*NE_EACH_KEY)),
    f"any_of {N // 2} groups of 2 contains (count)": lambda s: s.count_sessions(PAIRS_OF_CONTAINS),
    f"any_of {N // 2} groups of 2 ne (count)": lambda s: s.count_sessions(PAIRS_OF_NE),
    f"any_of {N // 2} groups of 2 ne (page of 50)": lambda s: s.find_sessions(
        PAIRS_OF_NE, limit=50
    ),
}


async def measure(store: MetadataStore[BenchMeta], backend: str) -> dict[str, float]:
    times: dict[str, float] = {}
    for name, query in QUERIES.items():
        runs = []
        for _ in range(3):
            started = time.perf_counter()
            await query(store)
            runs.append(time.perf_counter() - started)
        times[name] = statistics.median(runs)
        # As it goes: a query past its limit of patience shows which one it was.
        print(f"{backend:8} {name:40} {times[name]:10.3f} s", flush=True)
    return times


async def on_postgres(url: str, sessions: int) -> dict[str, float]:
    engine = create_async_engine(url)
    store = MetadataStore(
        BenchMeta, engine, sessions_table=SESSIONS_TABLE, metadata_table=METADATA_TABLE
    )
    try:
        await create_tables(engine, store)
        async with engine.connect() as connection:
            raw = (await connection.get_raw_connection()).driver_connection
            await load_postgres(raw, sessions)
        return await measure(store, "postgres")
    finally:
        await engine.dispose()


async def on_sqlite(sessions: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "limits.sqlite3"
        engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
        store = MetadataStore(
            BenchMeta, engine, sessions_table=SESSIONS_TABLE, metadata_table=METADATA_TABLE
        )
        try:
            await create_tables(engine, store)
            await engine.dispose()
            load_sqlite(str(path), sessions)
            return await measure(store, "sqlite")
        finally:
            await engine.dispose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--postgres-url", default="postgresql+asyncpg://postgres@127.0.0.1/test")
    parser.add_argument("--backends", default="postgres,sqlite")
    args = parser.parse_args()
    print(f"{args.sessions:,} sessions, median of 3 runs")
    if "postgres" in args.backends:
        await on_postgres(args.postgres_url, args.sessions)
    if "sqlite" in args.backends:
        await on_sqlite(args.sessions)


if __name__ == "__main__":
    asyncio.run(main())
