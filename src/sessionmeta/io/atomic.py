"""Read-modify-write without lost updates: versioned reads, conditional writes, add/remove.

A conditional write or an add/remove runs in one transaction that first locks
the session (``Operations.locked``): ``SELECT ... FOR UPDATE`` of the session row
and its value rows on PostgreSQL and MySQL/MariaDB, ``BEGIN IMMEDIATE`` (the
database's write lock) on SQLite. Inside it the current rows are read, checked
(version, scope) and combined, and written through ``Operations.write_rows``.
A scoped view passes its :class:`~sessionmeta.core.scope.Scope`, checked on those
same locked rows: a concurrent hand-over is seen or refused, never undone.
"""

from __future__ import annotations

from typing import Any

from sessionmeta.core.codec import EncodedValue, encode_model
from sessionmeta.core.scope import Scope
from sessionmeta.core.spec import ModelT
from sessionmeta.core.versions import Change, Versioned, collection_kind, combine, version_of
from sessionmeta.errors import ConflictError
from sessionmeta.io.database import Connection
from sessionmeta.io.operations import Operations, Row

__all__ = ["change_items", "read_versioned", "set_if_version", "write_in_scope"]


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


def _with_claim(
    scope: Scope | None, session_id: str, current: list[Row], rows: list[EncodedValue]
) -> list[EncodedValue]:
    if scope is None:
        return rows
    written = {row.key for row in rows}
    claim = [row for row in scope.admit(session_id, current) if row.key not in written]
    return sorted(rows + claim, key=lambda row: row.key)


async def write_in_scope(
    ops: Operations[Any], session_id: str, rows: list[EncodedValue], scope: Scope
) -> None:
    """Write ``rows`` if the session is in ``scope``, claiming it when it has no metadata."""

    async def body(db: Connection, current: list[Row]) -> None:
        await ops.write_rows(db, session_id, _with_claim(scope, session_id, current, rows))

    await ops.locked(session_id, body, create=True)


async def set_if_version(
    ops: Operations[Any],
    session_id: str,
    rows: list[EncodedValue],
    expected_version: str,
    scope: Scope | None = None,
) -> None:
    """Write ``rows`` if the session is still at ``expected_version``, else ConflictError."""

    async def body(db: Connection, current: list[Row]) -> None:
        version = version_of(ops.spec, current)
        if version != expected_version:
            raise ConflictError(
                f"session {session_id!r} changed after version {expected_version!r} was read "
                f"(it is now at {version!r}); nothing was written: read it again and retry"
            )
        await ops.write_rows(db, session_id, _with_claim(scope, session_id, current, rows))

    await ops.locked(session_id, body, create=True)


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
) -> None:
    """Add ``items`` to, or remove them from, the list or set stored under ``key``, atomically.

    The items are validated as the field's type before any I/O; the combined value
    again before it is written.
    """
    spec = ops.spec
    field = spec.field(key, session_id=session_id)
    kind = collection_kind(spec, field.key, session_id)
    if scope is not None:
        scope.check_change(session_id, field.key, "changing")
    checked = getattr(
        spec.validate_values({field.key: list(items)}, session_id=session_id), field.name
    )
    if not items:
        return

    async def body(db: Connection, current_rows: list[Row]) -> None:
        claim = [] if scope is None else scope.admit(session_id, current_rows)
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

    await ops.locked(session_id, body, create=change == "add")
