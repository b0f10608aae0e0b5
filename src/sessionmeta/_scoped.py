"""A store view limited to one tenant: ``store.scoped(owner_id="u1")``.

Every query of the view carries the scope's equality conditions (and is driven
by their index); every bound operation reads the session's stored rows first
and refuses a session whose scope keys hold other values. A session with no
metadata at all is free: writing to it through the view claims it by storing
the scope's values with the write.

Claiming is race-free: the scope's values are first inserted only where the
session lacks them, then read back; of two tenants writing the same new id at
once, one claims it and the other is refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Generic, Literal

from ._atomic import Versioned, set_if_version
from ._codec import encode_model
from ._filters import FilterArg, OrderArg
from ._model import HasSessionId, ModelT, check_session_id
from ._page import Page, SessionListing
from ._search import check_limit
from .errors import FilterError, SessionNotInScopeError

if TYPE_CHECKING:
    from ._store import MetadataStore

from ._store import BoundMetadata

__all__ = ["ScopedBoundMetadata", "ScopedStore"]

ScopeState = Literal["in", "free", "out"]


class ScopedStore(Generic[ModelT]):
    """The sessions of one scope only; see :meth:`MetadataStore.scoped`."""

    def __init__(self, store: MetadataStore[ModelT], scope: Mapping[str, Any]) -> None:
        if not scope:
            raise FilterError("scoped() needs at least one key=value pair")
        spec = store.spec
        for key, value in scope.items():
            spec.field(key)
            if value is None:
                raise FilterError(f"scope key {key!r}: a scope value cannot be None")
        validated = spec.validate_values(scope)
        rows = encode_model(spec, validated)
        self.store = store
        self.spec = spec
        self.scope_rows = rows
        # Storage key -> stored JSON text: what an in-scope session holds.
        self.scope_texts: dict[str, str] = {row.key: row.value for row in rows}
        self.scope: dict[str, Any] = {
            spec.field(name).key: getattr(validated, name) for name in validated.model_fields_set
        }

    def __repr__(self) -> str:
        return f"ScopedStore({self.spec.name}, {self.scope!r})"

    def scoped(self, more: Mapping[str, Any] | None = None, /, **pairs: Any) -> ScopedStore[ModelT]:
        """A narrower view: this scope's pairs and the given ones together."""
        scope = {**(more or {}), **pairs}
        for key in scope:
            storage_key = self.spec.field(key).key
            if storage_key in self.scope and scope[key] != self.scope[storage_key]:
                raise SessionNotInScopeError(
                    f"key {storage_key!r}={scope[key]!r} lies outside scope {self.scope!r}"
                )
        return ScopedStore(self.store, {**self.scope, **scope})

    def state(self, rows: list[tuple[str, str]]) -> ScopeState:
        """Whether stored rows put a session in this scope, in none yet, or in another."""
        stored = dict(rows)
        if all(stored.get(key) == text for key, text in self.scope_texts.items()):
            return "in"
        return "free" if not rows else "out"

    def refuse(self, session_ids: Iterable[str]) -> SessionNotInScopeError:
        shown = ", ".join(repr(session_id) for session_id in session_ids)
        return SessionNotInScopeError(f"session {shown} is not in scope {self.scope!r}")

    def bind(self, session: str | HasSessionId) -> ScopedBoundMetadata[ModelT]:
        """The metadata of one session of this scope; other tenants' sessions are refused."""
        return ScopedBoundMetadata(self, check_session_id(session))

    async def find_sessions(
        self,
        *filters: FilterArg,
        order_by: OrderArg = "session_id",
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[str]:
        """:meth:`MetadataStore.find_sessions` within the scope."""
        return await self.store._search.find(
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
        return await self.store._search.listing(
            filters, order_by=order_by, limit=limit, cursor=cursor, scope=self.scope
        )

    async def count_sessions(self, *filters: FilterArg) -> int:
        """:meth:`MetadataStore.count_sessions` within the scope."""
        return await self.store._search.count(filters, scope=self.scope)

    async def find_sessions_by_metadata(
        self, key: str, value: Any, *, limit: int = 100
    ) -> list[str]:
        """:meth:`MetadataStore.find_sessions_by_metadata` within the scope."""
        check_limit(limit)
        return list(await self.find_sessions({key: value}, limit=limit))

    async def get_many(self, sessions: Iterable[str | HasSessionId]) -> dict[str, ModelT]:
        """:meth:`MetadataStore.get_many`; raises if any session belongs to another scope."""
        search = self.store._search
        found = await search.many_rows(sessions)
        outside = [sid for sid, rows in found.items() if self.state(rows) == "out"]
        if outside:
            raise self.refuse(outside)
        return {sid: self.store._decode(sid, rows) for sid, rows in found.items()}


class ScopedBoundMetadata(BoundMetadata[ModelT]):
    """One session's metadata through a scoped view: refused when the session is not in it."""

    def __init__(self, view: ScopedStore[ModelT], session_id: str) -> None:
        super().__init__(view.store, session_id)
        self.view = view

    def __repr__(self) -> str:
        return f"ScopedBoundMetadata({self.view!r}, session_id={self.session_id!r})"

    async def _checked_rows(self) -> tuple[ScopeState, list[tuple[str, str]]]:
        rows = await self.store._rows(self.session_id, None)
        state = self.view.state(rows)
        if state == "out":
            raise self.view.refuse([self.session_id])
        return state, rows

    async def _enter_scope(self) -> None:
        """Refuse another scope's session; claim a session with no metadata yet."""
        state, _ = await self._checked_rows()
        if state == "free":
            # Claim first, with inserts that never overwrite: of two views racing for
            # the same new id, one claims it and the other is refused here.
            await self.store._claim(self.session_id, self.view.scope_rows)
            await self._checked_rows()

    def _refuse_scope_key(self, key: str, action: str) -> None:
        storage_key = self.store.spec.field(key, session_id=self.session_id).key
        if storage_key in self.view.scope:
            raise SessionNotInScopeError(
                f"session {self.session_id!r}: {action} {storage_key!r} would move it out "
                f"of scope {self.view.scope!r}"
            )

    async def set_metadata(
        self, values: ModelT | Mapping[str, Any], *, expected_version: str | None = None
    ) -> None:
        """Write ``values``; a session with no metadata yet is claimed for the scope.

        With ``expected_version`` the write is conditional as in
        :meth:`BoundMetadata.set_metadata`, and carries the scope's values.
        """
        if expected_version is not None and not isinstance(expected_version, str):
            raise TypeError(
                "expected_version must be the .version string of get_metadata_versioned(), "
                f"not {type(expected_version).__name__}"
            )
        spec = self.store.spec
        validated = spec.validate_values(values, session_id=self.session_id)
        for name in validated.model_fields_set:
            key = spec.field(name).key
            if key in self.view.scope and getattr(validated, name) != self.view.scope[key]:
                raise SessionNotInScopeError(
                    f"session {self.session_id!r}: writing {key!r}={getattr(validated, name)!r} "
                    f"would move it out of scope {self.view.scope!r}"
                )
        rows = encode_model(spec, validated)
        if expected_version is None:
            await self._enter_scope()
        else:
            # No claim first: that would change the version. The conditional write
            # itself fails if another scope claimed the session in between.
            await self._checked_rows()
        written = {row.key for row in rows}
        missing = [row for row in self.view.scope_rows if row.key not in written]
        rows = sorted(rows + missing, key=lambda row: row.key)
        if expected_version is not None:
            await set_if_version(self.store, self.session_id, rows, expected_version)
        else:
            await self.store._write(self.session_id, rows)

    async def get_metadata_versioned(self, keys: Iterable[str] | None = None) -> Versioned[ModelT]:
        """:meth:`BoundMetadata.get_metadata_versioned`, if the session is in scope."""
        await self._checked_rows()
        return await super().get_metadata_versioned(keys)

    async def add_to(self, key: str, *items: Any) -> None:
        """:meth:`BoundMetadata.add_to` on an in-scope (or newly claimed) session."""
        self._refuse_scope_key(key, "changing")
        await self._enter_scope()
        await super().add_to(key, *items)

    async def remove_from(self, key: str, *items: Any) -> None:
        """:meth:`BoundMetadata.remove_from` on an in-scope session."""
        self._refuse_scope_key(key, "changing")
        await self._enter_scope()
        await super().remove_from(key, *items)

    async def get_metadata(self, keys: Iterable[str] | None = None) -> ModelT:
        """The stored metadata, if the session is in scope (defaults if it has none)."""
        resolved = self.store.spec.resolve_keys(keys, session_id=self.session_id)
        _, rows = await self._checked_rows()
        if resolved is not None:
            rows = [(key, value) for key, value in rows if key in resolved]
        return self.store._decode(self.session_id, rows)

    async def delete_metadata(self, keys: Iterable[str] | None = None) -> None:
        """Delete keys of an in-scope session; the scope's own keys only with everything."""
        resolved = self.store.spec.resolve_keys(keys, session_id=self.session_id)
        if resolved is not None:
            kept = [key for key in resolved if key in self.view.scope]
            if kept:
                raise SessionNotInScopeError(
                    f"session {self.session_id!r}: deleting {kept} would take it out of scope "
                    f"{self.view.scope!r}; delete every key instead"
                )
        state, _ = await self._checked_rows()
        if state == "free" or resolved == []:
            return
        await self.store._delete(self.session_id, resolved)

    async def find_sessions_by_metadata(
        self, key: str, value: Any, *, limit: int = 100
    ) -> list[str]:
        """The scoped view's :meth:`ScopedStore.find_sessions_by_metadata`."""
        return await self.view.find_sessions_by_metadata(key, value, limit=limit)
