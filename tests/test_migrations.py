"""The Alembic migration in examples/alembic, on a database the Agents SDK already uses."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from sessionmeta import MetadataStore, field
from sessionmeta.sql.schema import add_messages_table, build_tables

from .models import ChatMeta
from .test_cli import cli_env

alembic_command = pytest.importorskip("alembic.command")
alembic_config = pytest.importorskip("alembic.config")
autogenerate = pytest.importorskip("alembic.autogenerate")
migration = pytest.importorskip("alembic.migration")
memory = pytest.importorskip("agents.extensions.memory")

ROOT = Path(__file__).resolve().parent.parent
HISTORY = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi there"}]


def config(url: str) -> Any:
    cfg = alembic_config.Config(str(ROOT / "examples" / "alembic" / "alembic.ini"))
    cfg.set_main_option("sqlalchemy.url", url)
    return cfg


def table_names(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


def differences(connection: Connection, store: MetadataStore[ChatMeta]) -> list[Any]:
    return differences_from(connection, store.sql_metadata)


def differences_from(connection: Connection, target: Any) -> list[Any]:
    """What Alembic autogenerate finds between ``target`` and the database, on its tables."""
    context = migration.MigrationContext.configure(
        connection,
        opts={
            "compare_type": True,
            "include_name": lambda name, type_, parents: type_ != "table" or name in target.tables,
        },
    )
    found: list[Any] = autogenerate.compare_metadata(context, target)
    return found


async def sdk_database(engine: AsyncEngine) -> None:
    """What an application on the SDK has before adopting sessionmeta: tables and history."""
    create = engine.dialect.name not in ("mysql", "mariadb")
    if not create:
        # The SDK's create_tables cannot run on MySQL (it declares an unbounded VARCHAR):
        # there the SDK's tables were made by hand, with bounded binary session ids.
        tables = build_tables("agent_sessions", "agent_sessions_metadata")
        messages = add_messages_table(tables, "agent_messages")
        async with engine.begin() as connection:
            await connection.run_sync(
                tables.metadata.create_all, tables=[tables.sessions, messages]
            )
    for session_id in ("s1", "s2"):
        session = memory.SQLAlchemySession(session_id, engine=engine, create_tables=create)
        await session.add_items(HISTORY)


async def test_migration_adds_the_metadata_table_and_keeps_the_history(
    engine: AsyncEngine, db_url: str
) -> None:
    await sdk_database(engine)
    cfg = config(db_url)
    await asyncio.to_thread(alembic_command.upgrade, cfg, "head")
    async with engine.connect() as connection:
        names = await connection.run_sync(table_names)
    assert {"agent_sessions", "agent_messages", "agent_sessions_metadata"} <= names

    store = MetadataStore(ChatMeta, engine)
    async with engine.connect() as connection:
        assert await connection.run_sync(differences, store) == []
    # Alembic's own check agrees: autogenerate would write an empty migration.
    await asyncio.to_thread(alembic_command.check, cfg)

    history = await memory.SQLAlchemySession("s1", engine=engine).get_items()
    assert history == HISTORY
    await store.bind("s1").set_metadata({"title": "migrated"})
    await store.bind("new").set_metadata({"title": "fresh"})
    assert (await store.bind("s1").get_metadata()).title == "migrated"
    assert await store.find_sessions_by_metadata("title", "fresh") == ["new"]

    await asyncio.to_thread(alembic_command.downgrade, cfg, "base")
    async with engine.connect() as connection:
        names = await connection.run_sync(table_names)
    assert "agent_sessions_metadata" not in names
    assert await memory.SQLAlchemySession("s2", engine=engine).get_items() == HISTORY


async def test_autogenerate_sees_the_missing_table_before_the_migration(
    engine: AsyncEngine,
) -> None:
    await sdk_database(engine)
    store = MetadataStore(ChatMeta, engine)
    async with engine.connect() as connection:
        found = await connection.run_sync(differences, store)
    added = [diff[1].name for diff in found if diff[0] == "add_table"]
    assert sorted(added) == [
        "agent_sessions_metadata",
        "agent_sessions_metadata_items",
        "agent_sessions_metadata_unique",
    ]


def test_offline_sql_is_the_create_statements(capsys: pytest.CaptureFixture[str]) -> None:
    alembic_command.upgrade(config("postgresql+asyncpg://nobody@127.0.0.1/none"), "head", sql=True)
    sql = capsys.readouterr().out
    # The SDK's table only where it is missing, so the script serves either database.
    assert "CREATE TABLE IF NOT EXISTS agent_sessions (" in sql
    assert "CREATE TABLE agent_sessions_metadata" in sql
    assert "CREATE INDEX idx_agent_sessions_metadata_key_hash" in sql
    assert "CREATE TABLE agent_sessions (" not in sql


async def alembic(db_url: str, *args: str) -> tuple[int, str]:
    """``alembic -c examples/alembic/alembic.ini -x url=URL ARGS`` as a user runs it:
    its own process, from the repository's root."""
    script = Path(sys.executable).parent / "alembic"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "alembic"]
    process = await asyncio.create_subprocess_exec(
        *command,
        "-c",
        "examples/alembic/alembic.ini",
        "-x",
        f"url={db_url}",
        *args,
        cwd=ROOT,
        env=cli_env(None),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode()


@pytest.mark.parametrize("start", ["empty", "sdk"])
async def test_the_example_migrates_an_empty_database_and_an_sdk_one(
    engine: AsyncEngine, db_url: str, start: str
) -> None:
    if start == "sdk":
        await sdk_database(engine)
    for args in (["upgrade", "head"], ["check"]):
        code, out = await alembic(db_url, *args)
        assert code == 0, (args, out)
    async with engine.connect() as connection:
        names = await connection.run_sync(table_names)
    assert {
        "agent_sessions",
        "agent_sessions_metadata",
        "agent_sessions_metadata_items",
        "agent_sessions_metadata_unique",
    } <= names
    if start == "empty":
        # The SDK takes the sessions table the migration made, and adds its messages.
        await sdk_database(engine)
    store = MetadataStore(ChatMeta, engine)
    await store.bind("s1").set_metadata({"title": "migrated", "tags": ["a"]})
    assert await store.find_sessions(field("tags").contains("a")) == ["s1"]
    assert await memory.SQLAlchemySession("s1", engine=engine).get_items() == HISTORY

    # Down and up again: the sessions table and the history stay throughout.
    for args in (["downgrade", "base"], ["upgrade", "head"], ["check"]):
        code, out = await alembic(db_url, *args)
        assert code == 0, (args, out)
    assert await memory.SQLAlchemySession("s2", engine=engine).get_items() == HISTORY
    assert (await store.bind("s1").get_metadata()).title is None
