"""PostgreSQL scaling runs: find and list as the table grows to millions of sessions.

The table is grown in steps (10,000, 100,000, 1,000,000 sessions of ten keys
each) with COPY, its indexes and constraints dropped during each load and
rebuilt after it, then vacuumed and analysed, as a table in steady service is.
Each step measures sessionmeta against the raw floor, on lookups spread over
the whole table (a different owner each round).
"""

from __future__ import annotations

import sys
import time
from typing import Any

import query_ops
from data import BenchMeta, session_id
from harness import Entry, Result, measure
from impl_raw import RawAsyncpg, Sql
from impl_sessionmeta import SessionmetaImpl
from setup_db import ITEM_COLUMNS, all_rows, batches
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.schema import AddConstraint, CreateIndex, DropConstraint, DropIndex

from sessionmeta import MetadataStore

SESSIONS = "smbench_scale_sessions"
METADATA = "smbench_scale_metadata"
COLUMNS = ["session_id", "key", "value", "value_hash", "sort_key"]
BATCH = 20_000


def _say(text: str) -> None:
    print(f"  postgres scaling: {text}", file=sys.stderr, flush=True)


async def _load(connection: Any, store: MetadataStore[BenchMeta], start: int, stop: int) -> None:
    dialect = store.engine.dialect
    tables = [store.tables.values, store.tables.items]

    async def run(statement: Any, suffix: str = "") -> None:
        await connection.execute(str(statement.compile(dialect=dialect)) + suffix)

    foreign_keys = [fk for table in tables for fk in table.foreign_key_constraints]
    for fk in reversed(foreign_keys):
        await run(DropConstraint(fk))
    for table in reversed(tables):
        await run(DropConstraint(table.primary_key))
        for index in table.indexes:
            await run(DropIndex(index))
    for chunk in batches(start, stop, BATCH):
        await connection.copy_records_to_table(
            SESSIONS, records=[(session_id(i),) for i in chunk], columns=["session_id"]
        )
        rows, items = all_rows(chunk)
        await connection.copy_records_to_table(METADATA, records=rows, columns=COLUMNS)
        await connection.copy_records_to_table(
            f"{METADATA}_items", records=items, columns=ITEM_COLUMNS
        )
    await connection.execute("SET maintenance_work_mem = '1GB'")
    for table in tables:
        await run(AddConstraint(table.primary_key))
        for index in table.indexes:
            await run(CreateIndex(index))
    # NOT VALID: every loaded row references a loaded row; skip re-checking millions.
    for fk in foreign_keys:
        await run(AddConstraint(fk), " NOT VALID")
    for table in (SESSIONS, METADATA, f"{METADATA}_items"):
        await connection.execute(f"VACUUM (ANALYZE) {table}")


async def run(url: str, sizes: list[int], rounds: int, warmup: int) -> list[Result]:
    import asyncpg

    engine = create_async_engine(url)
    store = MetadataStore(BenchMeta, engine, sessions_table=SESSIONS, metadata_table=METADATA)
    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    results: list[Result] = []
    try:
        await connection.execute(
            f"DROP TABLE IF EXISTS {METADATA}_unique, {METADATA}_items, {METADATA}, {SESSIONS}"
        )
        await store.create_tables()
        sql = Sql(SESSIONS, METADATA, "postgres")
        sm = SessionmetaImpl(store)
        queries = query_ops.SessionmetaQueries(store) if query_ops.available() else None
        loaded = 0
        for size in sorted(sizes):
            started = time.perf_counter()
            await _load(connection, store, loaded, size)
            loaded = size
            _say(f"{size:,} sessions loaded and indexed in {time.perf_counter() - started:.0f} s")
            raw = RawAsyncpg(connection, sql, size - 150)

            def spread(i: int, size: int = size) -> int:
                # A different owner each round, anywhere in the table.
                return (i * 7_919 + 13) % size

            def entries(method: str, impls: list[Any], **extra: Any) -> list[Entry]:
                made = []
                for impl in impls:
                    function = getattr(impl, method)

                    async def call(i: int, function: Any = function) -> Any:
                        return await function(spread(i), **extra)

                    made.append(Entry(impl.name, call))
                return made

            ops = [("find by equality", entries("find_eq", [sm, raw]))]
            with_queries = [raw] if queries is None else [queries, raw]
            ops.append(("find by range", entries("find_range", with_queries, start=size - 150)))
            ops.append(("list_sessions of 50", entries("list50", with_queries)))
            for op, op_entries in ops:
                results += await measure(
                    "postgres", op, op_entries, rounds=rounds, warmup=warmup, sessions=size
                )
            _say(f"{size:,} sessions measured")
    finally:
        await connection.close()
        await engine.dispose()
    return results
