"""The metadata of one session: the proposal's calls, typed by the model."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any, Generic

from sessionmeta.core.codec import encode_model
from sessionmeta.core.expiry import check_ttl, with_ttls
from sessionmeta.core.spec import ModelT
from sessionmeta.core.versions import Versioned, check_create_argument, check_version_argument
from sessionmeta.io.atomic import change_items, read_versioned, set_if_version, write_existing
from sessionmeta.io.search import Searcher

__all__ = ["BoundMetadata"]


class BoundMetadata(Generic[ModelT]):
    """The metadata of one session: the proposal's calls, typed by the model."""

    def __init__(self, search: Searcher[ModelT], session_id: str) -> None:
        self.search = search
        self.ops = search.ops
        self.session_id = session_id

    def __repr__(self) -> str:
        return f"BoundMetadata({self.ops.spec.name}, session_id={self.session_id!r})"

    async def exists(self) -> bool:
        """Whether the session exists: its row is in the sessions table.

        A write of metadata creates the row, as does the Agents SDK's first message;
        deleting the row (the SDK's ``clear_session()``) removes it and its metadata.
        :meth:`delete_metadata` keeps it.
        """
        return await self.ops.exists(self.session_id)

    async def set_metadata(
        self,
        values: ModelT | Mapping[str, Any],
        *,
        expected_version: str | None = None,
        create: bool = True,
        ttl: dt.timedelta | None = None,
    ) -> None:
        """Write ``values``: a model (its explicitly set fields) or a mapping of keys to values.

        Everything is validated before any I/O: a bad value raises
        :class:`pydantic.ValidationError` naming every bad field, an unknown key
        :class:`~sessionmeta.UnknownKeyError`, and then nothing is written. The
        session row is created when missing; other keys are left as they are.
        With ``create=False`` a missing session is refused instead, with
        :class:`~sessionmeta.SessionNotFoundError`, decided in the write's own
        transaction (a session deleted meanwhile is never re-created).
        With ``expected_version`` (from :meth:`get_metadata_versioned`) the write
        happens only if the session has not changed since: otherwise
        :class:`~sessionmeta.ConflictError`, and nothing is written.
        With ``ttl`` the written keys expire that long after the write, on the
        database's clock; without, each key takes its field's ``Expires`` default,
        or none (a rewritten key loses an earlier expiry).
        """
        check_version_argument(expected_version, self.session_id)
        check_create_argument(create, self.session_id)
        micros = check_ttl(ttl, f"session {self.session_id!r}")
        spec = self.ops.spec
        rows = encode_model(spec, spec.validate_values(values, session_id=self.session_id))
        rows = with_ttls(rows, micros, {})
        if expected_version is not None:
            await set_if_version(self.ops, self.session_id, rows, expected_version, create=create)
        elif not create:
            await write_existing(self.ops, self.session_id, rows)
        elif rows:
            await self.ops.write(self.session_id, rows)

    async def get_metadata_versioned(self, keys: Iterable[str] | None = None) -> Versioned[ModelT]:
        """:meth:`get_metadata`, with the session's version for a conditional ``set_metadata``.

        The version covers every key the model declares, whichever ``keys`` were read.
        """
        resolved = self.ops.spec.resolve_keys(keys, session_id=self.session_id)
        return await read_versioned(self.ops, self.session_id, resolved)

    async def add_to(self, key: str, *items: Any, create: bool = True) -> None:
        """Add ``items`` to the list or set field ``key`` atomically: concurrent adds all land.

        A list gains the items at its end, a set their union; a missing value
        counts as empty. Items are validated as the field's type before any I/O.
        A missing session is created, or with ``create=False`` refused with
        :class:`~sessionmeta.SessionNotFoundError`, as :meth:`set_metadata` does.
        """
        check_create_argument(create, self.session_id)
        await change_items(self.ops, self.session_id, key, items, "add", create=create)

    async def remove_from(self, key: str, *items: Any) -> None:
        """Remove ``items`` from the list or set field ``key`` atomically.

        A list loses every occurrence of each item; items not present are ignored.
        """
        await change_items(self.ops, self.session_id, key, items, "remove")

    async def get_metadata(self, keys: Iterable[str] | None = None) -> ModelT:
        """The stored metadata as the model; missing keys read as their defaults.

        The result's ``model_fields_set`` is exactly the stored keys among those
        asked for. ``keys`` (names or storage keys) narrows what is read.
        """
        resolved = self.ops.spec.resolve_keys(keys, session_id=self.session_id)
        if resolved == []:
            return self.ops.spec.model()
        return self.ops.decode(self.session_id, await self.ops.rows(self.session_id, resolved))

    async def delete_metadata(self, keys: Iterable[str] | None = None) -> None:
        """Delete the named keys, or every key of the session when ``keys`` is ``None``."""
        resolved = self.ops.spec.resolve_keys(keys, session_id=self.session_id)
        if resolved == []:
            return
        await self.ops.delete(self.session_id, resolved)

    async def find_sessions_by_metadata(
        self, key: str, value: Any, *, limit: int = 100
    ) -> list[str]:
        """Ids of sessions whose ``key`` equals ``value``: the store's call, for convenience."""
        return await self.search.find_equal(key, value, limit)
