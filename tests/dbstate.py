"""Reading the tables directly, behind the store's back, to check what a test left there."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine


def _quote(engine: AsyncEngine, name: str) -> str:
    return f"`{name}`" if engine.dialect.name in ("mysql", "mariadb") else f'"{name}"'


async def stored_rows(engine: AsyncEngine, session_id: str) -> dict[str, str]:
    """The stored ``key -> value text`` of one session."""
    key = _quote(engine, "key")
    async with engine.connect() as connection:
        rows = await connection.execute(
            text(f"SELECT {key}, value FROM agent_sessions_metadata WHERE session_id = :sid"),
            {"sid": session_id},
        )
        return {row[0]: row[1] for row in rows}


async def all_value_rows(engine: AsyncEngine) -> int:
    """How many value rows the metadata table holds, for every session."""
    async with engine.connect() as connection:
        count = await connection.scalar(text("SELECT COUNT(*) FROM agent_sessions_metadata"))
    return int(count or 0)


async def session_ids(engine: AsyncEngine) -> list[str]:
    """Every session row's id, sorted."""
    async with engine.connect() as connection:
        rows = await connection.execute(text("SELECT session_id FROM agent_sessions"))
        return sorted(row[0] for row in rows)


async def clear_session(engine: AsyncEngine, session_id: str) -> None:
    """Delete the session row, as the Agents SDK's ``clear_session`` does; values cascade."""
    async with engine.begin() as connection:
        if engine.dialect.name == "sqlite":
            await connection.execute(text("PRAGMA foreign_keys = ON"))
        await connection.execute(
            text("DELETE FROM agent_sessions WHERE session_id = :sid"), {"sid": session_id}
        )
