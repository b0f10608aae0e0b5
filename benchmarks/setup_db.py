"""Creating the benchmark's tables and loading the same data into each of them."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

from data import KEYS, BenchMeta, session_id, values_of
from impl_baseline import Base, rows_of
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from sessionmeta import MetadataStore
from sessionmeta.core.codec import EncodedValue, encode_model, encode_value
from sessionmeta.core.spec import ModelSpec

SPEC = ModelSpec(BenchMeta)
SESSIONS_TABLE = "smbench_sessions"
METADATA_TABLE = "smbench_metadata"
ITEMS_TABLE = f"{METADATA_TABLE}_items"
ITEM_COLUMNS = ["session_id", "key", "value_hash", "item_hash"]
# Values that repeat across sessions are encoded once.
_REPEATING = {"owner_id", "tags", "incognito", "score", "status", "language", "message_count"}
_cache: dict[tuple[str, Any], EncodedValue] = {}


Row = tuple[str, str, str, str, str | None]
ItemRow = tuple[str, str, str, str]


def encoded_rows(index: int) -> list[Row]:
    """Session ``index``'s rows exactly as ``set_metadata`` stores them, fast for millions."""
    return [row for row, _ in _encoded(index)]


def item_rows(index: int) -> list[ItemRow]:
    """The items-table rows (elements of list values) that ``set_metadata`` stores."""
    return [item for _, items in _encoded(index) for item in items]


def all_rows(indexes: range) -> tuple[list[Row], list[ItemRow]]:
    rows: list[Row] = []
    items: list[ItemRow] = []
    for index in indexes:
        for row, row_items in _encoded(index):
            rows.append(row)
            items.extend(row_items)
    return rows, items


def _encoded(index: int) -> list[tuple[Row, list[ItemRow]]]:
    sid = session_id(index)
    rows = []
    for key, value in values_of(index).items():
        cache_key = (key, tuple(value) if isinstance(value, list) else value)
        row = _cache.get(cache_key) if key in _REPEATING else None
        if row is None:
            field = SPEC.fields[key]
            json_value = field.adapter.dump_python(value, mode="json")
            result = encode_value(SPEC, key, value, json_value)
            assert isinstance(result, EncodedValue), result
            row = result
            if key in _REPEATING:
                _cache[cache_key] = row
        items = [(sid, row.key, row.value_hash, item) for item in row.items or ()]
        rows.append(((sid, row.key, row.value, row.value_hash, row.sort_key), items))
    return rows


def check_encoding() -> None:
    """The fast loader must store exactly what the public API stores."""
    for index in (0, 1, 7, 12345):
        expected = encode_model(SPEC, SPEC.validate_values(values_of(index)))
        got = sorted(encoded_rows(index), key=lambda row: row[1])
        assert [(r.key, r.value, r.value_hash, r.sort_key) for r in expected] == [
            row[1:] for row in got
        ], (expected, got)
        expected_items = sorted(
            (session_id(index), r.key, r.value_hash, item)
            for r in expected
            for item in r.items or ()
        )
        assert sorted(item_rows(index)) == expected_items, (expected_items, item_rows(index))


def batches(start: int, stop: int, size: int) -> Iterator[range]:
    for first in range(start, stop, size):
        yield range(first, min(first + size, stop))


async def create_tables(engine: AsyncEngine, store: MetadataStore[BenchMeta]) -> None:
    drop = [
        f"smbench_{name}_{kind}"
        for name in ("metadata", "scale_metadata")
        for kind in ("unique", "items")
    ]
    drop += [f"smbench_{name}" for name in ("metadata", "base_metadata", "scale_metadata")]
    drop += [f"smbench_{name}" for name in ("sessions", "base_sessions", "scale_sessions")]
    async with engine.begin() as connection:
        for table in drop:
            await connection.execute(text(f"DROP TABLE IF EXISTS {table}"))
        await connection.run_sync(Base.metadata.create_all)
    await store.create_tables()


