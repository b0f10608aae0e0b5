"""The statements that keep the claims of unique fields (``core.claims``): build only.

Mixed into :class:`~sessionmeta.sql.statements.Statements`; ``io.claims`` runs them
in the transaction of the write or delete that changed a unique key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy import (
    ColumnElement,
    Executable,
    FromClause,
    String,
    and_,
    bindparam,
    case,
    delete,
    exists,
    literal,
    select,
)

if TYPE_CHECKING:
    from sessionmeta.sql.dialects import Backend, Spelling
    from sessionmeta.sql.schema import Tables
    from sessionmeta.sql.statements import CompiledStatement

__all__ = ["ClaimStatements"]

# The scope of a claim without one (``core.claims.NO_SCOPE``; not imported: ``sql/``
# takes nothing from ``core/`` that would import Pydantic, see docs/architecture.md).
NO_SCOPE = ""


class ClaimStatements:
    """The claims' statements, compiled and cached as the others are."""

    if TYPE_CHECKING:
        backend: Backend
        spelling: Spelling

        @property
        def tables(self) -> Tables: ...

        def compiled(
            self, name: str, count: int, build: Callable[[], Executable]
        ) -> CompiledStatement: ...

    def release_claims(self, id_count: int, key_count: int) -> CompiledStatement:
        """Drop what ``id_count`` sessions (``id0``... or ``ids``) claim under ``key_count``
        keys (``key0``... or ``keys``): before they claim their new values."""
        claims = self.tables.claims
        spelling = self.spelling
        id_shape = 0 if self.backend.arrays else id_count
        key_shape = 0 if spelling.keys_as_array else key_count
        return self.compiled(
            f"release_claims:{key_shape}",
            id_shape,
            lambda: delete(claims).where(
                spelling.id_in(claims.c.session_id, id_count),
                spelling.key_in(key_count, claims.c.key),
            ),
        )

    def claim_values(self, id_count: int, *, scoped: bool) -> CompiledStatement:
        """Claim the stored value of one unique key (``key``) of ``id_count`` sessions, read
        from the value table in the writing transaction, so a statement's rows agree with
        each other (a value moved from one session to another in one call is no conflict).

        ``scoped``: the claim's scope is the value hash of the session's ``scope_key``
        (``''`` when it has none); else ``''``. An explicit ``None`` claims nothing.
        """
        values, claims = self.tables.values, self.tables.claims
        spelling = self.spelling

        def build() -> Executable:
            value = values.alias("claimed")
            conditions = [
                spelling.id_in(value.c.session_id, id_count),
                value.c.key == bindparam("key"),
                value.c.value_hash != bindparam("null_hash"),
            ]
            source: FromClause = value
            scope: ColumnElement[str] = literal(NO_SCOPE, String())
            if scoped:
                per = values.alias("scope_value")
                source = value.outerjoin(
                    per,
                    and_(
                        per.c.session_id == value.c.session_id,
                        per.c.key == bindparam("scope_key"),
                    ),
                )
                scope = case(
                    (per.c.value_hash.is_(None), scope),
                    (per.c.value_hash == bindparam("null_hash"), scope),
                    else_=per.c.value_hash,
                )
            rows = select(value.c.key, scope, value.c.value_hash, value.c.session_id)
            return claims.insert().from_select(
                ["key", "scope_hash", "value_hash", "session_id"],
                rows.select_from(source).where(*conditions),
            )

        shape = 0 if self.backend.arrays else id_count
        return self.compiled("claim_values:scoped" if scoped else "claim_values", shape, build)

    def claim_holder(self) -> CompiledStatement:
        """The session holding a claim (``key``, ``scope_hash``, ``value_hash``), and whether
        its value row still holds the value (a claim whose row was deleted by other
        means, such as an expiry sweep, holds nothing)."""
        values, claims = self.tables.values, self.tables.claims

        def build() -> Executable:
            backing = values.alias("backing")
            joined = claims.outerjoin(
                backing,
                and_(
                    backing.c.session_id == claims.c.session_id,
                    backing.c.key == claims.c.key,
                    backing.c.value_hash == claims.c.value_hash,
                ),
            )
            return (
                select(claims.c.session_id, backing.c.session_id)
                .select_from(joined)
                .where(
                    claims.c.key == bindparam("key"),
                    claims.c.scope_hash == bindparam("scope_hash"),
                    claims.c.value_hash == bindparam("value_hash"),
                )
            )

        return self.compiled("claim_holder", 0, build)

    def release_stale_claim(self) -> CompiledStatement:
        """Drop one claim (``key``, ``scope_hash``, ``value_hash`` held by ``holder``) if its
        session no longer stores the value: the value row went without its claim."""
        values, claims = self.tables.values, self.tables.claims

        def build() -> Executable:
            backing = (
                select(values.c.session_id)
                .where(
                    values.c.session_id == claims.c.session_id,
                    values.c.key == claims.c.key,
                    values.c.value_hash == claims.c.value_hash,
                )
                .correlate(claims)
            )
            return delete(claims).where(
                claims.c.key == bindparam("key"),
                claims.c.scope_hash == bindparam("scope_hash"),
                claims.c.value_hash == bindparam("value_hash"),
                claims.c.session_id == bindparam("holder"),
                ~exists(backing),
            )

        return self.compiled("release_stale_claim", 0, build)
