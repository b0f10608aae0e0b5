"""The implementations ``peers.py`` compares, each doing the same workloads its own way.

Every class offers ``run(op, index)``, which returns the operation's time in
microseconds and its result, and ``reset`` (empty its tables), ``after_load``
(``ANALYZE``), ``memory(op, index)`` (tracemalloc's peak, in bytes) and ``close``. Each
one's ``how`` says, per operation, what it does; an entry beginning with "in Python"
(or "partly in Python") marks a workload that the library cannot run (wholly) in the
database, measured as its user would do it instead.
"""

from __future__ import annotations

import asyncio
import json
import time
import tracemalloc
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from data import BenchMeta, values_of
from peers_workload import (
    FIND_TAG,
    LIST_LIMIT,
    NAMESPACE,
    find_window,
    json_values,
    matches,
    owner_of,
    read_index,
    session_id,
    turn_index,
    turn_items,
    update_values,
    write_index,
)
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import greenlet_spawn

from sessionmeta import MetadataStore, field
from sessionmeta.core.bulk import encode_sessions

HERE = Path(__file__).resolve().parent
SESSIONS_TABLE = "smpeer_sessions"
METADATA_TABLE = "smpeer_metadata"
MESSAGES_TABLE = "smpeer_messages"
SM_TABLES = (
    MESSAGES_TABLE,
    f"{METADATA_TABLE}_unique",
    f"{METADATA_TABLE}_items",
    METADATA_TABLE,
    SESSIONS_TABLE,
)
FLOOR_SESSIONS_TABLE = "smpeer_floor_sessions"
FLOOR_METADATA_TABLE = "smpeer_floor_metadata"
FLOOR_TABLES = (
    f"{FLOOR_METADATA_TABLE}_unique",
    f"{FLOOR_METADATA_TABLE}_items",
    FLOOR_METADATA_TABLE,
    FLOOR_SESSIONS_TABLE,
)
ADK_SCHEMA = "smpeer_adk"
LANGGRAPH_SCHEMA = "smpeer_langgraph"


class LocalPeer:
    """An implementation in this process: timed around the call."""

    name = ""
    how: dict[str, str]

    async def run(self, op: str, index: int, check: bool = False) -> tuple[float, Any]:
        method = getattr(self, op)
        start = time.perf_counter_ns()
        result = await method(index)
        elapsed = (time.perf_counter_ns() - start) / 1000
        return elapsed, self.summary(op, result) if check else None

    def summary(self, op: str, result: Any) -> Any:
        return result

    async def memory(self, op: str, index: int) -> int:
        method = getattr(self, op)
        tracemalloc.start()
        try:
            await method(index)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    async def reset(self) -> None:
        return None

    async def after_load(self) -> None:
        return None

    async def close(self) -> None:
        return None


class SessionmetaPeer(LocalPeer):
    """sessionmeta's ``MetadataStore`` with its default settings."""

    name = "sessionmeta"

    def __init__(self, engine: AsyncEngine, sessions: int, postgres: bool) -> None:
        self.engine = engine
        self.sessions = sessions
        self.postgres = postgres
        self.store = MetadataStore(
            BenchMeta, engine, sessions_table=SESSIONS_TABLE, metadata_table=METADATA_TABLE
        )
        self.set_many = getattr(self.store, "set_many", None)
        bulk = (
            f"store.set_many of {sessions:,} sessions, one call"
            if self.set_many is not None
            else f"{sessions:,} set_metadata calls, one per session (no set_many in this version)"
        )
        self.how = {
            "bulk": bulk,
            "update3": "bind(id).set_metadata(3 keys): one transaction",
            "read1": "bind(id).get_metadata(): a validated BenchMeta",
            "list50": "list_sessions(owner_id == u, order_by='-created_at', limit=50)",
            "find": "find_sessions(tags contains, priority >= and <): in SQL",
        }

    async def create_tables(self) -> None:
        await self.store.create_tables()

    async def reset(self) -> None:
        async with self.engine.begin() as connection:
            if self.postgres:
                await connection.execute(text(f"TRUNCATE {SESSIONS_TABLE} CASCADE"))
            else:
                for table in SM_TABLES:
                    await connection.execute(text(f"DELETE FROM {table}"))

    async def after_load(self) -> None:
        async with self.engine.begin() as connection:
            for table in SM_TABLES:
                await connection.execute(text(f"ANALYZE {table}"))

    async def bulk(self, count: int) -> int:
        if self.set_many is not None:
            await self.set_many({session_id(i): values_of(i) for i in range(count)})
            return count
        for i in range(count):
            await self.store.bind(session_id(i)).set_metadata(values_of(i))
        return count

    async def update3(self, i: int) -> None:
        index = write_index(i, self.sessions)
        await self.store.bind(session_id(index)).set_metadata(update_values(i))

    async def read1(self, i: int) -> Any:
        return await self.store.bind(session_id(read_index(i, self.sessions))).get_metadata()

    async def list50(self, i: int) -> Any:
        owner = owner_of(read_index(i, self.sessions))
        return await self.store.list_sessions(
            field("owner_id") == owner, order_by="-created_at", limit=LIST_LIMIT
        )

    async def find(self, i: int) -> Any:
        low, high = find_window(i, self.sessions)
        return await self.store.find_sessions(
            field("tags").contains(FIND_TAG),
            field("priority") >= low,
            field("priority") < high,
            limit=100,
        )

    def summary(self, op: str, result: Any) -> Any:
        if op == "read1":
            return result.model_dump(mode="json", exclude_unset=True)
        if op == "list50":
            return [listing.session_id for listing in result]
        if op == "find":
            return sorted(result)
        return result