async def load_postgres(connection: Any, sessions: int) -> None:
    """COPY the same data into sessionmeta's tables and the baseline's."""
    ids = [(session_id(i),) for i in range(sessions)]
    for table in (SESSIONS_TABLE, "smbench_base_sessions"):
        await connection.copy_records_to_table(table, records=ids, columns=["session_id"])
    rows, items = all_rows(range(sessions))
    await connection.copy_records_to_table(
        METADATA_TABLE,
        records=rows,
        columns=["session_id", "key", "value", "value_hash", "sort_key"],
    )
    await connection.copy_records_to_table(ITEMS_TABLE, records=items, columns=ITEM_COLUMNS)
    base = [(r["session_id"], r["key"], r["value"]) for i in range(sessions) for r in rows_of(i)]
    await connection.copy_records_to_table(
        "smbench_base_metadata", records=base, columns=["session_id", "key", "value"]
    )
    await connection.execute("ANALYZE")


async def load_mysql(connection: Any, sessions: int) -> None:
    """Insert the same data on an aiomysql connection in autocommit: ``executemany``
    sends multi-row INSERTs (pymysql's batching), each chunk committed alone."""

    async def insert(table: str, columns: list[str], rows: list[Any]) -> None:
        names = ", ".join(f"`{column}`" for column in columns)
        marks = ", ".join(["%s"] * len(columns))
        async with connection.cursor() as cursor:
            for first in range(0, len(rows), 20_000):
                await cursor.executemany(
                    f"INSERT INTO {table} ({names}) VALUES ({marks})", rows[first : first + 20_000]
                )

    ids = [(session_id(i),) for i in range(sessions)]
    for table in (SESSIONS_TABLE, "smbench_base_sessions"):
        await insert(table, ["session_id"], ids)
    rows, items = all_rows(range(sessions))
    await insert(METADATA_TABLE, ["session_id", "key", "value", "value_hash", "sort_key"], rows)
    await insert(ITEMS_TABLE, ITEM_COLUMNS, items)
    base = [(r["session_id"], r["key"], r["value"]) for i in range(sessions) for r in rows_of(i)]
    await insert("smbench_base_metadata", ["session_id", "key", "value"], base)
    async with connection.cursor() as cursor:
        tables = [SESSIONS_TABLE, METADATA_TABLE, ITEMS_TABLE]
        tables += ["smbench_base_sessions", "smbench_base_metadata"]
        await cursor.execute(f"ANALYZE TABLE {', '.join(tables)}")
        await cursor.fetchall()


def load_sqlite(path: str, sessions: int) -> None:
    connection = sqlite3.connect(path)
    try:
        # WAL, the store's default (it has switched the file already): the baseline and the
        # raw floor share the file, and are measured in WAL mode too.
        connection.execute("PRAGMA journal_mode = WAL")
        ids = [(session_id(i),) for i in range(sessions)]
        for table in (SESSIONS_TABLE, "smbench_base_sessions"):
            connection.executemany(f"INSERT INTO {table} (session_id) VALUES (?)", ids)
        rows, items = all_rows(range(sessions))
        connection.executemany(
            f"INSERT INTO {METADATA_TABLE} (session_id, key, value, value_hash, sort_key)"
            " VALUES (?, ?, ?, ?, ?)",
            rows,
        )
        connection.executemany(
            f"INSERT INTO {ITEMS_TABLE} ({', '.join(ITEM_COLUMNS)}) VALUES (?, ?, ?, ?)", items
        )
        connection.executemany(
            "INSERT INTO smbench_base_metadata (session_id, key, value) VALUES (?, ?, ?)",
            [(r["session_id"], r["key"], r["value"]) for i in range(sessions) for r in rows_of(i)],
        )
        connection.commit()
        connection.execute("ANALYZE")
        connection.commit()
    finally:
        connection.close()


assert len(KEYS) == 10
