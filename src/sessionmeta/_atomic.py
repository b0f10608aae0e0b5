"""Read-modify-write without lost updates: versioned reads, conditional writes, add/remove.

A conditional write or an add/remove runs in one transaction that first locks
the session: ``SELECT ... FOR UPDATE`` of the session row and its value rows on
PostgreSQL and MySQL/MariaDB, ``BEGIN IMMEDIATE`` (the database's write lock) on
SQLite. Inside it the current state is read, checked or combined, and written
through the store's one write path, ``MetadataStore._write_rows``.

A version is a digest of the session's stored values for the keys the model
declares. It changes whenever one of them is written with a different value
or deleted, so a conditional write refuses to overwrite anything the caller has
not seen; a change that was undone before the write (A to B and back to A) leaves
the version as it was, and then the caller's read is not stale.
"""

from __future__ import annotations

import hashlib
import types
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Literal

from ._codec import EncodedValue, encode_model
from ._driver import Driver
from ._model import ModelSpec, ModelT
from ._retry import retrying
from .errors import ConflictError

if TYPE_CHECKING:
    from ._store import MetadataStore

__all__ = ["Versioned", "change_items", "read_versioned", "set_if_version", "version_of"]

Change = Literal["add", "remove"]


@dataclass(frozen=True)
class Versioned(Generic[ModelT]):
    """Metadata as read, with the version to pass to ``set_metadata(expected_version=...)``."""

    metadata: ModelT
    version: str


def version_of(spec: ModelSpec[Any], rows: Iterable[Sequence[Any]]) -> str:
    """The version of a session whose stored ``(key, value_hash)`` rows are ``rows``."""
    digest = hashlib.sha256()
    # Keys hold no NUL (ModelSpec refuses them), so NUL separates unambiguously.
    for key, value_hash in sorted((row[0], row[1]) for row in rows if row[0] in spec.fields):
        digest.update(f"{key}\x00{value_hash}\n".encode())
    return digest.hexdigest()[:32]


async def read_versioned(
    store: MetadataStore[ModelT], session_id: str, keys: list[str] | None
) -> Versioned[ModelT]:
    """Read the metadata (``keys`` only, or all) and the session's version in one statement."""
    await store._ensure_tables()
    statement = store.lock_statements.read_versioned()

    async def once() -> list[Sequence[Any]]:
        async with store._connect(session_id) as db:
            rows = await db.fetch(statement, statement.args({"session_id": session_id}))
            await db.end_read()
            return rows

    rows = await retrying(once)
    wanted = [(key, value) for key, value, _ in rows if keys is None or key in keys]
    version = version_of(store.spec, [(key, value_hash) for key, _, value_hash in rows])
    return Versioned(store._decode(session_id, wanted), version)


async def _in_locked_session(
    store: MetadataStore[Any],
    session_id: str,
    body: typing.Callable[[Driver], typing.Awaitable[None]],
    *,
    create: bool,
) -> None:
    """Run ``body`` in a transaction holding the session's lock.

    With ``create`` the session row is created first (so that two transactions on
    a new session still queue on its lock); without it, a missing session skips ``body``.
    """
    await store._ensure_tables()
    lock = store.lock_statements.lock_session()

    async def once() -> None:
        async with store._connect(session_id) as db:
            await db.begin()
            if create:
                await store._insert_session(db, session_id)
            if await db.fetch(lock, lock.args({"session_id": session_id})):
                await body(db)
            await db.commit()

    await retrying(once)


async def set_if_version(
    store: MetadataStore[Any], session_id: str, rows: list[EncodedValue], expected_version: str
) -> None:
    """Write ``rows`` if the session is still at ``expected_version``, else raise ConflictError."""
    statement = store.lock_statements.lock_hashes()

    async def body(db: Driver) -> None:
        current = version_of(
            store.spec, await db.fetch(statement, statement.args({"session_id": session_id}))
        )
        if current != expected_version:
            raise ConflictError(
                f"session {session_id!r} changed after version {expected_version!r} was read "
                f"(it is now at {current!r}); nothing was written: read it again and retry"
            )
        if rows:
            await store._write_rows(db, session_id, rows)

    await _in_locked_session(store, session_id, body, create=True)


def collection_kind(spec: ModelSpec[Any], key: str) -> type:
    """``list``, ``set`` or ``frozenset``: what the field stored under ``key`` holds."""
    field = spec.fields[key]
    info = spec.model.model_fields[field.name]
    annotation: Any = info.annotation
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
            continue
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if origin in (typing.Union, types.UnionType) and len(args) == 1:
            annotation = args[0]
            continue
        break
    kind = typing.get_origin(annotation) or annotation
    if kind not in (list, set, frozenset):
        raise TypeError(
            f"{spec.name}.{field.name} is {info.annotation!r}, not a list or set: "
            "add_to and remove_from change list and set fields only"
        )
    return typing.cast(type, kind)


async def change_items(
    store: MetadataStore[Any], session_id: str, key: str, items: tuple[Any, ...], change: Change
) -> None:
    """Add ``items`` to, or remove them from, the list or set stored under ``key``, atomically.

    A list gains the items at its end (as ``list.extend``) and loses every
    occurrence of each; a set takes their union or difference. The items are
    validated as the field's type before any I/O; the combined value again
    before it is written.
    """
    spec = store.spec
    field = spec.field(key, session_id=session_id)
    kind = collection_kind(spec, field.key)
    checked = getattr(
        spec.validate_values({field.key: list(items)}, session_id=session_id), field.name
    )
    statement = store.lock_statements.lock_value()
    if not items:
        return

    async def body(db: Driver) -> None:
        found = await db.fetch(
            statement, statement.args({"session_id": session_id, "key": field.key})
        )
        current = (
            getattr(store._decode(session_id, [(field.key, found[0][0])]), field.name)
            if found
            else None
        )
        if change == "remove":
            if not current:
                return
            combined: Any = (
                [item for item in current if item not in checked]
                if kind is list
                else kind(current) - kind(checked)
            )
        else:
            combined = (
                [*(current or []), *checked]
                if kind is list
                else kind(current or ()) | kind(checked)
            )
        rows = encode_model(
            spec, spec.validate_values({field.key: combined}, session_id=session_id)
        )
        await store._write_rows(db, session_id, rows)

    await _in_locked_session(store, session_id, body, create=change == "add")
