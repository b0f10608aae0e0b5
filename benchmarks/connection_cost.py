"""What a pooled connection costs one read, against a connection held open.

    python benchmarks/connection_cost.py                    # SQLite, PostgreSQL and MariaDB
    python benchmarks/connection_cost.py --backends postgres --rounds 2000

One session's ten keys are read, each round, four ways:

- ``held connection``: the statement on one driver connection held open (the floor);
- ``pool checkout + statement``: the same statement on a connection checked out of
  the engine's SQLAlchemy pool and returned after it (without the pool's rollback, as
  the store returns it), as every call that keeps the pool's size limits, health
  checks, recycling and checkout events must do;
- ``sessionmeta get_metadata``: the store's read (its connection off the store's shelf,
  where the last round left it, or out of the pool; statement; decoding into the model);
- ``sessionmeta get_many of 1``: the same through the bulk read.

The gap between the first two is the pool's share, which the shelf saves (the rounds
follow each other within its 20 ms); between the first and the third, sessionmeta's own.
PostgreSQL is ``--postgres-url`` (else SESSIONMETA_BENCH_POSTGRES_URL,
SESSIONMETA_TEST_POSTGRES_URL, the local server); MariaDB ``--mysql-url`` (else
SESSIONMETA_BENCH_MYSQL_URL, SESSIONMETA_TEST_MYSQL_URL, the local server). Only tables
named ``smbench_conn_*`` are created and dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "src")]

from data import BenchMeta, session_id, values_of  # noqa: E402
from harness import Entry, add_ratios, format_table, measure  # noqa: E402
from sqlalchemy import text  # noqa: E402
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine  # noqa: E402
from sqlalchemy.util import greenlet_spawn  # noqa: E402

from sessionmeta import MetadataStore  # noqa: E402

SESSIONS_TABLE = "smbench_conn_sessions"
METADATA_TABLE = "smbench_conn_metadata"
SESSIONS = 1000
FLOOR = "held connection"


def url_for(backend: str, given: dict[str, str | None], directory: str) -> str:
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{directory}/connection_cost.db"
    name = "POSTGRES" if backend == "postgres" else "MYSQL"
    default = (
        "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
        if backend == "postgres"
        else "mysql+aiomysql://root@127.0.0.1:3306/test"
    )
    return (
        given[backend]
        or os.environ.get(f"SESSIONMETA_BENCH_{name}_URL")
        or os.environ.get(f"SESSIONMETA_TEST_{name}_URL")
        or default
    )


class DriverRead:
    """The read as one hand-written statement in the driver's own call."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        placeholder = {"postgresql": "$1", "sqlite": "?", "mysql": "%s"}[self.dialect]
        self.sql = f"SELECT `key`, value FROM {METADATA_TABLE} WHERE session_id = {placeholder}"
        if self.dialect != "mysql":
            self.sql = self.sql.replace("`key`", "key")

    async def on(self, connection: Any, session: str) -> Any:
        if self.dialect == "postgresql":
            return await connection.fetch(self.sql, session)
        if self.dialect == "sqlite":
            return await connection.execute_fetchall(self.sql, (session,))
        async with connection.cursor() as cursor:
            await cursor.execute(self.sql, (session,))
            rows = await cursor.fetchall()
        # What the store does after a read on MySQL: end the snapshot it opened.
        await connection.commit()
        return rows

    async def pooled(self, session: str) -> Any:
        pooled = await self.engine.raw_connection()
        try:
            return await self.on(pooled.driver_connection, session)
        finally:
            # Returned as the store returns it: no transaction is open, so without the
            # pool's rollback (on aiosqlite a trip to its thread).
            await greenlet_spawn(pooled._close_special, transaction_reset=True)


async def run_backend(backend: str, url: str, rounds: int, warmup: int) -> list[Any]:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            for table in (
                f"{METADATA_TABLE}_unique",
                f"{METADATA_TABLE}_items",
                METADATA_TABLE,
                SESSIONS_TABLE,
            ):
                await connection.execute(text(f"DROP TABLE IF EXISTS {table}"))
        store = MetadataStore(
            BenchMeta,
            engine,
            create_tables=True,
            sessions_table=SESSIONS_TABLE,
            metadata_table=METADATA_TABLE,
        )
        await store.set_many({session_id(index): values_of(index) for index in range(SESSIONS)})
        read = DriverRead(engine)
        held = await engine.raw_connection()
        try:
            driver_connection = held.driver_connection

            async def on_held(index: int) -> Any:
                return await read.on(driver_connection, session_id(index % SESSIONS))

            async def on_pooled(index: int) -> Any:
                return await read.pooled(session_id(index % SESSIONS))

            async def get_metadata(index: int) -> Any:
                return await store.bind(session_id(index % SESSIONS)).get_metadata()

            async def get_many(index: int) -> Any:
                return await store.get_many([session_id(index % SESSIONS)])

            entries = [
                Entry(FLOOR, on_held),
                Entry("pool checkout + statement", on_pooled),
                Entry("sessionmeta get_metadata", get_metadata),
                Entry("sessionmeta get_many of 1", get_many),
            ]
            results = await measure(
                backend, "read one session", entries, rounds=rounds, warmup=warmup
            )
        finally:
            await greenlet_spawn(held.close)
        async with engine.begin() as connection:
            for table in (
                f"{METADATA_TABLE}_unique",
                f"{METADATA_TABLE}_items",
                METADATA_TABLE,
                SESSIONS_TABLE,
            ):
                await connection.execute(text(f"DROP TABLE IF EXISTS {table}"))
        return results
    finally:
        await engine.dispose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="sqlite,postgres,mysql")
    parser.add_argument("--postgres-url")
    parser.add_argument("--mysql-url")
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=50)
    args = parser.parse_args()
    given = {"postgres": args.postgres_url, "mysql": args.mysql_url}
    results = []
    with tempfile.TemporaryDirectory() as directory:
        for backend in args.backends.split(","):
            url = url_for(backend, given, directory)
            results += await run_backend(backend, url, args.rounds, args.warmup)
    add_ratios(results, [FLOOR])
    print(format_table(results, [FLOOR]))


if __name__ == "__main__":
    asyncio.run(main())
