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
from setup_db import batches, encoded_rows
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
    table = store.tables.values
    fk = next(iter(table.foreign_key_constraints))
    pk = table.primary_key
    for statement in (DropConstraint(fk), DropConstraint(pk)):
        await connection.execute(str(statement.compile(dialect=dialect)))
    for index in table.indexes:
        await connection.execute(str(DropIndex(index).compile(dialect=dialect)))
    for chunk in batches(start, stop, BATCH):
        await connection.copy_records_to_table(
            SESSIONS, records=[(session_id(i),) for i in chunk], columns=["session_id"]
        )
        await connection.copy_records_to_table(
            METADATA, records=[row for i in chunk for row in encoded_rows(i)], columns=COLUMNS
        )
    await connection.execute("SET maintenance_work_mem = '1GB'")
    await connection.execute(str(AddConstraint(pk).compile(dialect=dialect)))
    for index in table.indexes:
        await connection.execute(str(CreateIndex(index).compile(dialect=dialect)))
    # NOT VALID: every loaded row references a loaded session; skip re-checking millions.
    await connection.execute(str(AddConstraint(fk).compile(dialect=dialect)) + " NOT VALID")
    await connection.execute(f"VACUUM (ANALYZE) {SESSIONS}")
    await connection.execute(f"VACUUM (ANALYZE) {METADATA}")


async def run(url: str, sizes: list[int], rounds: int, warmup: int) -> list[Result]:
    import asyncpg

    engine = create_async_engine(url)
    store = MetadataStore(BenchMeta, engine, sessions_table=SESSIONS, metadata_table=METADATA)
    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    results: list[Result] = []
    try:
        await connection.execute(f"DROP TABLE IF EXISTS {METADATA}, {SESSIONS}")
        await store.create_tables()
        sql = Sql(SESSIONS, METADATA, postgres=True)
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
