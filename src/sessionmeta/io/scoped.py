"""A store view limited to one tenant: ``store.scoped(owner_id="u1")``.

Every query of the view carries the scope's equality conditions (and is driven
by their index). Every bound operation decides on the scope in the same
statement or transaction as its action: reads check the rows of the very
statement that read them; writes, deletes and add/remove check the rows they
locked. A session with no metadata at all is free: writing to it through the
view claims it by storing the scope's values with the write, in that same
transaction, so of two tenants writing the same new id one wins and the other
is refused. With ``create=False`` a write claims nothing: a session exists for
the view only when it is in the scope.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any, Generic

from sessionmeta.core.codec import encode_model
from sessionmeta.core.expiry import check_ttl, with_ttls
from sessionmeta.core.filters import FilterArg, OrderArg
from sessionmeta.core.page import Page, SessionListing
from sessionmeta.core.scope import Scope
from sessionmeta.core.spec import HasSessionId, ModelT, check_session_id
from sessionmeta.core.versions import Versioned, check_create_argument, check_version_argument
from sessionmeta.errors import SessionNotInScopeError
from sessionmeta.io.atomic import (
    change_items,
    delete_in_scope,
    read_versioned,
    set_if_version,
    write_in_scope,
)
from sessionmeta.io.bound import BoundMetadata
from sessionmeta.io.lookup import NewSessionId, get_or_create_by, plan_lookup
from sessionmeta.io.search import Searcher

__all__ = ["ScopedBoundMetadata", "ScopedStore"]


class ScopedStore(Generic[ModelT]):
    """The sessions of one scope only; see :meth:`MetadataStore.scoped`."""

    def __init__(self, search: Searcher[ModelT], pairs: Mapping[str, Any]) -> None:
        self.search = search
        self.spec = search.ops.spec
        self.scope_of = Scope(self.spec, pairs)
        self.scope: dict[str, Any] = self.scope_of.values

    def __repr__(self) -> str:
        return f"ScopedStore({self.spec.name}, {self.scope!r})"

    def scoped(self, more: Mapping[str, Any] | None = None, /, **pairs: Any) -> ScopedStore[ModelT]:
        """A narrower view: this scope's pairs and the given ones together."""
        return ScopedStore(self.search, self.scope_of.narrowed({**(more or {}), **pairs}))

    def on_primary(self) -> ScopedStore[ModelT]:
        """This view with its queries on the primary; see :meth:`MetadataStore.on_primary`."""
        return ScopedStore(self.search.on(self.search.ops.on_primary()), self.scope)

    def bind(self, session: str | HasSessionId) -> ScopedBoundMetadata[ModelT]:
        """The metadata of one session of this scope; other tenants' sessions are refused."""
        return ScopedBoundMetadata(self, check_session_id(session))

    async def exists(self, session: str | HasSessionId) -> bool:
        """Whether the session exists in this scope: ``False`` for a missing session, one
        of another scope, and one with no metadata (which a write would claim)."""
        return await self.bind(session).exists()

    async def find_sessions(
        self,
        *filters: FilterArg,
        order_by: OrderArg = "session_id",
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[str]:
        """:meth:`MetadataStore.find_sessions` within the scope."""
        return await self.search.find(
            filters, order_by=order_by, limit=limit, cursor=cursor, scope=self.scope
        )

    async def list_sessions(
        self,
        *filters: FilterArg,
        order_by: OrderArg = "session_id",
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[SessionListing[ModelT]]:
        """:meth:`MetadataStore.list_sessions` within the scope."""
        return await self.search.listing(
            filters, order_by=order_by, limit=limit, cursor=cursor, scope=self.scope
        )

    async def count_sessions(self, *filters: FilterArg) -> int:
        """:meth:`MetadataStore.count_sessions` within the scope."""
        return await self.search.count(filters, scope=self.scope)

    async def find_sessions_by_metadata(
        self, key: str, value: Any, *, limit: int = 100
    ) -> list[str]:
        """:meth:`MetadataStore.find_sessions_by_metadata` within the scope."""
        return list(await self.find_sessions({key: value}, limit=limit))

    async def get_or_create_by(
        self,
        key: str,
        value: Any,
        defaults: Mapping[str, Any] | None = None,
        *,
        session_id: NewSessionId | None = None,
    ) -> tuple[str, bool]:
        """:meth:`MetadataStore.get_or_create_by` within the scope: a created session
        stores the scope's values too (with ``Unique(per=...)`` on a scope key, they are
        part of the lookup). A holder outside the scope raises
        :class:`~sessionmeta.SessionNotInScopeError`."""
        lookup = plan_lookup(self.spec, key, value, defaults, self.scope_of)
        return await get_or_create_by(self.search.ops, lookup, session_id=session_id)

    async def get_many(self, sessions: Iterable[str | HasSessionId]) -> dict[str, ModelT]:
        """:meth:`MetadataStore.get_many`; raises if any session belongs to another scope."""
        found = await self.search.many_rows(sessions, with_hashes=True)
        outside = [sid for sid, rows in found.items() if self.scope_of.state(rows) == "out"]
        if outside:
            raise self.scope_of.refuse(outside)
        ops = self.search.ops
        return {
            sid: ops.decode(sid, [(key, value) for key, value, _ in rows])
            for sid, rows in found.items()
        }


class ScopedBoundMetadata(BoundMetadata[ModelT]):
    """One session's metadata through a scoped view: refused when the session is not in it."""

    def __init__(self, view: ScopedStore[ModelT], session_id: str) -> None:
        super().__init__(view.search, session_id)
        self.view = view
        self.scope = view.scope_of

    def __repr__(self) -> str:
        return f"ScopedBoundMetadata({self.view!r}, session_id={self.session_id!r})"

    async def exists(self) -> bool:
        """Whether the session is in the scope (one statement): ``False`` when it is
        missing, another scope's, or holds no metadata yet."""
        return self.scope.state(await self.ops.session_rows(self.session_id)) == "in"

    async def set_metadata(
        self,
        values: ModelT | Mapping[str, Any],
        *,
        expected_version: str | None = None,
        create: bool = True,
        ttl: dt.timedelta | None = None,
    ) -> None:
        """Write ``values``; a session with no metadata yet is claimed for the scope.

        With ``create=False`` only a session in the scope is written: a missing
        session, or one with no metadata, raises
        :class:`~sessionmeta.SessionNotFoundError` (another scope's
        :class:`~sessionmeta.SessionNotInScopeError`), decided in the write's own
        transaction. With ``expected_version`` the write is conditional as in
        :meth:`BoundMetadata.set_metadata`, and ``ttl`` as there. The scope's keys
        a claim adds (those not in ``values``) take no ``ttl``: the session stays
        the tenant's when its other keys expire.
        """
        check_version_argument(expected_version, self.session_id)
        check_create_argument(create, self.session_id)
        micros = check_ttl(ttl, f"session {self.session_id!r}")
        spec = self.ops.spec
        validated = spec.validate_values(values, session_id=self.session_id)
        self.scope.check_write(
            self.session_id,
            {
                field.key: spec.value_of(validated, field)
                for field in map(spec.field, validated.model_fields_set)
            },
        )
        rows = with_ttls(encode_model(spec, validated), micros, {})
        if expected_version is not None:
            await set_if_version(
                self.ops, self.session_id, rows, expected_version, self.scope, create=create
            )
        else:
            await write_in_scope(self.ops, self.session_id, rows, self.scope, create=create)

    async def get_metadata_versioned(self, keys: Iterable[str] | None = None) -> Versioned[ModelT]:
        """:meth:`BoundMetadata.get_metadata_versioned`, if the session is in scope."""
        resolved = self.ops.spec.resolve_keys(keys, session_id=self.session_id)
        return await read_versioned(self.ops, self.session_id, resolved, self.scope)

    async def add_to(self, key: str, *items: Any, create: bool = True) -> None:
        """:meth:`BoundMetadata.add_to` on an in-scope (or newly claimed) session; with
        ``create=False`` on an in-scope session only, as :meth:`set_metadata`."""
        check_create_argument(create, self.session_id)
        await change_items(self.ops, self.session_id, key, items, "add", self.scope, create=create)

    async def remove_from(self, key: str, *items: Any) -> None:
        """:meth:`BoundMetadata.remove_from` on an in-scope session."""
        await change_items(self.ops, self.session_id, key, items, "remove", self.scope)

    async def get_metadata(self, keys: Iterable[str] | None = None) -> ModelT:
        """The stored metadata, if the session is in scope (defaults if it has none)."""
        resolved = self.ops.spec.resolve_keys(keys, session_id=self.session_id)
        rows = await self.ops.session_rows(self.session_id)
        self.scope.require(self.session_id, rows)
        wanted = [(key, value) for key, value, _ in rows if resolved is None or key in resolved]
        return self.ops.decode(self.session_id, wanted)

    async def delete_metadata(self, keys: Iterable[str] | None = None) -> None:
        """Delete keys of an in-scope session; the scope's own keys only with everything."""
        resolved = self.ops.spec.resolve_keys(keys, session_id=self.session_id)
        if resolved is not None:
            kept = [key for key in resolved if key in self.scope.values]
            if kept:
                raise SessionNotInScopeError(
                    f"session {self.session_id!r}: deleting {kept} would take it out of scope "
                    f"{self.scope.values!r}; delete every key instead",
                    session_id=self.session_id,
                    key=kept[0] if len(kept) == 1 else None,
                )
            if not resolved:
                return
        await delete_in_scope(self.ops, self.session_id, resolved, self.scope)

    async def find_sessions_by_metadata(
        self, key: str, value: Any, *, limit: int = 100
    ) -> list[str]:
        """The scoped view's :meth:`ScopedStore.find_sessions_by_metadata`."""
        return await self.view.find_sessions_by_metadata(key, value, limit=limit)
