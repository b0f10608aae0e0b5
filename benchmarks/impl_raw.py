"""The raw floor: one hand-written statement per operation, straight on the driver.

The values written are encoded before timing starts: the floor is what the
database and the driver cost, nothing else. ``$n`` placeholders are written for
asyncpg and turned into ``?`` for SQLite and ``%s`` for aiomysql (each appears
once, in order). On SQLite and MariaDB/MySQL a write is one statement on a
session that exists: the value rows only, committed alone (aiomysql's connection
in autocommit), as an application writing these rows by hand would run it.
"""

from __future__ import annotations

import re
import sqlite3
from typing import Any

from data import KEYS, TWO_KEYS, BenchMeta, owner_of, session_id, values_of

from sessionmeta.core.codec import EncodedValue, encode_model, sort_key, value_hash
from sessionmeta.core.spec import ModelSpec

SPEC = ModelSpec(BenchMeta)


def encoded(values: dict[str, Any]) -> list[EncodedValue]:
    return encode_model(SPEC, SPEC.validate_values(values))


def owner_hash(index: int) -> str:
    (row,) = encoded({"owner_id": owner_of(index)})
    return row.value_hash


DIALECTS = ("postgres", "sqlite", "mysql")


class Sql:
    """The hand-written statements for one pair of tables, in asyncpg's placeholder style."""

    def __init__(self, sessions: str, metadata: str, dialect: str) -> None:
        assert dialect in DIALECTS, dialect
        m = metadata
        self.dialect = dialect
        self.postgres = dialect == "postgres"
        mysql = dialect == "mysql"
        # KEY is a reserved word in MySQL.
        k = "`key`" if mysql else "key"
        if mysql:
            self.upsert_tail = (
                " ON DUPLICATE KEY UPDATE value = VALUES(value),"
                " value_hash = VALUES(value_hash), sort_key = VALUES(sort_key),"
                " updated_at = CURRENT_TIMESTAMP"
            )
        else:
            self.upsert_tail = (
                " ON CONFLICT (session_id, key) DO UPDATE SET value = excluded.value,"
                " value_hash = excluded.value_hash, sort_key = excluded.sort_key,"
                " updated_at = CURRENT_TIMESTAMP"
            )
        # PostgreSQL creates the session row in the same statement, as sessionmeta does;
        # on SQLite and MySQL one statement cannot, and the session exists.
        self.prefix = (
            f"WITH new_session AS (INSERT INTO {sessions} (session_id) VALUES ($1)"
            " ON CONFLICT DO NOTHING) "
            if self.postgres
            else ""
        )
        self.metadata = m
        self.key_column = k
        self.get_all = f"SELECT {k}, value FROM {m} WHERE session_id = $1"
        self.get2 = f"SELECT {k}, value FROM {m} WHERE session_id = $1 AND {k} IN ($2, $3)"
        self.delete1 = f"DELETE FROM {m} WHERE session_id = $1 AND {k} = $2"
        self.find_eq = (
            f"SELECT session_id FROM {m} WHERE {k} = $1 AND value_hash = $2"
            " ORDER BY session_id LIMIT 100"
        )
        # Ordered by an expression, not the bare column: otherwise the planner may walk
        # the primary key in id order and filter, scanning the whole table at 1M sessions.
        # (In MySQL || is OR: CONCAT there.)
        unindexed_id = "CONCAT(session_id, '')" if mysql else "session_id || ''"
        self.find_range = (
            f"SELECT session_id FROM {m} WHERE {k} = $1 AND sort_key >= $2"
            f" ORDER BY {unindexed_id} LIMIT 100"
        )
        first_50 = (
            f"SELECT session_id FROM {m} WHERE {k} = $1 AND value_hash = $2"
            " ORDER BY session_id LIMIT 50"
        )
        if mysql:
            # MariaDB and MySQL take no LIMIT in an IN subquery: join a derived table.
            self.list50 = (
                f"SELECT {m}.session_id, {m}.{k}, {m}.value FROM ({first_50}) AS first_50"
                f" JOIN {m} ON {m}.session_id = first_50.session_id"
            )
        else:
            self.list50 = f"SELECT session_id, {k}, value FROM {m} WHERE session_id IN ({first_50})"
        if self.postgres:
            self.get_many = f"SELECT session_id, key, value FROM {m} WHERE session_id = ANY($1)"
        else:
            marks = ", ".join(f"${number}" for number in range(1, 51))
            self.get_many = f"SELECT session_id, {k}, value FROM {m} WHERE session_id IN ({marks})"

    def upsert(self, count: int) -> str:
        rows = ", ".join(
            f"($1, ${2 + 4 * i}, ${3 + 4 * i}, ${4 + 4 * i}, ${5 + 4 * i})" for i in range(count)
        )
        return (
            f"{self.prefix}INSERT INTO {self.metadata}"
            f" (session_id, {self.key_column}, value, value_hash, sort_key)"
            f" VALUES {rows}{self.upsert_tail}"
        )

    def for_driver(self, sql: str) -> str:
        if self.postgres:
            return sql
        return re.sub(r"\$\d+", "%s" if self.dialect == "mysql" else "?", sql)


