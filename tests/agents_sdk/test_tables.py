"""The tables the drop-in creates, and databases the plain SDK made before it."""

from __future__ import annotations

from typing import Any

import pytest
from agents.extensions.memory import SQLAlchemySession
from agents.items import TResponseInputItem
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from sessionmeta import DatabaseError
from sessionmeta.agents import MetadataSQLAlchemySession
from sessionmeta.sql.schema import add_messages_table, build_tables
from tests.models import ChatMeta

SDK_TABLES = {"agent_sessions", "agent_messages"}
# The items table holds the elements of list and set values (it serves `contains`); the
# unique table the values of unique fields.
ALL_TABLES = {
    *SDK_TABLES,
    "agent_sessions_metadata",
    "agent_sessions_metadata_items",
    "agent_sessions_metadata_unique",
}


def user(content: str) -> TResponseInputItem:
    return {"role": "user", "content": content}


def is_mysql(engine: AsyncEngine) -> bool:
    return engine.dialect.name in ("mysql", "mariadb")


async def inspect_tables(engine: AsyncEngine) -> dict[str, dict[str, Any]]:
    """Per table: column names, foreign keys and index names, as the database reports them."""

    def run(sync: Any) -> dict[str, dict[str, Any]]:
        inspector = inspect(sync)
        return {
            name: {
                "columns": [column["name"] for column in inspector.get_columns(name)],
                "foreign_keys": [
                    (
                        tuple(fk["constrained_columns"]),
                        fk["referred_table"],
                        tuple(fk["referred_columns"]),
                        (fk.get("options") or {}).get("ondelete", "").upper(),
                    )
                    for fk in inspector.get_foreign_keys(name)
                ],
                "indexes": sorted(index["name"] or "" for index in inspector.get_indexes(name)),
            }
            for name in inspector.get_table_names()
        }

    async with engine.connect() as connection:
        return await connection.run_sync(run)


async def dump(engine: AsyncEngine, table: str) -> list[tuple[Any, ...]]:
    async with engine.connect() as connection:
        rows = await connection.execute(text(f"SELECT * FROM {table} ORDER BY 1, 2"))
        return [tuple(row) for row in rows]


async def test_create_tables_makes_the_tables_the_sdk_reads(engine: AsyncEngine) -> None:
    session = MetadataSQLAlchemySession(
        "s", engine=engine, metadata_model=ChatMeta, create_tables=True
    )
    await session.add_items([user("written by the drop-in")])
    await session.set_metadata({"title": "t"})

    tables = await inspect_tables(engine)
    assert set(tables) == ALL_TABLES
    # The SDK's own column names and index, so its queries run unchanged.
    assert tables["agent_sessions"]["columns"] == ["session_id", "created_at", "updated_at"]
    assert tables["agent_messages"]["columns"] == ["id", "session_id", "message_data", "created_at"]
    assert "idx_agent_messages_session_time" in tables["agent_messages"]["indexes"]
    for child in ("agent_messages", "agent_sessions_metadata"):
        assert tables[child]["foreign_keys"] == [
            (("session_id",), "agent_sessions", ("session_id",), "CASCADE")
        ], child

    # The plain SDK session reads and writes the same tables.
    plain = SQLAlchemySession("s", engine=engine)
    assert await plain.get_items() == [user("written by the drop-in")]
    await plain.add_items([user("written by the SDK")])
    assert await session.get_items() == [
        user("written by the drop-in"),
        user("written by the SDK"),
    ]


async def test_mysql_session_ids_are_bounded_and_binary(engine: AsyncEngine) -> None:
    session = MetadataSQLAlchemySession(
        "Case", engine=engine, metadata_model=ChatMeta, create_tables=True
    )
    await session.add_items([user("upper")])
    lower = MetadataSQLAlchemySession("case", engine=engine, metadata_model=ChatMeta)
    await lower.add_items([user("lower")])
    # Ids differing only in case are two sessions, on MySQL too.
    assert await session.get_items() == [user("upper")]
    assert await lower.get_items() == [user("lower")]
    if not is_mysql(engine):
        return
    shapes = await session_id_columns(engine)
    assert shapes == [(name, "varchar(255)", "utf8mb4_bin") for name in sorted(ALL_TABLES)]


