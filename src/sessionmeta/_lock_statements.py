"""The statements of locked read-modify-write transactions, compiled once per dialect.

They only build SQL; ``_atomic`` runs them. ``FOR UPDATE`` locks the session row
and its value rows on PostgreSQL and MySQL/MariaDB; SQLite has no row locks and
renders none: there the transaction itself is taken with ``BEGIN IMMEDIATE``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import bindparam, select
from sqlalchemy.sql import Executable

from ._statements import CompiledStatement, Statements, compile_statement

__all__ = ["LockStatements", "lock_statements"]


@dataclass
class LockStatements:
    """Locking reads and the plain versioned read, for one store's tables and dialect."""

    statements: Statements
    _cache: dict[str, CompiledStatement] = field(default_factory=dict)

    def _compiled(self, name: str, statement: Executable) -> CompiledStatement:
        compiled = self._cache.get(name)
        if compiled is None:
            compiled = self._cache[name] = compile_statement(statement, self.statements.dialect)
        return compiled

    def lock_session(self) -> CompiledStatement:
        """Lock the session row: every locked transaction on the session queues here."""
        sessions = self.statements.tables.sessions
        return self._compiled(
            "lock_session",
            select(sessions.c.session_id)
            .where(sessions.c.session_id == bindparam("session_id"))
            .with_for_update(),
        )

    def lock_hashes(self) -> CompiledStatement:
        """Each key's value hash, with the value rows locked against plain writes."""
        values = self.statements.tables.values
        return self._compiled(
            "lock_hashes",
            select(values.c.key, values.c.value_hash)
            .where(values.c.session_id == bindparam("session_id"))
            .with_for_update(),
        )

    def lock_value(self) -> CompiledStatement:
        """One key's stored value, its row locked."""
        values = self.statements.tables.values
        return self._compiled(
            "lock_value",
            select(values.c.value)
            .where(values.c.session_id == bindparam("session_id"), values.c.key == bindparam("key"))
            .with_for_update(),
        )

    def read_versioned(self) -> CompiledStatement:
        """Every row of the session with its hash, in one statement (one snapshot)."""
        values = self.statements.tables.values
        return self._compiled(
            "read_versioned",
            select(values.c.key, values.c.value, values.c.value_hash).where(
                values.c.session_id == bindparam("session_id")
            ),
        )


def lock_statements(statements: Statements) -> LockStatements:
    """The locking statements that go with ``statements``."""
    return LockStatements(statements)
