"""Read-modify-write without lost updates: versioned reads, conditional writes, add/remove.

A conditional write or an add/remove runs in one transaction that first locks
the session (``Operations.locked``): ``SELECT ... FOR UPDATE`` of the session row
and its value rows on PostgreSQL and MySQL/MariaDB, ``BEGIN IMMEDIATE`` (the
database's write lock) on SQLite. Inside it the current rows are read, checked
(version, scope) and combined, and written through ``Operations.write_rows``.
A scoped view passes its :class:`~sessionmeta.core.scope.Scope`, checked on those
same locked rows: a concurrent hand-over is seen or refused, never undone.
Without ``create`` the lock is taken on the session row only if it exists, so a
write refused for a missing session cannot race a delete into re-creating it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sessionmeta.core.codec import EncodedValue, encode_model
from sessionmeta.core.scope import Scope
from sessionmeta.core.spec import ModelT
from sessionmeta.core.versions import Change, Versioned, collection_kind, combine, version_of
from sessionmeta.errors import ConflictError, SessionNotFoundError
from sessionmeta.io.database import Connection
from sessionmeta.io.operations import Operations, Row

__all__ = [
    "change_items",
    "delete_in_scope",
    "read_versioned",
    "set_if_version",
    "write_existing",
    "write_in_scope",
]


async def read_versioned(
    ops: Operations[ModelT], session_id: str, keys: list[str] | None, scope: Scope | None = None
) -> Versioned[ModelT]:
    """The metadata (``keys`` only, or all) and the session's version, from one statement."""
    rows = await ops.session_rows(session_id)
    if scope is not None:
        scope.require(session_id, rows)
    wanted = [(key, value) for key, value, _ in rows if keys is None or key in keys]
    version = version_of(ops.spec, rows)
    return Versioned(ops.decode(session_id, wanted), version)


def _missing(session_id: str) -> SessionNotFoundError:
    return SessionNotFoundError(
        f"session {session_id!r} does not exist; create=False writes only to an existing "
        "session, and nothing was written",
        session_id=session_id,
    )


def _claim(
    scope: Scope | None, session_id: str, current: list[Row], *, create: bool
) -> list[EncodedValue]:
    """The scope rows a write must add to claim the session (none when it is in scope
    already); refused when the session is another scope's, or free and not ``create``."""
    if scope is None:
        return []
    claim = scope.admit(session_id, current)
    if claim and not create:
        raise SessionNotFoundError(
            f"session {session_id!r} holds no metadata of scope {scope.values!r}; "
            "create=False neither creates nor claims a session, and nothing was written",
            session_id=session_id,
        )
    return claim


def _with_claim(
    scope: Scope | None,
    session_id: str,
    current: list[Row],
    rows: list[EncodedValue],
    *,
    create: bool,
) -> list[EncodedValue]:
    claim = _claim(scope, session_id, current, create=create)
    if not claim:
        return rows
    written = {row.key for row in rows}
    return sorted(rows + [row for row in claim if row.key not in written], key=lambda row: row.key)


async def _write_locked(
    ops: Operations[Any],
    session_id: str,
    check: Callable[[list[Row]], list[EncodedValue]],
    *,
    create: bool,
) -> None:
    """Write what ``check`` makes of the session's locked rows; without ``create``
    :class:`~sessionmeta.SessionNotFoundError` when the session row is missing."""

    async def body(db: Connection, current: list[Row]) -> bool:
        await ops.write_rows(db, session_id, check(current))
        return True

    if await ops.locked(session_id, body, create=create) is None:
        raise _missing(session_id)


async def write_existing(ops: Operations[Any], session_id: str, rows: list[EncodedValue]) -> None:
    """Write ``rows`` to a session that exists, else SessionNotFoundError (nothing created)."""
    await _write_locked(ops, session_id, lambda current: rows, create=False)


async def write_in_scope(
    ops: Operations[Any],
    session_id: str,
    rows: list[EncodedValue],
    scope: Scope,
    *,
    create: bool = True,
) -> None:
    """Write ``rows`` if the session is in ``scope``, claiming it when it has no metadata
    (with ``create``; without, a session not in the scope yet is SessionNotFoundError)."""
    await _write_locked(
        ops,
        session_id,
        lambda current: _with_claim(scope, session_id, current, rows, create=create),
        create=create,
    )


async def set_if_version(
    ops: Operations[Any],
    session_id: str,
    rows: list[EncodedValue],
    expected_version: str,
    scope: Scope | None = None,
    *,
    create: bool = True,
) -> None:
    """Write ``rows`` if the session is still at ``expected_version``, else ConflictError.

    The scope is checked first: another tenant's session is refused as such, whatever
    its version.
    """

    def check(current: list[Row]) -> list[EncodedValue]:
        claimed = _with_claim(scope, session_id, current, rows, create=create)
        version = version_of(ops.spec, current)
        if version != expected_version:
            raise ConflictError(
                f"session {session_id!r} changed after version {expected_version!r} was read "
                f"(it is now at {version!r}); nothing was written: read it again and retry",
                session_id=session_id,
            )
        return claimed

    await _write_locked(ops, session_id, check, create=create)


async def delete_in_scope(
    ops: Operations[Any], session_id: str, keys: list[str] | None, scope: Scope
) -> None:
    """Delete ``keys`` (or every key) of a session in ``scope``; a free session has none."""

    async def body(db: Connection, current: list[Row]) -> None:
        if scope.require(session_id, current) == "in":
            await ops.delete_rows(db, session_id, keys)

    await ops.locked(session_id, body, create=False)


async def change_items(
    ops: Operations[Any],
    session_id: str,
    key: str,
    items: tuple[Any, ...],
    change: Change,
    scope: Scope | None = None,
    *,
    create: bool = True,
) -> None:
    """Add ``items`` to, or remove them from, the list or set stored under ``key``, atomically.

    The items are validated as the field's type before any I/O; the combined value
    again before it is written. Adding creates a missing session (and claims a free
    one for ``scope``) only with ``create``; removing never creates one.
    """
    spec = ops.spec
    field = spec.field(key, session_id=session_id)
    kind = collection_kind(spec, field.key, session_id)
    if scope is not None:
        scope.check_change(session_id, field.key, "changing")
    checked = getattr(
        spec.validate_values({field.key: list(items)}, session_id=session_id), field.name
    )
    if not items and create:
        return
    creates = create and change == "add"

    async def body(db: Connection, current_rows: list[Row]) -> bool:
        claim = _claim(scope, session_id, current_rows, create=creates or change == "remove")
        if not items:
            return True  # create=False with nothing to add: only the session's existence
        stored = [value for stored_key, value, _ in current_rows if stored_key == field.key]
        current = (
            getattr(ops.decode(session_id, [(field.key, stored[0])]), field.name)
            if stored
            else None
        )
        combined = combine(kind, current, checked, change)
        rows = claim
        if combined is not None:
            changed = encode_model(
                spec, spec.validate_values({field.key: combined}, session_id=session_id)
            )
            rows = sorted(changed + claim, key=lambda row: row.key)
        await ops.write_rows(db, session_id, rows)
        return True

    found = await ops.locked(session_id, body, create=creates)
    if found is None and change == "add" and not create:
        raise _missing(session_id)