class StoredRowsFloor(LocalPeer):
    """The bulk load's floor for sessionmeta's schema: the rows ``set_many`` stores (session
    rows, one value row per key, the list's items), encoded before timing, inserted by
    hand on one held driver connection in one transaction: COPY on PostgreSQL,
    ``executemany`` on SQLite. It does only the bulk load."""

    name = "hand-written rows (floor)"

    def __init__(self, engine: AsyncEngine, postgres: bool) -> None:
        self.engine = engine
        self.postgres = postgres
        # Its own tables, made by the store so that they are sessionmeta's exactly.
        self.store = MetadataStore(
            BenchMeta,
            engine,
            sessions_table=FLOOR_SESSIONS_TABLE,
            metadata_table=FLOOR_METADATA_TABLE,
        )
        self.rows: dict[int, tuple[list[Any], list[Any], list[Any]]] = {}
        how = "COPY" if postgres else "executemany"
        self.how = {"bulk": f"the same rows, encoded beforehand, {how} per table, one transaction"}

    async def create_tables(self) -> None:
        await self.store.create_tables()

    def encoded(self, count: int) -> tuple[list[Any], list[Any], list[Any]]:
        if count not in self.rows:
            encoded = encode_sessions(
                self.store.spec, {session_id(i): values_of(i) for i in range(count)}
            )
            sessions = [(sid,) for sid in encoded]
            values = [
                (sid, row.key, row.value, row.value_hash, row.sort_key)
                for sid, rows in encoded.items()
                for row in rows
            ]
            items = [
                (sid, row.key, row.value_hash, item)
                for sid, rows in encoded.items()
                for row in rows
                for item in row.items or ()
            ]
            self.rows[count] = (sessions, values, items)
        return self.rows[count]

    async def reset(self) -> None:
        async with self.engine.begin() as connection:
            if self.postgres:
                await connection.execute(text(f"TRUNCATE {FLOOR_SESSIONS_TABLE} CASCADE"))
            else:
                for table in FLOOR_TABLES:
                    await connection.execute(text(f"DELETE FROM {table}"))

    async def run(self, op: str, index: int, check: bool = False) -> tuple[float, Any]:
        # Encoding is the store's work, not the floor's: done before the clock starts.
        self.encoded(index)
        return await super().run(op, index, check)

    async def bulk(self, count: int) -> int:
        sessions, values, items = self.encoded(count)
        pooled = await self.engine.raw_connection()
        try:
            connection = pooled.driver_connection
            if self.postgres:
                async with connection.transaction():
                    await connection.copy_records_to_table(
                        FLOOR_SESSIONS_TABLE, records=sessions, columns=["session_id"]
                    )
                    await connection.copy_records_to_table(
                        FLOOR_METADATA_TABLE,
                        records=values,
                        columns=["session_id", "key", "value", "value_hash", "sort_key"],
                    )
                    await connection.copy_records_to_table(
                        f"{FLOOR_METADATA_TABLE}_items",
                        records=items,
                        columns=["session_id", "key", "value_hash", "item_hash"],
                    )
            else:
                await connection.execute("BEGIN")
                await connection.executemany(
                    f"INSERT INTO {FLOOR_SESSIONS_TABLE} (session_id) VALUES (?)", sessions
                )
                await connection.executemany(
                    f"INSERT INTO {FLOOR_METADATA_TABLE} (session_id, key, value, value_hash, "
                    "sort_key) VALUES (?, ?, ?, ?, ?)",
                    values,
                )
                await connection.executemany(
                    f"INSERT INTO {FLOOR_METADATA_TABLE}_items (session_id, key, value_hash, "
                    "item_hash) VALUES (?, ?, ?, ?)",
                    items,
                )
                await connection.commit()
        finally:
            await greenlet_spawn(pooled.close)
        return count


