"""Writes take a fixed number of statements whatever the number of keys; reads take one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from sessionmeta import MetadataStore
from sessionmeta.sql.statements import compile_statement

from .conftest import reset_database
from .models import AllTypes

TEN = {
    "text": "t",
    "integer": 1,
    "number": 1.5,
    "flag": True,
    "mode": "fast",
    "words": ["a"],
    "numbers": {1},
    "extra": {"a": 1},
    "renamed": "r",
    "day": "2024-01-01",
}


@pytest.fixture
async def one_connection_engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(db_url, pool_size=1, max_overflow=0)
    await reset_database(engine)
    try:
        yield engine
    finally:
        await engine.dispose()


async def statement_counter(engine: AsyncEngine) -> Callable[[], Awaitable[list[str]]]:
    """Start recording the statements sent on the pool's only connection."""
    async with engine.connect() as connection:
        raw = (await connection.get_raw_connection()).driver_connection
    assert raw is not None
    seen: list[str] = []
    if engine.dialect.name == "postgresql":
        raw.add_query_logger(lambda record: seen.append(record.query))
    elif engine.dialect.name == "sqlite":
        await raw.set_trace_callback(seen.append)
    else:

        async def questions() -> int:
            async with raw.cursor() as cursor:
                await cursor.execute("SHOW SESSION STATUS LIKE 'Questions'")
                row: Any = await cursor.fetchone()
                return int(row[1])

        start = await questions()

        async def mysql_statements() -> list[str]:
            # The status query itself counts once.
            return ["?"] * (await questions() - start - 1)

        return mysql_statements

    async def recorded() -> list[str]:
        await asyncio.sleep(0.05)  # asyncpg calls query loggers soon after, not during, the query
        statements = list(seen)
        seen.clear()
        return statements

    return recorded


async def test_statement_count_does_not_grow_with_keys(one_connection_engine: AsyncEngine) -> None:
    store = MetadataStore(AllTypes, one_connection_engine, create_tables=True)
    await store.create_tables()
    await store.bind("existing").set_metadata({"text": "warm"})

    async def count(operation: Awaitable[Any]) -> int:
        recorded = await statement_counter(one_connection_engine)
        await operation
        return len(await recorded())

    one_key = await count(store.bind("existing").set_metadata({"text": "x"}))
    assert one_key >= 1
    scalars = {key: value for key, value in TEN.items() if key not in ("words", "numbers")}
    assert await count(store.bind("existing").set_metadata(scalars)) == one_key
    # A list or set value also writes its elements (the items table serves `contains`):
    # on SQLite and MySQL that is a transaction of a fixed few statements, whatever the count.
    one_list = await count(store.bind("existing").set_metadata({"words": ["x"]}))
    ten_keys = await count(store.bind("existing").set_metadata(TEN))
    assert one_list == ten_keys
    new_one = await count(store.bind("new-1").set_metadata({"words": ["x"]}))
    new_ten = await count(store.bind("new-10").set_metadata(TEN))
    assert new_one == new_ten

    recorded = await statement_counter(one_connection_engine)
    read = await store.bind("new-10").get_metadata()
    statements = await recorded()
    assert read.integer == 1
    if one_connection_engine.dialect.name != "mysql":
        assert [s for s in statements if s.lstrip().upper().startswith("SELECT")] == statements
    # On MySQL the pool's rollback on return ends the read's snapshot.
    expected = 2 if one_connection_engine.dialect.name == "mysql" else 1
    assert len(statements) == expected


# A write of ten keys, two of them a list and a set, to a session that exists: the
# statements each backend runs. PostgreSQL keeps the items table in step inside the
# upsert; SQLite and MySQL upsert the values, drop the rewritten lists' old elements
# and insert their new ones, in one transaction.
WRITE_STATEMENTS = {
    "postgresql": ["WITH"],
    "sqlite": ["BEGIN", "INSERT", "DELETE", "INSERT", "COMMIT"],
    # The first statement opens the transaction (no BEGIN round trip), then COMMIT.
    "mysql": ["?"] * 4,
}


async def test_a_write_with_lists_takes_the_fewest_statements(
    one_connection_engine: AsyncEngine,
) -> None:
    store = MetadataStore(AllTypes, one_connection_engine, create_tables=True)
    await store.bind("existing").set_metadata({"text": "warm"})
    recorded = await statement_counter(one_connection_engine)
    await store.bind("existing").set_metadata(TEN)
    statements = await recorded()
    verbs = [
        statement if statement == "?" else statement.split()[0].upper() for statement in statements
    ]
    assert verbs == WRITE_STATEMENTS[one_connection_engine.dialect.name], statements
    read = await store.bind("existing").get_metadata()
    assert (read.words, read.numbers) == (["a"], {1})


@pytest.mark.parametrize(
    "dialect_url", ["sqlite+aiosqlite://", "mysql+aiomysql://u@h/d", "mariadb+aiomysql://u@h/d"]
)
@pytest.mark.parametrize("rows", [4, 7, 64, 513])
def test_many_row_statements_are_what_sqlalchemy_compiles(dialect_url: str, rows: int) -> None:
    # Statements of thousands of rows are made by repeating one row of the compiled
    # statement (compiling them takes SQLAlchemy up to a second): the text and the
    # parameter order must be exactly SQLAlchemy's.
    engine = create_async_engine(dialect_url)
    statements = MetadataStore(AllTypes, engine).ops.statements
    spelling = statements.spelling
    for made, build in (
        (statements.upsert, spelling.upsert),
        (statements.insert_items, spelling.insert_items),
        (statements.insert_sessions, spelling.insert_sessions),
        (statements.delete_key_items, spelling.delete_key_items),
    ):
        compiled = compile_statement(build(rows), engine.dialect)
        assert made(rows) == compiled, build.__name__