def _upsert_args(sid: str, rows: list[EncodedValue], postgres: bool) -> list[Any]:
    args: list[Any] = [sid]
    for row in rows:
        args += [row.key, row.value, row.value_hash, row.sort_key]
    if not postgres:
        # SQLite's ``?`` and aiomysql's ``%s`` are positional: repeat the session id in
        # every row.
        flat: list[Any] = []
        for row in rows:
            flat += [sid, row.key, row.value, row.value_hash, row.sort_key]
        return flat
    return args


class _RawBase:
    """Arguments shared by the three raw drivers; subclasses run them."""

    name = "raw"
    postgres = False

    def __init__(self, sql: Sql, find_range_from: int) -> None:
        self.sql = sql
        self.q = {
            name: sql.for_driver(getattr(sql, name))
            for name in (
                "get_all",
                "get2",
                "delete1",
                "find_eq",
                "find_range",
                "list50",
                "get_many",
            )
        }
        self.q["set1"] = sql.for_driver(sql.upsert(1))
        self.q["set10"] = sql.for_driver(sql.upsert(len(KEYS)))
        self.range_key = sort_key(find_range_from)
        self._set10_args: dict[int, list[Any]] = {}

    def set1_args(self, index: int) -> list[Any]:
        title = f"Renamed {index}"
        text = f'"{title}"'
        row = EncodedValue("title", text, value_hash(text), sort_key(title))
        return _upsert_args(session_id(index), [row], self.postgres)

    def set10_args(self, index: int) -> list[Any]:
        if index not in self._set10_args:
            self._set10_args[index] = _upsert_args(
                session_id(index), encoded(values_of(index)), self.postgres
            )
        return self._set10_args[index]

    def find_eq_args(self, index: int) -> list[Any]:
        return ["owner_id", owner_hash(index)]


class RawAsyncpg(_RawBase):
    name = "raw (asyncpg)"
    postgres = True

    def __init__(self, connection: Any, sql: Sql, find_range_from: int) -> None:
        super().__init__(sql, find_range_from)
        self.connection = connection

    async def prepare(self, op: str, index: int) -> None:
        if op == "set10":
            self.set10_args(index)

    async def set1(self, index: int) -> None:
        await self.connection.execute(self.q["set1"], *self.set1_args(index))

    async def set10(self, index: int) -> None:
        await self.connection.execute(self.q["set10"], *self.set10_args(index))

    async def get_all(self, index: int) -> Any:
        return await self.connection.fetch(self.q["get_all"], session_id(index))

    async def get2(self, index: int) -> Any:
        return await self.connection.fetch(self.q["get2"], session_id(index), *TWO_KEYS)

    async def delete1(self, index: int) -> None:
        await self.connection.execute(self.q["delete1"], session_id(index), "title")

    async def find_eq(self, index: int) -> Any:
        return await self.connection.fetch(self.q["find_eq"], *self.find_eq_args(index))

    async def find_range(self, index: int, start: int) -> Any:
        return await self.connection.fetch(self.q["find_range"], "priority", self.range_key)

    async def list50(self, index: int) -> Any:
        return await self.connection.fetch(self.q["list50"], *self.find_eq_args(index))

    async def get_many(self, ids: list[str]) -> Any:
        return await self.connection.fetch(self.q["get_many"], ids)

    async def select1(self, index: int) -> Any:
        return await self.connection.fetchval("SELECT 1")


