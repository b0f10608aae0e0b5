"""Alembic operations that add sessionmeta's tables to a database the Agents SDK already uses.

Call :func:`upgrade` and :func:`downgrade` from a migration script (see
``examples/alembic`` and ``docs/migrations.md``). The statements are generated
from the same table definitions as ``store.sql_metadata``, so the migration
creates exactly what autogenerate compares against, and works offline
(``alembic upgrade --sql``) too. Alembic itself is imported by the caller only.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import MetaData, Table
from sqlalchemy.schema import CreateIndex, CreateTable, DropTable

from sessionmeta.sql.schema import build_tables

__all__ = ["downgrade", "new_tables", "upgrade"]


def new_tables(
    sessions_table: str = "agent_sessions",
    metadata_table: str = "agent_sessions_metadata",
    *,
    sql_metadata: MetaData | None = None,
) -> list[Table]:
    """sessionmeta's tables other than the SDK's sessions table, in creation order.

    ``sql_metadata`` defaults to the tables a store with these names describes
    (its ``sql_metadata``).
    """
    metadata = sql_metadata or build_tables(sessions_table, metadata_table).metadata
    return [table for table in metadata.sorted_tables if table.name != sessions_table]


def upgrade(
    op: Any,
    sessions_table: str = "agent_sessions",
    metadata_table: str = "agent_sessions_metadata",
    *,
    sql_metadata: MetaData | None = None,
) -> None:
    """Create the metadata table(s) and their indexes; the sessions table must exist.

    ``op`` is ``alembic.op``. The SDK's tables and their rows are not touched.
    """
    for table in new_tables(sessions_table, metadata_table, sql_metadata=sql_metadata):
        op.execute(CreateTable(table))
        for index in sorted(table.indexes, key=lambda index: index.name or ""):
            op.execute(CreateIndex(index))


def downgrade(
    op: Any,
    sessions_table: str = "agent_sessions",
    metadata_table: str = "agent_sessions_metadata",
    *,
    sql_metadata: MetaData | None = None,
) -> None:
    """Drop what :func:`upgrade` created (with its rows); the SDK's tables stay."""
    for table in reversed(new_tables(sessions_table, metadata_table, sql_metadata=sql_metadata)):
        op.execute(DropTable(table))