async def session_id_columns(engine: AsyncEngine) -> list[tuple[Any, ...]]:
    """(table, column type, collation) of every ``session_id`` column, on MySQL/MariaDB."""
    async with engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT table_name, column_type, collation_name FROM information_schema.columns "
                "WHERE table_schema = DATABASE() AND column_name = 'session_id' ORDER BY 1"
            )
        )
        return [tuple(row) for row in rows]


async def make_plain_sdk_database(engine: AsyncEngine) -> None:
    """Tables and history as an application on the plain SDK has them."""
    if is_mysql(engine):
        # The SDK's own create_tables cannot run on MySQL (an unbounded VARCHAR):
        # such a database was made by hand, in the form the drop-in creates.
        tables = build_tables("agent_sessions", "agent_sessions_metadata")
        messages = add_messages_table(tables, "agent_messages")
        async with engine.begin() as connection:
            await connection.run_sync(
                tables.metadata.create_all, tables=[tables.sessions, messages]
            )
        create = False
    else:
        create = True
    for session_id, contents in (("old", ["héllo ✓", "x" * 70_000, "third"]), ("other", ["o"])):
        plain = SQLAlchemySession(session_id, engine=engine, create_tables=create)
        await plain.add_items([user(content) for content in contents])


async def test_plain_sdk_database_gains_metadata_and_loses_nothing(engine: AsyncEngine) -> None:
    await make_plain_sdk_database(engine)
    before_tables = await inspect_tables(engine)
    before_sessions = await dump(engine, "agent_sessions")
    before_messages = await dump(engine, "agent_messages")
    history = await SQLAlchemySession("old", engine=engine).get_items()
    assert set(before_tables) == SDK_TABLES

    session = MetadataSQLAlchemySession(
        "old", engine=engine, metadata_model=ChatMeta, create_tables=True
    )
    assert await session.get_items() == history

    after_tables = await inspect_tables(engine)
    assert set(after_tables) == ALL_TABLES
    for name in SDK_TABLES:
        assert after_tables[name] == before_tables[name], name
    assert await dump(engine, "agent_sessions") == before_sessions
    assert await dump(engine, "agent_messages") == before_messages

    await session.set_metadata({"owner_id": "u1", "title": "From before"})
    await session.add_items([user("after the upgrade")])
    plain = SQLAlchemySession("old", engine=engine)
    assert await plain.get_items() == [*history, user("after the upgrade")]
    assert (await session.get_metadata()).title == "From before"
    assert await session.find_sessions_by_metadata("owner_id", "u1") == ["old"]

    await session.clear_session()
    assert await plain.get_items() == []
    assert await session.find_sessions_by_metadata("owner_id", "u1") == []
    assert await SQLAlchemySession("other", engine=engine).get_items() == [user("o")]


async def test_hand_made_sessions_table(engine: AsyncEngine) -> None:
    # The SDK's sessions table as an application wrote it by hand (bounded, for
    # MySQL) in the database's default collation.
    ddl = (
        "CREATE TABLE agent_sessions (session_id VARCHAR(255) NOT NULL PRIMARY KEY, "
        "created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, "
        "updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)"
    )
    if is_mysql(engine):
        ddl += " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci"
    async with engine.begin() as connection:
        await connection.execute(text(ddl))
    session = MetadataSQLAlchemySession(
        "s", engine=engine, metadata_model=ChatMeta, create_tables=True
    )
    await session.set_metadata({"title": "t"})
    await session.add_items([user("hi")])
    assert (await session.get_metadata()).title == "t"
    assert await session.get_items() == [user("hi")]
    if not is_mysql(engine):
        return
    # The tables created beside it follow its session id, or InnoDB refuses their keys.
    shapes = await session_id_columns(engine)
    assert shapes == [(name, "varchar(255)", "utf8mb4_general_ci") for name in sorted(ALL_TABLES)]


async def test_sessions_table_of_another_kind_is_explained(engine: AsyncEngine) -> None:
    # A session id that is not a string column (here bytes): nothing to follow, so
    # MySQL's refusal of the foreign key comes with what sessionmeta needs.
    if not is_mysql(engine):
        return
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "CREATE TABLE agent_sessions (session_id VARBINARY(255) NOT NULL PRIMARY KEY, "
                "created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, "
                "updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP) ENGINE=InnoDB"
            )
        )
    session = MetadataSQLAlchemySession(
        "s", engine=engine, metadata_model=ChatMeta, create_tables=True
    )
    with pytest.raises(DatabaseError, match="foreign key") as caught:
        await session.set_metadata({"title": "t"})
    assert "agent_sessions.session_id" in str(caught.value)
