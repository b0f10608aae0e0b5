"""The statements that keep the claims of unique fields (``core.claims``): build only.

:class:`~sessionmeta.sql.statements.Statements` compiles and caches them (its
``release_claims``, ``claim_values``, ``claim_holder``, ``release_stale_claim``);
``io.claims`` runs them in the transaction of the write or delete that changed a
unique key.
"""

from __future__ import annotations

from dataclasses import dataclass

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

from sessionmeta.sql.dialects import Spelling
from sessionmeta.sql.expiry import live

__all__ = ["ClaimSQL"]

# The scope of a claim without one (``core.claims.NO_SCOPE``; not imported: ``sql/``
# takes nothing from ``core/`` that would import Pydantic, see docs/architecture.md).
NO_SCOPE = ""


@dataclass(frozen=True)
class ClaimSQL:
    """The claims' statements for one backend's spelling and tables."""

    spelling: Spelling

    def release_claims(self, id_count: int, key_count: int) -> Executable:
        """Drop what ``id_count`` sessions (``id0``... or ``ids``) claim under ``key_count``
        keys (``key0``... or ``keys``): before they claim their new values."""
        claims = self.spelling.tables.claims
        return delete(claims).where(
            self.spelling.id_in(claims.c.session_id, id_count),
            self.spelling.key_in(key_count, claims.c.key),
        )

    def claim_values(self, id_count: int, *, scoped: bool) -> Executable:
        """Claim the stored value of one unique key (``key``) of ``id_count`` sessions, read
        from the value table in the writing transaction, so a statement's rows agree with
        each other (a value moved from one session to another in one call is no conflict).

        ``scoped``: the claim's scope is the value hash of the session's ``scope_key``
        (``''`` when it has none); else ``''``. An explicit ``None`` claims nothing.
        """
        tables = self.spelling.tables
        values, claims = tables.values, tables.claims
        value = values.alias("claimed")
        conditions = [
            self.spelling.id_in(value.c.session_id, id_count),
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

    def claim_holder(self) -> Executable:
        """The session holding a claim (``key``, ``scope_hash``, ``value_hash``), and whether
        its value row still holds the value (a claim whose row was deleted by other
        means, or whose value has expired, holds nothing)."""
        values, claims = self.spelling.tables.values, self.spelling.tables.claims
        backing = values.alias("backing")
        joined = claims.outerjoin(
            backing,
            and_(
                backing.c.session_id == claims.c.session_id,
                backing.c.key == claims.c.key,
                backing.c.value_hash == claims.c.value_hash,
                live(backing, self.spelling.now()),
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

    def release_stale_claim(self) -> Executable:
        """Drop one claim (``key``, ``scope_hash``, ``value_hash`` held by ``holder``) if its
        session no longer stores the value: the value row went without its claim, or the
        value expired (it reads as missing, so it holds nothing)."""
        values, claims = self.spelling.tables.values, self.spelling.tables.claims
        backing = (
            select(values.c.session_id)
            .where(
                values.c.session_id == claims.c.session_id,
                values.c.key == claims.c.key,
                values.c.value_hash == claims.c.value_hash,
                live(values, self.spelling.now()),
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