class LangGraphPeer(LocalPeer):
    """LangGraph's store: one item per session in (NAMESPACE, owner), the metadata its value."""

    name = "LangGraph store"

    def __init__(
        self, sessions: int, postgres: bool, url: str, synchronous: str | None = None
    ) -> None:
        self.sessions = sessions
        self.postgres = postgres
        self.url = url
        self.synchronous = synchronous
        self.stack = AsyncExitStack()
        self.store: Any = None
        if postgres:
            find = (
                f"in Python: asearch loads all {sessions:,} items, filtered in Python "
                "(filters are equality; ranges compare text in PostgreSQL)"
            )
        else:
            find = (
                "partly in Python: priority range in SQL ($gte, $lt), the tag in Python "
                "(no contains filter)"
            )
        self.how = {
            "bulk": f"abatch of {sessions:,} PutOps, one call",
            "update3": "aget + aput of the whole merged value (read, modify, write)",
            "read1": "aget: the stored dict",
            "list50": "asearch((NAMESPACE, owner), limit=50): newest updated first, in SQL",
            "find": find,
        }

    async def start(self) -> None:
        if self.postgres:
            from langgraph.store.postgres.aio import AsyncPostgresStore

            self.store = await self.stack.enter_async_context(
                AsyncPostgresStore.from_conn_string(self.url)
            )
        else:
            from langgraph.store.sqlite.aio import AsyncSqliteStore

            self.store = await self.stack.enter_async_context(
                AsyncSqliteStore.from_conn_string(self.url)
            )
            if self.synchronous:
                await self.store.conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        await self.store.setup()

    async def _sql(self, statement: str) -> None:
        # Both connections are in autocommit mode, as LangGraph opens them.
        await self.store.conn.execute(statement)

    async def reset(self) -> None:
        await self._sql("TRUNCATE store" if self.postgres else "DELETE FROM store")

    async def after_load(self) -> None:
        await self._sql("ANALYZE store")

    async def bulk(self, count: int) -> int:
        from langgraph.store.base import PutOp

        await self.store.abatch(
            [PutOp((NAMESPACE, owner_of(i)), session_id(i), json_values(i)) for i in range(count)]
        )
        return count

    async def update3(self, i: int) -> None:
        index = write_index(i, self.sessions)
        namespace = (NAMESPACE, owner_of(index))
        item = await self.store.aget(namespace, session_id(index))
        await self.store.aput(namespace, session_id(index), {**item.value, **update_values(i)})

    async def read1(self, i: int) -> Any:
        index = read_index(i, self.sessions)
        item = await self.store.aget((NAMESPACE, owner_of(index)), session_id(index))
        return item.value

    async def list50(self, i: int) -> Any:
        owner = owner_of(read_index(i, self.sessions))
        return await self.store.asearch((NAMESPACE, owner), limit=LIST_LIMIT)

    async def find(self, i: int) -> Any:
        low, high = find_window(i, self.sessions)
        if self.postgres:
            items = await self.store.asearch((NAMESPACE,), limit=self.sessions)
        else:
            items = await self.store.asearch(
                (NAMESPACE,),
                filter={"priority": {"$gte": low, "$lt": high}},
                limit=self.sessions,
            )
        return [item.key for item in items if matches(item.value, low, high)]

    def summary(self, op: str, result: Any) -> Any:
        if op == "list50":
            return [item.key for item in result]
        if op == "find":
            return sorted(result)
        return result

    async def close(self) -> None:
        await self.stack.aclose()


