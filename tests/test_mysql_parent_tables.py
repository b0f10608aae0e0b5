"""MySQL/MariaDB: sessionmeta's tables beside an SDK sessions table of another column type.

A hand-made ``agent_sessions`` in the database's default collation, or one whose
``session_id`` is ``VARCHAR(190)`` as newer SDK releases create it, cannot be the
parent of a ``utf8mb4_bin`` ``VARCHAR(255)`` foreign key (errno 150). The tables
created beside it follow its column instead, through ``create_tables`` and through
the Alembic migration; the SDK's tables and messages are left as they are.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Table, text
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from sessionmeta import MetadataStore, field, migrations
from sessionmeta.io.database import adapt_to_database
from sessionmeta.sql.schema import adapt_to_parents, add_messages_table, build_tables

from .models import ChatMeta
from .test_migrations import differences_from

alembic_command = pytest.importorskip("alembic.command")
alembic_config = pytest.importorskip("alembic.config")
migration = pytest.importorskip("alembic.migration")
operations = pytest.importorskip("alembic.operations")
memory = pytest.importorskip("agents.extensions.memory")

ROOT = Path(__file__).resolve().parent.parent
OURS = (
    "agent_sessions_metadata",
    "agent_sessions_metadata_items",
    "agent_sessions_metadata_unique",
)
# (session_id's declaration, the table's collation): what the database shows for it.
SHAPES = {
    "default-collation": ("VARCHAR(255)", "utf8mb4_general_ci", "varchar(255)"),
    "varchar-190": ("VARCHAR(190)", "utf8mb4_unicode_ci", "varchar(190)"),
}
HISTORY = {
    "Chat-1": [{"role": "user", "content": "héllo ✓"}, {"role": "assistant", "content": "hi"}],
    "other": [{"role": "user", "content": "o"}],
}


def is_mysql(engine: AsyncEngine) -> bool:
    return engine.dialect.name in ("mysql", "mariadb")


def require_mysql(engine: AsyncEngine) -> None:
    if not is_mysql(engine):
        pytest.skip("MySQL/MariaDB only: other databases take any parent column type")


async def sdk_tables(engine: AsyncEngine, shape: str) -> None:
    """The SDK's two tables made by hand in ``shape``, with history written by the SDK."""
    declared, collation, _ = SHAPES[shape]
    options = f"ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE={collation}"
    async with engine.begin() as connection:
        await connection.execute(
            text(
                f"CREATE TABLE agent_sessions (session_id {declared} NOT NULL PRIMARY KEY, "
                "created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, "
                "updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP) " + options
            )
        )
        await connection.execute(
            text(
                "CREATE TABLE agent_messages (id INTEGER NOT NULL AUTO_INCREMENT PRIMARY KEY, "
                f"session_id {declared} NOT NULL, message_data LONGTEXT NOT NULL, "
                "created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, "
                "INDEX idx_agent_messages_session_time (session_id, created_at), "
                "FOREIGN KEY (session_id) REFERENCES agent_sessions (session_id) "
                "ON DELETE CASCADE) " + options
            )
        )
    for session_id, items in HISTORY.items():
        await memory.SQLAlchemySession(session_id, engine=engine).add_items(items)


async def scalar(engine: AsyncEngine, sql: str, **params: Any) -> Any:
    async with engine.connect() as connection:
        return await connection.scalar(text(sql), params)


async def message_count(engine: AsyncEngine) -> int:
    return int(await scalar(engine, "SELECT COUNT(*) FROM agent_messages"))


async def column_shapes(engine: AsyncEngine) -> dict[tuple[str, str], tuple[str, str]]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT table_name, column_name, column_type, collation_name "
                "FROM information_schema.columns WHERE table_schema = DATABASE() "
                "AND column_name IN ('session_id', 'key')"
            )
        )
        return {(row[0], row[1]): (row[2], row[3]) for row in rows}


async def check_tables_follow_the_parent(engine: AsyncEngine, shape: str) -> None:
    _, collation, column_type = SHAPES[shape]
    shapes = await column_shapes(engine)
    for table in ("agent_sessions", "agent_messages", *OURS):
        assert shapes[table, "session_id"] == (column_type, collation), table
    for table in OURS:  # only the columns referring to the SDK's table follow it
        assert shapes[table, "key"][1] == "utf8mb4_bin", table


