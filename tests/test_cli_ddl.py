"""`sessionmeta ddl` piped into each database's own client, as a DBA applies it."""

from __future__ import annotations

import asyncio
import os
import shutil

import pytest
from sqlalchemy import insert, inspect, select
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from sessionmeta import MetadataStore, field
from sessionmeta.cli import DIALECTS
from sessionmeta.sql import dialects
from sessionmeta.sql.schema import add_messages_table, build_tables

from .conftest import reset_database
from .models import ChatMeta
from .test_cli import Result, run

METADATA_TABLES = {
    "agent_sessions_metadata",
    "agent_sessions_metadata_items",
    "agent_sessions_metadata_unique",
}


def client(db_url: str) -> tuple[list[str], dict[str, str]]:
    """The command line of the database's own client reading a script on stdin, and its
    environment: psql, mysql or sqlite3, stopping at the first error."""
    url = make_url(db_url)
    env = dict(os.environ)
    backend = url.get_backend_name()
    if backend == "postgresql":
        command = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(url.host)]
        command += ["-p", str(url.port or 5432), "-U", str(url.username), "-d", str(url.database)]
        if url.password:
            env["PGPASSWORD"] = str(url.password)
    elif backend in ("mysql", "mariadb"):
        command = ["mysql", "--protocol=tcp", "-h", str(url.host), "-P", str(url.port or 3306)]
        command += ["-u", str(url.username), str(url.database)]
        if url.password:
            env["MYSQL_PWD"] = str(url.password)
    else:
        command = ["sqlite3", "-bail", str(url.database)]
    if shutil.which(command[0]) is None:
        pytest.skip(f"the {command[0]} client is not installed")
    return command, env


async def pipe(script: str, db_url: str) -> Result:
    command, env = client(db_url)
    process = await asyncio.create_subprocess_exec(
        *command,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate(script.encode())
    assert process.returncode is not None
    return Result(process.returncode, out.decode(), err.decode())


async def sdk_database(engine: AsyncEngine) -> None:
    """The Agents SDK's two tables, a session and one message of its history."""
    tables = build_tables("agent_sessions", "agent_sessions_metadata")
    messages = add_messages_table(tables, "agent_messages")
    async with engine.begin() as connection:
        await connection.run_sync(tables.metadata.create_all, tables=[tables.sessions, messages])
        await connection.execute(insert(tables.sessions).values(session_id="chat-1"))
        await connection.execute(
            insert(messages).values(session_id="chat-1", message_data='{"role": "user"}')
        )


def table_names(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


async def history(engine: AsyncEngine) -> list[str]:
    messages = add_messages_table(build_tables("agent_sessions", "m"), "agent_messages")
    async with engine.connect() as connection:
        rows = await connection.execute(select(messages.c.session_id, messages.c.message_data))
        return [f"{sid}: {data}" for sid, data in rows]


def dialects_for(engine: AsyncEngine) -> list[str]:
    """The `--dialect` values whose scripts this server must accept (MariaDB takes both)."""
    name = engine.dialect.name
    return ["mysql", "mariadb"] if name in ("mysql", "mariadb") else [name]


async def test_only_metadata_if_not_exists_applies_to_an_sdk_database_twice(
    engine: AsyncEngine, db_url: str
) -> None:
    for dialect in dialects_for(engine):
        await sdk_database(engine)
        ddl = await run("ddl", "--dialect", dialect, "--only-metadata", "--if-not-exists")
        assert ddl.code == 0, ddl
        assert "TABLE IF NOT EXISTS agent_sessions (" not in ddl.out
        for attempt in (1, 2):
            applied = await pipe(ddl.out, db_url)
            assert applied.code == 0, (dialect, attempt, applied)
        async with engine.connect() as connection:
            assert await connection.run_sync(table_names) >= METADATA_TABLES
        store = MetadataStore(ChatMeta, engine)
        await store.bind("chat-1").set_metadata({"title": "from the SDK", "tags": ["x"]})
        assert await store.find_sessions(field("tags").contains("x")) == ["chat-1"]
        assert await history(engine) == ['chat-1: {"role": "user"}']
        await reset(engine)


async def test_if_not_exists_creates_every_table_on_an_empty_database_and_runs_again(
    engine: AsyncEngine, db_url: str
) -> None:
    for dialect in dialects_for(engine):
        ddl = await run("ddl", "--dialect", dialect, "--if-not-exists")
        assert ddl.code == 0, ddl
        for attempt in (1, 2):
            applied = await pipe(ddl.out, db_url)
            assert applied.code == 0, (dialect, attempt, applied)
        store = MetadataStore(ChatMeta, engine)
        await store.bind("s1").set_metadata({"tags": ["a", "b"], "priority": 2})
        assert await store.find_sessions(field("tags").contains("b"), field("priority") > 1) == [
            "s1"
        ]
        async with engine.connect() as connection:
            indexes = await connection.run_sync(
                lambda sync: {
                    index["name"]
                    for name in METADATA_TABLES
                    for index in inspect(sync).get_indexes(name)
                }
            )
        assert {
            "idx_agent_sessions_metadata_key_hash",
            "idx_agent_sessions_metadata_key_sort",
            "ix_agent_sessions_metadata_items",
            "ux_agent_sessions_metadata_unique_session",
        } <= indexes
        await reset(engine)


async def reset(engine: AsyncEngine) -> None:
    """An empty database again, for the next dialect's script (MariaDB runs two)."""
    await engine.dispose()
    await reset_database(engine)


def test_the_parser_offers_every_backend() -> None:
    # The parser spells the names out (it is built without importing SQLAlchemy).
    assert tuple(backend.name for backend in dialects.BACKENDS) == DIALECTS
