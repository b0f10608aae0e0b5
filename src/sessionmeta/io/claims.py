"""Unique fields kept by the database: claims written in the same transaction as values.

Every write or delete that changes a unique key (or the ``per`` key it is unique
within) ends, in its own transaction, by dropping the sessions' claims on those
keys and claiming again what the value table now holds (``Statements.claim_values``).
The claims table's primary key refuses a value a second session holds: the
database decides, in the writing transaction, so two writers of one value never
both succeed. The refusal rolls the whole call back; :meth:`ClaimKeeper.explain`
then reads who holds the value, for the error. A claim whose value row went by
other means (an expiry sweep, a hand-made delete) holds nothing: it is dropped,
and the write runs again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

from sessionmeta.core.claims import (
    NO_SCOPE,
    NULL_HASH,
    Claim,
    affected_keys,
    claims_of,
    shown_value,
)
from sessionmeta.core.codec import EncodedValue
from sessionmeta.core.spec import ModelSpec
from sessionmeta.errors import ConcurrencyError, UniqueValueError
from sessionmeta.io.database import Connection, Database
from sessionmeta.sql.statements import BULK_ROWS, Statements

__all__ = ["ClaimKeeper", "ClaimTaken"]

T = TypeVar("T")
# How many times a write runs again after a refusal whose holder had gone by the time
# it was looked up (its claim stale, or released meanwhile).
ATTEMPTS = 4


class ClaimTaken(Exception):
    """A claim the write made was refused: another session holds the value.

    Internal: raised inside the unit of work (so it rolls back) and turned into
    :class:`~sessionmeta.UniqueValueError` by :meth:`ClaimKeeper.guarded`. ``writes``
    holds, by session, the rows written and the keys deleted (``None``: every key).
    """

    def __init__(self) -> None:
        super().__init__("a unique value is held by another session")
        self.writes: dict[str, tuple[list[EncodedValue], list[str] | None]] = {}


class ClaimKeeper:
    """The claims of one model's unique fields, on one database handle."""

    def __init__(self, spec: ModelSpec[Any], statements: Statements, db: Database) -> None:
        self.spec = spec
        self.unique = spec.unique
        self.statements = statements
        self.db = db

    def affected(self, keys: Iterable[str] | None) -> list[str]:
        """The unique keys whose claims a change of ``keys`` (``None``: all) changes."""
        if not self.unique:
            return []
        return affected_keys(self.unique, None if keys is None else set(keys))

    async def refresh(
        self, db: Connection, ids: list[str], keys: list[str], *, fresh: bool = False
    ) -> None:
        """Claim again what sessions ``ids`` store under the unique ``keys``, after the
        write or delete that changed them (same transaction). ``fresh``: the sessions
        are new, so they hold nothing to drop. :class:`ClaimTaken` when refused."""
        if not keys or not ids:
            return
        statements = self.statements
        spelling = statements.spelling
        for start in range(0, len(ids), BULK_ROWS):
            chunk = _padded(ids[start : start + BULK_ROWS], statements.backend.arrays)
            id_params = spelling.id_params(chunk)
            if not fresh:
                release = statements.release_claims(len(chunk), len(keys))
                await db.execute(release, {**id_params, **spelling.key_params(keys)})
            for key in keys:
                per = self.unique[key].per
                claim = statements.claim_values(len(chunk), scoped=per is not None)
                params = {**id_params, "key": key, "null_hash": NULL_HASH}
                if per is not None:
                    params["scope_key"] = per
                try:
                    await db.execute(claim, params)
                except Exception as exc:
                    if self.db.is_driver_error(exc) and self.db.error_kind(exc) == "unique":
                        raise ClaimTaken() from exc
                    raise

    async def guarded(self, run: Callable[[], Awaitable[T]]) -> T:
        """``run()`` (a whole unit of work), with a refused claim turned into
        :class:`~sessionmeta.UniqueValueError`; run again when the holder had gone."""
        for _ in range(ATTEMPTS):
            try:
                return await run()
            except ClaimTaken as taken:
                error = await self.explain(taken)
                if error is not None:
                    raise error from taken.__cause__
        raise ConcurrencyError(
            "a unique value was refused and then released again, every attempt; nothing was written"
        )

    async def explain(self, taken: ClaimTaken) -> UniqueValueError | None:
        """The error for a refused claim, read after the rollback; ``None`` when nobody
        holds the value any more (a stale claim is dropped here): run the write again."""
        writes = taken.writes
        if self.db.in_caller_transaction:
            # The caller's transaction failed with the statement: nothing can be read.
            return self._unknown_holder(writes)
        intended: list[tuple[str, Claim, dict[str, str]]] = []
        for session_id, (rows, deleted) in writes.items():
            after = await self._after(session_id, rows, deleted)
            hashes = {key: value_hash for key, (value_hash, _) in after.items()}
            touched = set(self.affected({row.key for row in rows} | set(deleted or ())))
            if deleted is None:
                touched = set(self.unique)
            for claim in claims_of(self.unique, hashes):
                if claim.key in touched:
                    texts = {key: text for key, (_, text) in after.items()}
                    intended.append((session_id, claim, texts))
        first: dict[Claim, str] = {}
        for session_id, claim, shown in intended:
            other = first.setdefault(claim, session_id)
            if other != session_id:
                return self._error(claim, shown, session_id, other)
        for session_id, claim, shown in intended:
            found = await self.db.fetch(self.statements.claim_holder(), _claim_params(claim))
            for holder, backed in found:
                if holder == session_id:
                    continue
                if backed is not None:
                    return self._error(claim, shown, session_id, holder)
                params = {**_claim_params(claim), "holder": holder}
                await self.db.execute(self.statements.release_stale_claim(), params)
        # Nobody holds the value now (a stale claim is gone): the write runs again.
        return None

    async def _after(
        self, session_id: str, rows: list[EncodedValue], deleted: list[str] | None
    ) -> dict[str, tuple[str, str]]:
        """``(value_hash, value text)`` by key, as the session would store them after
        the write: its stored rows (when the write leaves some unique key or scope key
        to them), less the deleted keys, with the written rows."""
        written = {row.key: (row.value_hash, row.value) for row in rows}
        needed = set(self.unique) | {u.per for u in self.unique.values() if u.per is not None}
        after: dict[str, tuple[str, str]] = {}
        if deleted is not None and not needed <= set(written):
            stored = await self.db.fetch(
                self.statements.session_rows(), {"session_id": session_id}, session_id=session_id
            )
            after = {key: (value_hash, value) for key, value, value_hash in stored}
            for key in deleted:
                after.pop(key, None)
        after.update(written)
        return after

    def _error(
        self, claim: Claim, texts: Mapping[str, str], session_id: str, holder: str | None
    ) -> UniqueValueError:
        per = self.unique[claim.key].per
        scope = None
        if per is not None:
            scope = (
                f"{per} = {shown_value(texts[per])!r}"
                if claim.scope_hash != NO_SCOPE and per in texts
                else f"no {per}"
            )
        return UniqueValueError(
            claim.key,
            shown_value(texts.get(claim.key, "null")),
            session_id=session_id,
            holder=holder,
            scope=scope,
        )

    def _unknown_holder(
        self, writes: Mapping[str, tuple[list[EncodedValue], list[str] | None]]
    ) -> UniqueValueError:
        for session_id, (rows, _) in writes.items():
            for row in rows:
                if row.key in self.unique and row.value_hash != NULL_HASH:
                    texts = {row.key: row.value for row in rows}
                    hashes = {row.key: row.value_hash for row in rows}
                    claims = [c for c in claims_of(self.unique, hashes) if c.key == row.key]
                    claim = claims[0] if claims else Claim(row.key, NO_SCOPE, row.value_hash)
                    return self._error(claim, texts, session_id, None)
        key = next(iter(self.unique))
        return UniqueValueError(key, None, session_id=next(iter(writes), None), holder=None)


def _claim_params(claim: Claim) -> dict[str, Any]:
    return {"key": claim.key, "scope_hash": claim.scope_hash, "value_hash": claim.value_hash}


def _padded(ids: list[str], arrays: bool) -> list[str]:
    """``ids`` padded to a power of two by repeating the last (a few statement shapes
    serve any count), unless the backend binds one array."""
    if arrays:
        return ids
    count = 1
    while count < len(ids):
        count *= 2
    return ids + [ids[-1]] * (count - len(ids))