class RawAiosqlite(_RawBase):
    name = "raw (aiosqlite)"

    def __init__(self, connection: Any, sql: Sql, find_range_from: int) -> None:
        super().__init__(sql, find_range_from)
        self.connection = connection

    async def prepare(self, op: str, index: int) -> None:
        if op == "set10":
            self.set10_args(index)

    async def _write(self, sql: str, args: list[Any]) -> None:
        await self.connection.execute(sql, args)
        await self.connection.commit()

    async def set1(self, index: int) -> None:
        await self._write(self.q["set1"], self.set1_args(index))

    async def set10(self, index: int) -> None:
        await self._write(self.q["set10"], self.set10_args(index))

    async def get_all(self, index: int) -> Any:
        return await self.connection.execute_fetchall(self.q["get_all"], [session_id(index)])

    async def get2(self, index: int) -> Any:
        return await self.connection.execute_fetchall(
            self.q["get2"], [session_id(index), *TWO_KEYS]
        )

    async def delete1(self, index: int) -> None:
        await self._write(self.q["delete1"], [session_id(index), "title"])

    async def find_eq(self, index: int) -> Any:
        return await self.connection.execute_fetchall(self.q["find_eq"], self.find_eq_args(index))

    async def find_range(self, index: int, start: int) -> Any:
        return await self.connection.execute_fetchall(
            self.q["find_range"], ["priority", self.range_key]
        )

    async def list50(self, index: int) -> Any:
        return await self.connection.execute_fetchall(self.q["list50"], self.find_eq_args(index))

    async def get_many(self, ids: list[str]) -> Any:
        return await self.connection.execute_fetchall(self.q["get_many"], ids)

    async def select1(self, index: int) -> Any:
        return await self.connection.execute_fetchall("SELECT 1")


class RawSqlite3(_RawBase):
    """The synchronous standard-library driver: no thread hop per call."""

    name = "raw (sqlite3)"

    def __init__(self, connection: sqlite3.Connection, sql: Sql, find_range_from: int) -> None:
        super().__init__(sql, find_range_from)
        self.connection = connection

    async def prepare(self, op: str, index: int) -> None:
        if op == "set10":
            self.set10_args(index)

    def _write(self, sql: str, args: list[Any]) -> None:
        self.connection.execute(sql, args)
        self.connection.commit()

    def _fetch(self, sql: str, args: list[Any]) -> list[Any]:
        return self.connection.execute(sql, args).fetchall()

    async def set1(self, index: int) -> None:
        self._write(self.q["set1"], self.set1_args(index))

    async def set10(self, index: int) -> None:
        self._write(self.q["set10"], self.set10_args(index))

    async def get_all(self, index: int) -> Any:
        return self._fetch(self.q["get_all"], [session_id(index)])

    async def get2(self, index: int) -> Any:
        return self._fetch(self.q["get2"], [session_id(index), *TWO_KEYS])

    async def delete1(self, index: int) -> None:
        self._write(self.q["delete1"], [session_id(index), "title"])

    async def find_eq(self, index: int) -> Any:
        return self._fetch(self.q["find_eq"], self.find_eq_args(index))

    async def find_range(self, index: int, start: int) -> Any:
        return self._fetch(self.q["find_range"], ["priority", self.range_key])

    async def list50(self, index: int) -> Any:
        return self._fetch(self.q["list50"], self.find_eq_args(index))

    async def get_many(self, ids: list[str]) -> Any:
        return self._fetch(self.q["get_many"], ids)

    async def select1(self, index: int) -> Any:
        return self._fetch("SELECT 1", [])


class RawAiomysql(_RawBase):
    """One aiomysql connection in autocommit: each statement commits alone, as an
    application would run single statements; a cursor per call, as its examples do."""

    name = "raw (aiomysql)"

    def __init__(self, connection: Any, sql: Sql, find_range_from: int) -> None:
        super().__init__(sql, find_range_from)
        self.connection = connection

    async def prepare(self, op: str, index: int) -> None:
        if op == "set10":
            self.set10_args(index)

    async def _write(self, sql: str, args: list[Any]) -> None:
        async with self.connection.cursor() as cursor:
            await cursor.execute(sql, args)

    async def _fetch(self, sql: str, args: list[Any]) -> Any:
        async with self.connection.cursor() as cursor:
            await cursor.execute(sql, args)
            return await cursor.fetchall()

    async def set1(self, index: int) -> None:
        await self._write(self.q["set1"], self.set1_args(index))

    async def set10(self, index: int) -> None:
        await self._write(self.q["set10"], self.set10_args(index))

    async def get_all(self, index: int) -> Any:
        return await self._fetch(self.q["get_all"], [session_id(index)])

    async def get2(self, index: int) -> Any:
        return await self._fetch(self.q["get2"], [session_id(index), *TWO_KEYS])

    async def delete1(self, index: int) -> None:
        await self._write(self.q["delete1"], [session_id(index), "title"])

    async def find_eq(self, index: int) -> Any:
        return await self._fetch(self.q["find_eq"], self.find_eq_args(index))

    async def find_range(self, index: int, start: int) -> Any:
        return await self._fetch(self.q["find_range"], ["priority", self.range_key])

    async def list50(self, index: int) -> Any:
        return await self._fetch(self.q["list50"], self.find_eq_args(index))

    async def get_many(self, ids: list[str]) -> Any:
        return await self._fetch(self.q["get_many"], ids)

    async def select1(self, index: int) -> Any:
        return await self._fetch("SELECT 1", [])
