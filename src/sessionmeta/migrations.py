"""Alembic operations that add sessionmeta's tables to a database, empty or the Agents SDK's.

Call :func:`upgrade` and :func:`downgrade` from a migration script, and give
autogenerate :func:`target_metadata` (see ``examples/alembic`` and
``docs/migrations.md``). The statements are generated from the same table
definitions as ``store.sql_metadata``, so the migration creates exactly what
autogenerate compares against, and works offline (``alembic upgrade --sql``)
too. Alembic itself is imported by the caller only.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import MetaData, Table, inspect
from sqlalchemy.engine import Connection
from sqlalchemy.schema import CreateIndex, CreateTable, DropTable

from sessionmeta.errors import InvalidArgumentError
from sessionmeta.io.database import adapt_to_database
from sessionmeta.sql.dialects import backend_for
from sessionmeta.sql.schema import (
    KEY_HASH_COLUMNS,
    KEY_SORT_COLUMNS,
    build_tables,
    expires_at_column,
    expires_at_index,
)

__all__ = [
    "add_expiry",
    "downgrade",
    "new_tables",
    "repoint_items_foreign_key",
    "target_metadata",
    "upgrade",
]


def _metadata(sessions_table: str, metadata_table: str, sql_metadata: MetaData | None) -> MetaData:
    if sql_metadata is not None:
        return sql_metadata
    return build_tables(sessions_table, metadata_table).metadata


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
    metadata = _metadata(sessions_table, metadata_table, sql_metadata)
    return [table for table in metadata.sorted_tables if table.name != sessions_table]


def target_metadata(
    connection: Connection,
    sql_metadata: MetaData | None = None,
    *,
    sessions_table: str = "agent_sessions",
    metadata_table: str = "agent_sessions_metadata",
) -> MetaData:
    """sessionmeta's tables as :func:`upgrade` creates them on ``connection``'s database,
    for ``context.configure(target_metadata=...)`` in Alembic's ``env.py``.

    On MySQL/MariaDB the foreign-key columns (and the SDK's existing sessions
    table) take the type and collation the existing sessions table has, so
    autogenerate proposes no change to the SDK's table. Elsewhere this is
    ``sql_metadata`` itself. ``sql_metadata`` defaults to the tables a store with
    these names describes; it is not changed.
    """
    return adapt_to_database(connection, _metadata(sessions_table, metadata_table, sql_metadata))


def upgrade(
    op: Any,
    sessions_table: str = "agent_sessions",
    metadata_table: str = "agent_sessions_metadata",
    *,
    sql_metadata: MetaData | None = None,
) -> None:
    """Create the metadata table(s) and their indexes, and the sessions table when missing.

    ``op`` is ``alembic.op``. An existing sessions table (the SDK's) and the
    SDK's rows are not touched: the sessions table is created with
    ``CREATE TABLE IF NOT EXISTS``, so the same migration serves an empty
    database and one the SDK already uses, online and offline (``--sql``).
    Online, on MySQL/MariaDB, the foreign-key columns take the existing sessions
    table's type and collation (:func:`target_metadata`); offline there is no
    database to read, so they are sessionmeta's own.
    """
    metadata = _metadata(sessions_table, metadata_table, sql_metadata)
    if not op.get_context().as_sql:
        metadata = adapt_to_database(op.get_bind(), metadata)
    sessions = metadata.tables.get(sessions_table)
    if sessions is None:
        raise InvalidArgumentError(
            f"sql_metadata has no sessions table {sessions_table!r}: pass the store's "
            "sessions_table= too"
        )
    # It has no indexes besides its primary key.
    op.execute(CreateTable(sessions, if_not_exists=True))
    for table in new_tables(sessions_table, metadata_table, sql_metadata=metadata):
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
    """Drop the metadata table(s) :func:`upgrade` created, with their rows.

    The sessions table stays, even when :func:`upgrade` created it: the SDK keeps
    its conversations there.
    """
    for table in reversed(new_tables(sessions_table, metadata_table, sql_metadata=sql_metadata)):
        op.execute(DropTable(table))


def repoint_items_foreign_key(
    op: Any,
    sessions_table: str = "agent_sessions",
    metadata_table: str = "agent_sessions_metadata",
    *,
    sql_metadata: MetaData | None = None,
) -> None:
    """Point the items table's foreign key at the sessions table, on tables made before it did.

    Tables created before round three have the items table's foreign key referring
    to the value rows (``session_id, key``). A plan PostgreSQL cached for that check
    while the tables were empty can take the wrong index and slow every write as the
    tables grow; the foreign key to the session (``session_id``) cannot. Online only:
    the constraints are read from the database, and tables already in the new shape
    are left as they are, so the call is safe in any migration. On SQLite the items
    table is rebuilt (Alembic's batch mode), its rows kept.
    """
    if op.get_context().as_sql:
        raise InvalidArgumentError(
            "repoint_items_foreign_key reads the database's constraints: run it online, "
            "not with --sql"
        )
    metadata = _metadata(sessions_table, metadata_table, sql_metadata)
    items = metadata.tables[f"{metadata_table}_items"]
    bind = op.get_bind()
    stale = [
        foreign_key
        for foreign_key in inspect(bind).get_foreign_keys(items.name)
        if foreign_key["referred_table"].lower() == metadata_table.lower()
    ]
    if not stale:
        return
    if not backend_for(bind.dialect).alters_constraints:
        # SQLite cannot alter a constraint: copy the rows into the table as declared now.
        with op.batch_alter_table(items.name, copy_from=items, recreate="always"):
            pass
        return
    (wanted,) = items.foreign_key_constraints
    for foreign_key in stale:
        op.drop_constraint(foreign_key["name"], items.name, type_="foreignkey")
    op.create_foreign_key(
        wanted.name,
        items.name,
        sessions_table,
        ["session_id"],
        ["session_id"],
        ondelete="CASCADE",
    )


def add_expiry(
    op: Any,
    metadata_table: str = "agent_sessions_metadata",
    *,
    rebuild_indexes: bool = True,
) -> None:
    """Add the ``expires_at`` column and its index to a metadata table made before expiry,
    and ``expires_at`` to the end of its two query indexes.

    Rows already there never expire (the column is ``NULL``). Adding a nullable
    column without a default rewrites no row on any of the databases. The new index
    is partial on PostgreSQL and SQLite (rows that never expire stay out of it).
    The query indexes ``idx_<table>_key_hash`` and ``idx_<table>_key_sort`` are
    rebuilt with ``expires_at`` last, so finds keep being answered from the index
    alone; each is dropped and created again (in the migration's transaction on
    PostgreSQL and SQLite; MariaDB and MySQL build it while writes go on, and
    queries scan without it meanwhile). On a large PostgreSQL table, build the new
    indexes first with ``CREATE INDEX CONCURRENTLY`` (definitions in ``sessionmeta ddl
    --dialect postgresql``), or pass ``rebuild_indexes=False`` and rebuild them
    later: until then every query is still right, reading the rows' ``expires_at``.
    Online only: what is there is read from the database and kept when it is
    already right, so the call is safe in any migration, and again.
    """
    if op.get_context().as_sql:
        raise InvalidArgumentError(
            "add_expiry reads the database's columns and indexes: run it online, not with --sql"
        )
    inspector = inspect(op.get_bind())
    columns = {column["name"] for column in inspector.get_columns(metadata_table)}
    if "expires_at" not in columns:
        op.add_column(metadata_table, expires_at_column())
    indexes = {found["name"]: found for found in inspector.get_indexes(metadata_table)}
    expiry = expires_at_index(metadata_table)
    if expiry.name not in indexes:
        op.create_index(
            expiry.name,
            metadata_table,
            ["expires_at"],
            postgresql_where=expiry.dialect_options["postgresql"]["where"],
            sqlite_where=expiry.dialect_options["sqlite"]["where"],
        )
    if not rebuild_indexes:
        return
    for suffix, wanted in (("key_hash", KEY_HASH_COLUMNS), ("key_sort", KEY_SORT_COLUMNS)):
        name = f"idx_{metadata_table}_{suffix}"
        found = indexes.get(name)
        if found is not None and tuple(found["column_names"]) == wanted:
            continue
        if found is not None:
            op.drop_index(name, table_name=metadata_table)
        op.create_index(name, metadata_table, list(wanted))