async def check_store_works(engine: AsyncEngine, store: MetadataStore[ChatMeta]) -> None:
    """Write, read, find; then the deletes cascade through both of sessionmeta's tables."""
    await store.bind("Chat-1").set_metadata({"title": "Refunds", "tags": ["billing", "vip"]})
    await store.bind("new").set_metadata({"title": "fresh", "owner_id": "u1"})
    assert (await store.bind("Chat-1").get_metadata()).tags == ["billing", "vip"]
    assert await store.find_sessions_by_metadata("title", "Refunds") == ["Chat-1"]
    assert await store.find_sessions_by_metadata("owner_id", "u1") == ["new"]
    assert await store.find_sessions(field("tags").contains("vip")) == ["Chat-1"]
    items = "SELECT COUNT(*) FROM agent_sessions_metadata_items WHERE session_id = :s"
    assert await scalar(engine, items, s="Chat-1") == 2

    # Deleting the metadata cascades to the items.
    await store.bind("Chat-1").delete_metadata(["tags"])
    assert await scalar(engine, items, s="Chat-1") == 0
    await store.bind("Chat-1").add_to("tags", "again")
    assert await scalar(engine, items, s="Chat-1") == 1

    # The SDK's clear deletes the session row: metadata and items go with it.
    await memory.SQLAlchemySession("Chat-1", engine=engine).clear_session()
    assert await store.find_sessions_by_metadata("title", "Refunds") == []
    assert await scalar(engine, items, s="Chat-1") == 0
    values = "SELECT COUNT(*) FROM agent_sessions_metadata WHERE session_id = :s"
    assert await scalar(engine, values, s="Chat-1") == 0
    assert await memory.SQLAlchemySession("other", engine=engine).get_items() == HISTORY["other"]


@pytest.mark.parametrize("shape", sorted(SHAPES))
async def test_create_tables_follows_the_sessions_table(engine: AsyncEngine, shape: str) -> None:
    require_mysql(engine)
    await sdk_tables(engine, shape)
    before = await message_count(engine)

    store = MetadataStore(ChatMeta, engine)
    await store.create_tables()
    await store.create_tables()  # nothing left to create: no error either

    await check_tables_follow_the_parent(engine, shape)
    # The store's own description is unchanged: the copy was adapted.
    session_id = store.sql_metadata.tables["agent_sessions_metadata"].c.session_id
    assert "utf8mb4_bin" in str(session_id.type.compile(dialect=engine.dialect))
    assert await message_count(engine) == before
    assert await memory.SQLAlchemySession("Chat-1", engine=engine).get_items() == HISTORY["Chat-1"]
    await check_store_works(engine, store)


@pytest.mark.parametrize("shape", sorted(SHAPES))
async def test_create_tables_on_a_callers_connection(engine: AsyncEngine, shape: str) -> None:
    require_mysql(engine)
    await sdk_tables(engine, shape)
    store = MetadataStore(ChatMeta, engine)
    async with engine.begin() as connection:
        await store.using(connection).create_tables()
    await check_tables_follow_the_parent(engine, shape)
    await check_store_works(engine, store)


async def test_case_insensitive_parent_makes_one_session(engine: AsyncEngine) -> None:
    # utf8mb4_general_ci: "Chat-1" and "chat-1" are one row in the SDK's table, so
    # they are one session's metadata too (docs/agents.md).
    require_mysql(engine)
    await sdk_tables(engine, "default-collation")
    store = MetadataStore(ChatMeta, engine)
    await store.create_tables()
    await store.bind("Chat-1").set_metadata({"title": "first"})
    await store.bind("chat-1").set_metadata({"owner_id": "u1"})
    meta = await store.bind("CHAT-1").get_metadata()
    assert (meta.title, meta.owner_id) == ("first", "u1")
    assert await scalar(engine, "SELECT COUNT(*) FROM agent_sessions") == len(HISTORY)
    # A found id is spelled as the matching row was written.
    assert await store.find_sessions_by_metadata("owner_id", "u1") == ["chat-1"]
    # Asked for under other spellings, get_many answers each as asked.
    many = await store.get_many(["CHAT-1", "chat-1", "other"])
    assert [(sid, meta.title) for sid, meta in many.items()] == [
        ("CHAT-1", "first"),
        ("chat-1", "first"),
        ("other", None),
    ]
    # Deleting the session under any spelling deletes all of its metadata.
    await memory.SQLAlchemySession("CHAT-1", engine=engine).clear_session()
    assert await scalar(engine, "SELECT COUNT(*) FROM agent_sessions_metadata") == 0


