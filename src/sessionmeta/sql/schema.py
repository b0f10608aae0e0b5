"""The SQL tables: the Agents SDK's sessions table and the metadata table beside it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    TIMESTAMP,
    Column,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.types import TypeEngine

from sessionmeta.core.limits import MAX_KEY_LENGTH, SORT_KEY_LENGTH
from sessionmeta.errors import TableNameError

__all__ = [
    "ColumnName",
    "Tables",
    "add_messages_table",
    "adapt_to_parents",
    "build_tables",
    "check_table_name",
    "KEY_HASH_COLUMNS",
    "KEY_SORT_COLUMNS",
    "expires_at_column",
    "expires_at_index",
    "referenced_columns",
]

ColumnName = tuple[str, str]  # (table, column)

# The value table's query indexes (see build_tables).
KEY_HASH_COLUMNS = ("key", "value_hash", "session_id", "expires_at")
KEY_SORT_COLUMNS = ("key", "sort_key", "session_id", "expires_at")

# MySQL cannot index an unbounded string, and compares case- and accent-insensitively
# unless told otherwise: give it bounded, binary-collated columns.
MYSQL_SESSION_ID_LENGTH = 255
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,47}")


def check_table_name(name: str) -> str:
    """Return ``name`` if it is a plain SQL identifier, else raise :class:`TableNameError`."""
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise TableNameError(
            f"table name {name!r} is not a plain identifier "
            "(a letter or underscore, then letters, digits or underscores, at most 48)"
        )
    return name


def _mysql_variant(generic: TypeEngine[str], mysql_type: TypeEngine[str]) -> TypeEngine[str]:
    return generic.with_variant(mysql_type, "mysql", "mariadb")


def _session_id_type() -> TypeEngine[str]:
    return _mysql_variant(
        String(), mysql.VARCHAR(MYSQL_SESSION_ID_LENGTH, charset="utf8mb4", collation="utf8mb4_bin")
    )


def _key_type() -> TypeEngine[str]:
    return _mysql_variant(
        String(MAX_KEY_LENGTH),
        mysql.VARCHAR(MAX_KEY_LENGTH, charset="utf8mb4", collation="utf8mb4_bin"),
    )


def _timestamp(name: str) -> Column[object]:
    return Column(
        name,
        TIMESTAMP(timezone=False),
        server_default=text("CURRENT_TIMESTAMP"),
        nullable=False,
    )


@dataclass(frozen=True)
class Tables:
    """The SQLAlchemy description of the tables sessionmeta reads and writes."""

    metadata: MetaData
    sessions: Table
    values: Table
    # One row per distinct element of a list or set value: serves ``contains``.
    items: Table
    # One row per stored value of a unique field: its primary key refuses a second holder.
    claims: Table
    # Microseconds added to the database's clock in every expiry comparison and ttl:
    # 0 but in tests (``MetadataStore(clock_offset=...)``).
    clock_offset: int = 0


def build_tables(sessions_table: str, metadata_table: str, *, clock_offset: int = 0) -> Tables:
    """Describe the sessions table as the Agents SDK creates it, and the metadata table."""
    check_table_name(sessions_table)
    check_table_name(metadata_table)
    metadata = MetaData()
    sessions = Table(
        sessions_table,
        metadata,
        Column("session_id", _session_id_type(), primary_key=True),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )
    values = Table(
        metadata_table,
        metadata,
        Column("session_id", _session_id_type(), nullable=False),
        Column("key", _key_type(), nullable=False),
        Column(
            "value",
            _mysql_variant(Text(), mysql.LONGTEXT(charset="utf8mb4", collation="utf8mb4_bin")),
            nullable=False,
        ),
        # Equality is served by this digest, so values of any size stay indexable.
        Column(
            "value_hash",
            _mysql_variant(String(32), mysql.VARCHAR(32, charset="ascii", collation="ascii_bin")),
            nullable=False,
        ),
        # Byte order on every backend, so ranges and ordering agree across databases.
        Column(
            "sort_key",
            _mysql_variant(
                String(SORT_KEY_LENGTH).with_variant(
                    String(SORT_KEY_LENGTH, collation="C"), "postgresql"
                ),
                mysql.VARCHAR(SORT_KEY_LENGTH, charset="utf8mb4", collation="utf8mb4_bin"),
            ),
            nullable=True,
        ),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        expires_at_column(),
        PrimaryKeyConstraint("session_id", "key", name=f"pk_{metadata_table}"),
        ForeignKeyConstraint(
            ["session_id"],
            [sessions.c.session_id],
            ondelete="CASCADE",
            name=f"fk_{metadata_table}_session",
        ),
        # expires_at last: every query tests it, and finds stay answered from the index
        # alone (PostgreSQL's index-only scans, InnoDB's and SQLite's covering indexes).
        Index(f"idx_{metadata_table}_key_hash", *KEY_HASH_COLUMNS),
        Index(f"idx_{metadata_table}_key_sort", *KEY_SORT_COLUMNS),
        expires_at_index(metadata_table),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
    )
    items = _items_table(metadata, metadata_table, sessions)
    claims = _claims_table(metadata, metadata_table, sessions)
    return Tables(metadata, sessions, values, items, claims, clock_offset)


def expires_at_column() -> Column[object]:
    """When a value row expires (``NULL``: never), on the database's clock (see
    :mod:`sessionmeta.sql.expiry` for each backend's type)."""
    return Column(
        "expires_at",
        TIMESTAMP(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb"),
        nullable=True,
    )


def expires_at_index(metadata_table: str) -> Index:
    """What ``sweep`` finds expired rows by. Partial where the database can (rows without
    an expiry, most of them, cost writes nothing); MySQL/MariaDB index every row."""
    return Index(
        f"idx_{metadata_table}_expires",
        "expires_at",
        postgresql_where=text("expires_at IS NOT NULL"),
        sqlite_where=text("expires_at IS NOT NULL"),
    )


def _hash_type() -> TypeEngine[str]:
    return _mysql_variant(String(32), mysql.VARCHAR(32, charset="ascii", collation="ascii_bin"))


def _items_table(metadata: MetaData, metadata_table: str, sessions: Table) -> Table:
    """The elements of list and set values, so ``contains`` is an index lookup everywhere.

    MariaDB has no multi-valued JSON index and SQLite no array index, so each
    element's hash gets a row. ``value_hash`` names the value the element came
    from: a query joins it to the current value, so an element left behind by a
    lost race between two writers of the same key can never match.

    The foreign key goes to the session, not to the value row: its check is then a
    lookup on the sessions table's only index. Checked against the value row, a
    plan PostgreSQL caches while the table is empty can take one of the value
    table's ``key`` indexes instead of its primary key, and every write then walks
    one index entry per session. The statements that delete value rows delete
    their items too.
    """
    name = f"{metadata_table}_items"
    return Table(
        name,
        metadata,
        Column("session_id", _session_id_type(), nullable=False),
        Column("key", _key_type(), nullable=False),
        Column("value_hash", _hash_type(), nullable=False),
        Column("item_hash", _hash_type(), nullable=False),
        PrimaryKeyConstraint("session_id", "key", "value_hash", "item_hash", name=f"pk_{name}"),
        ForeignKeyConstraint(
            ["session_id"],
            [sessions.c.session_id],
            ondelete="CASCADE",
            name=f"fk_{name}_session",
        ),
        # value_hash too: the join to the current value is then answered from the index.
        Index(f"ix_{name}", "key", "item_hash", "session_id", "value_hash"),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
    )


def _claims_table(metadata: MetaData, metadata_table: str, sessions: Table) -> Table:
    """The values of unique fields, each held by one session (``core.claims``).

    The primary key ``(key, scope_hash, value_hash)`` is the uniqueness itself, so the
    database refuses a second holder in the writing transaction, on every backend (a
    unique index on the value table cannot say "per scope" on MariaDB, nor skip other
    keys). ``scope_hash`` is the value hash of the field's ``per`` key, or ``''``.
    ``(session_id, key)`` is unique too: a session holds one value per key, found by
    that index when the session rewrites or deletes it. The foreign key goes to the
    session, as the items table's does, and takes the claims with the session.
    """
    name = f"{metadata_table}_unique"
    return Table(
        name,
        metadata,
        Column("key", _key_type(), nullable=False),
        Column("scope_hash", _hash_type(), nullable=False),
        Column("value_hash", _hash_type(), nullable=False),
        Column("session_id", _session_id_type(), nullable=False),
        PrimaryKeyConstraint("key", "scope_hash", "value_hash", name=f"pk_{name}"),
        ForeignKeyConstraint(
            ["session_id"],
            [sessions.c.session_id],
            ondelete="CASCADE",
            name=f"fk_{name}_session",
        ),
        Index(f"ux_{name}_session", "session_id", "key", unique=True),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
    )


def add_messages_table(tables: Tables, messages_table: str) -> Table:
    """Add the Agents SDK's messages table to ``tables``' metadata and return it.

    Column names, types and the index are the SDK's; on MySQL/MariaDB the
    session id is bounded and binary-collated like the sessions table's (the
    SDK's unbounded string cannot be indexed there), and the message text is
    LONGTEXT, since TEXT refuses a message over 64 KiB such as a long tool output.
    """
    check_table_name(messages_table)
    return Table(
        messages_table,
        tables.metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column(
            "session_id",
            _session_id_type(),
            ForeignKey(tables.sessions.c.session_id, ondelete="CASCADE"),
            nullable=False,
        ),
        Column(
            "message_data",
            _mysql_variant(Text(), mysql.LONGTEXT(charset="utf8mb4")),
            nullable=False,
        ),
        _timestamp("created_at"),
        Index(f"idx_{messages_table}_session_time", "session_id", "created_at"),
        sqlite_autoincrement=True,
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )


def referenced_columns(metadata: MetaData) -> list[ColumnName]:
    """The (table, column) pairs that foreign keys in ``metadata`` refer to, sorted."""
    return sorted(
        {
            (element.column.table.name, element.column.name)
            for table in metadata.tables.values()
            for constraint in table.foreign_key_constraints
            for element in constraint.elements
        }
    )


def adapt_to_parents(metadata: MetaData, parents: Mapping[ColumnName, TypeEngine[Any]]) -> MetaData:
    """A copy of ``metadata`` whose foreign keys match the parent columns' actual types.

    ``parents`` gives the type of columns as they exist in the database (tables that
    are there already). Those columns take that type in the copy, and every
    foreign-key column referring to one takes it too, and so on down: a column that
    refers to a table created beside it follows that table's adapted column. InnoDB
    refuses a foreign key between string columns of another charset or collation,
    and autogenerate must not see the existing parent differ. ``metadata``'s own
    tables are left untouched.
    """
    copy = MetaData(naming_convention=metadata.naming_convention)
    for table in metadata.tables.values():
        table.to_metadata(copy)
    adapted: set[ColumnName] = set()
    # Parents before children, so a child follows a parent already adapted.
    for table in copy.sorted_tables:
        for column in table.columns:
            actual = parents.get((table.name, column.name))
            if actual is not None:
                column.type = actual
                adapted.add((table.name, column.name))
        for constraint in table.foreign_key_constraints:
            for element in constraint.elements:
                parent = element.column
                if (parent.table.name, parent.name) in adapted:
                    element.parent.type = parent.type
                    adapted.add((table.name, element.parent.name))
    return copy