class AgentsTurnPeer(LocalPeer):
    """One turn of the Agents SDK's ``SQLAlchemySession`` (``add_items`` then
    ``get_items``), on a session object made for the turn as a request handler makes
    it, plain or as sessionmeta's drop-in ``MetadataSQLAlchemySession``."""

    def __init__(self, engine: AsyncEngine, sessions: int, drop_in: bool) -> None:
        self.engine = engine
        self.sessions = sessions
        self.drop_in = drop_in
        if drop_in:
            self.name = "Agents SDK + sessionmeta drop-in"
            self.how = {"turn": "MetadataSQLAlchemySession(metadata_model=BenchMeta)"}
        else:
            self.name = "Agents SDK SQLAlchemySession"
            self.how = {"turn": "SQLAlchemySession, as the SDK ships it"}

    def session(self, sid: str) -> Any:
        if self.drop_in:
            from sessionmeta.agents import MetadataSQLAlchemySession

            return MetadataSQLAlchemySession(
                sid,
                engine=self.engine,
                metadata_model=BenchMeta,
                sessions_table=SESSIONS_TABLE,
                messages_table=MESSAGES_TABLE,
                metadata_table=METADATA_TABLE,
            )
        from agents.extensions.memory.sqlalchemy_session import SQLAlchemySession

        return SQLAlchemySession(
            sid, engine=self.engine, sessions_table=SESSIONS_TABLE, messages_table=MESSAGES_TABLE
        )

    async def create_tables(self) -> None:
        from sessionmeta.agents import MetadataSQLAlchemySession

        await MetadataSQLAlchemySession(
            session_id(0),
            engine=self.engine,
            metadata_model=BenchMeta,
            sessions_table=SESSIONS_TABLE,
            messages_table=MESSAGES_TABLE,
            metadata_table=METADATA_TABLE,
        ).create_tables()

    async def turn(self, i: int) -> Any:
        session = self.session(session_id(turn_index(i, self.sessions, not self.drop_in)))
        await session.add_items(turn_items(i))
        return await session.get_items()

    def summary(self, op: str, result: Any) -> Any:
        return len(result)


class AdkPeer:
    """Google ADK's ``DatabaseSessionService``, in a worker process (``peers_adk.py``)
    that times each operation itself."""

    name = "Google ADK"

    def __init__(
        self, python: str, url: str, sessions: int, synchronous: str | None = None
    ) -> None:
        self.python = python
        self.url = url
        self.sessions = sessions
        self.synchronous = synchronous
        self.process: asyncio.subprocess.Process | None = None
        self.versions: dict[str, str] = {}
        self.how = {
            "bulk": f"{sessions:,} create_session calls (no batch API)",
            "update3": "get_session(num_recent_events=0) + append_event(state_delta)",
            "read1": "get_session(num_recent_events=0).state: a dict",
            "list50": (
                "in Python: list_sessions loads all 100 of the owner's sessions, "
                "the newest 50 taken in Python"
            ),
            "find": (
                f"in Python: list_sessions loads all {sessions:,} sessions, filtered in "
                "Python (state cannot be queried)"
            ),
        }

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            self.python,
            str(HERE / "peers_adk.py"),
            "--url",
            self.url,
            "--sessions",
            str(self.sessions),
            *(["--sqlite-synchronous", self.synchronous] if self.synchronous else []),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 24,
        )
        reply = await self.request(command="setup")
        self.versions = reply["versions"]

    async def request(self, **message: Any) -> dict[str, Any]:
        process = self.process
        assert process is not None and process.stdin is not None and process.stdout is not None
        process.stdin.write((json.dumps(message) + "\n").encode())
        await process.stdin.drain()
        line = await process.stdout.readline()
        if not line:
            raise RuntimeError(f"the Google ADK worker exited ({await process.wait()})")
        reply: dict[str, Any] = json.loads(line)
        if not reply.get("ok"):
            raise RuntimeError(f"Google ADK worker: {reply.get('error')}")
        return reply

    async def run(self, op: str, index: int, check: bool = False) -> tuple[float, Any]:
        reply = await self.request(command="run", op=op, index=index, check=check)
        return float(reply["us"]), reply.get("result")

    async def memory(self, op: str, index: int) -> int:
        return int((await self.request(command="memory", op=op, index=index))["peak"])

    async def reset(self) -> None:
        await self.request(command="reset")

    async def after_load(self) -> None:
        await self.request(command="after_load")

    async def close(self) -> None:
        if self.process is not None and self.process.returncode is None:
            try:
                await self.request(command="quit")
            finally:
                await self.process.wait()