def upgrade_with_alembic(connection: Connection) -> None:
    context = migration.MigrationContext.configure(connection)
    migrations.upgrade(operations.Operations(context))


def adapted_differences(connection: Connection) -> list[Any]:
    tables = build_tables("agent_sessions", OURS[0])
    target = migrations.target_metadata(connection, tables.metadata)
    return differences_from(connection, target)


@pytest.mark.parametrize("shape", sorted(SHAPES))
async def test_alembic_upgrade_follows_the_sessions_table(engine: AsyncEngine, shape: str) -> None:
    require_mysql(engine)
    await sdk_tables(engine, shape)
    before = await message_count(engine)
    async with engine.connect() as connection:
        pending = await connection.run_sync(adapted_differences)
    # Before: our two tables (and their indexes) to add, nothing about the SDK's table.
    assert {diff[0] for diff in pending} == {"add_table", "add_index"}
    assert sorted(diff[1].name for diff in pending if diff[0] == "add_table") == list(OURS)
    assert {diff[1].table.name for diff in pending if diff[0] == "add_index"} == set(OURS)

    async with engine.begin() as connection:
        await connection.run_sync(upgrade_with_alembic)
    async with engine.connect() as connection:
        assert await connection.run_sync(adapted_differences) == []

    await check_tables_follow_the_parent(engine, shape)
    assert await message_count(engine) == before
    await check_store_works(engine, MetadataStore(ChatMeta, engine))


@pytest.mark.parametrize("shape", sorted(SHAPES))
async def test_example_alembic_environment(engine: AsyncEngine, db_url: str, shape: str) -> None:
    # examples/alembic: upgrade, then `alembic check` (autogenerate) finds nothing to do.
    require_mysql(engine)
    await sdk_tables(engine, shape)
    before = await message_count(engine)
    cfg = alembic_config.Config(str(ROOT / "examples" / "alembic" / "alembic.ini"))
    cfg.set_main_option("sqlalchemy.url", db_url)
    await asyncio.to_thread(alembic_command.upgrade, cfg, "head")
    await asyncio.to_thread(alembic_command.check, cfg)
    await check_tables_follow_the_parent(engine, shape)
    assert await message_count(engine) == before
    await asyncio.to_thread(alembic_command.downgrade, cfg, "base")
    assert await message_count(engine) == before


async def test_other_databases_keep_the_tables_as_they_are(engine: AsyncEngine) -> None:
    # PostgreSQL and SQLite accept any parent column type: nothing is copied or changed.
    tables = build_tables("agent_sessions", OURS[0])
    async with engine.begin() as connection:
        await connection.run_sync(tables.metadata.create_all, tables=[tables.sessions])
        adapted = await connection.run_sync(adapt_to_database, tables.metadata)
    if is_mysql(engine):
        assert adapted is not tables.metadata
    else:
        assert adapted is tables.metadata


def test_adapting_leaves_the_original_and_follows_down() -> None:
    tables = build_tables("agent_sessions", "meta")
    messages = add_messages_table(tables, "agent_messages")
    parent = mysql.VARCHAR(190, charset="utf8mb4", collation="utf8mb4_unicode_ci")
    adapted = adapt_to_parents(tables.metadata, {("agent_sessions", "session_id"): parent})

    def ddl(table: Table, column: str) -> str:
        return str(table.c[column].type.compile(dialect=mysql.dialect()))

    for name in ("agent_sessions", "agent_messages", "meta", "meta_items"):
        assert adapted.tables[name].c.session_id.type is parent, name
    # The key refers to a table created in the same run: it keeps sessionmeta's type.
    assert ddl(adapted.tables["meta_items"], "key") == ddl(tables.items, "key")
    assert "utf8mb4_bin" in ddl(tables.items, "key")
    # The original is untouched.
    for table in (tables.sessions, tables.values, tables.items, messages):
        assert ddl(table, "session_id") == "VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
    # Nothing existing (an empty mapping): every column keeps its type.
    unchanged = adapt_to_parents(tables.metadata, {})
    for table in unchanged.tables.values():
        for column in table.columns:
            assert ddl(table, column.name) == ddl(tables.metadata.tables[table.name], column.name)
