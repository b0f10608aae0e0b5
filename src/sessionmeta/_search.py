"""Running query plans: finds, listings, counts and bulk reads, one statement each.

Plans are checked by ``_query`` and their SQL built by ``_sql``; this module
only fills parameters, runs the compiled statement on the driver and shapes
the rows. Each method is one round trip.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic

from pydantic import TypeAdapter, ValidationError

from ._codec import object_text
from ._filters import FilterArg, OrderArg
from ._model import HasSessionId, ModelT, check_session_id
from ._page import Page, SessionListing
from ._query import Plan, encode_cursor, plan_query
from ._retry import retrying
from ._sql import QuerySQL

if TYPE_CHECKING:
    from ._store import MetadataStore

__all__ = ["Searcher", "check_limit"]

MAX_LIMIT = 10_000


def check_limit(limit: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be an integer from 1 to {MAX_LIMIT}, not {limit!r}")


class Searcher(Generic[ModelT]):
    """The query side of a store, optionally limited to one scope (``key == value`` pairs)."""

    def __init__(self, store: MetadataStore[ModelT], sql: QuerySQL) -> None:
        self.store = store
        self.sql = sql
        many: Any = list[store.model]  # type: ignore[name-defined]
        self._many_adapter: TypeAdapter[list[ModelT]] = TypeAdapter(many)

    def decode_many(self, sessions: Sequence[tuple[str, list[tuple[str, str]]]]) -> list[ModelT]:
        """Models for many sessions' rows: one validation of one JSON array when all fit."""
        fields = self.store.spec.fields
        text = (
            "["
            + ",".join(
                object_text([(key, value) for key, value in rows if key in fields])
                for _, rows in sessions
            )
            + "]"
        )
        try:
            return self._many_adapter.validate_json(text)
        except ValidationError:
            # Name the session and key that do not fit (or read them as defaults).
            return [self.store._decode(session_id, rows) for session_id, rows in sessions]

    def plan(
        self,
        filters: Iterable[FilterArg],
        order_by: OrderArg,
        cursor: str | None,
        scope: Mapping[str, Any] | None,
    ) -> Plan:
        return plan_query(
            self.store.spec,
            filters,
            order_by=order_by,
            cursor=cursor,
            arrays=self.sql.arrays,
            scope=scope,
        )

    async def _fetch(self, statement: Any, params: Mapping[str, Any]) -> list[Sequence[Any]]:
        store = self.store
        await store._ensure_tables()
        args = statement.args(params)

        async def once() -> list[Sequence[Any]]:
            async with store._connect() as db:
                rows = await db.fetch(statement, args)
                await db.end_read()
            return rows

        return await retrying(once)

    async def find(
        self,
        filters: Iterable[FilterArg],
        *,
        order_by: OrderArg,
        limit: int,
        cursor: str | None,
        scope: Mapping[str, Any] | None = None,
    ) -> Page[str]:
        check_limit(limit)
        plan = self.plan(filters, order_by, cursor, scope)
        # One row more than asked tells whether another page follows.
        rows = await self._fetch(self.sql.ids(plan), {**plan.params, "limit": limit + 1})
        ids = [row[0] for row in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = rows[limit - 1]
            next_cursor = encode_cursor(plan.order, last[1] if len(last) > 1 else None, last[0])
        return Page(ids, next_cursor)

    async def listing(
        self,
        filters: Iterable[FilterArg],
        *,
        order_by: OrderArg,
        limit: int,
        cursor: str | None,
        scope: Mapping[str, Any] | None = None,
    ) -> Page[SessionListing[ModelT]]:
        check_limit(limit)
        plan = self.plan(filters, order_by, cursor, scope)
        rows = await self._fetch(self.sql.listing(plan), {**plan.params, "limit": limit + 1})
        # Rows come in page order, each session's rows together: (id, key, value[, sort]).
        sessions: list[tuple[str, Any, list[tuple[str, str]]]] = []
        for row in rows:
            session_id, key, value = row[0], row[1], row[2]
            if not sessions or sessions[-1][0] != session_id:
                sessions.append((session_id, row[3] if len(row) > 3 else None, []))
            if key is not None:
                sessions[-1][2].append((key, value))
        kept = sessions[:limit]
        models = self.decode_many([(session_id, values) for session_id, _, values in kept])
        page = [
            SessionListing(session_id, model)
            for (session_id, _, _), model in zip(kept, models, strict=True)
        ]
        next_cursor = None
        if len(sessions) > limit:
            session_id, sort_value, _ = sessions[limit - 1]
            next_cursor = encode_cursor(plan.order, sort_value, session_id)
        return Page(page, next_cursor)

    async def count(
        self, filters: Iterable[FilterArg], scope: Mapping[str, Any] | None = None
    ) -> int:
        plan = self.plan(filters, "session_id", None, scope)
        rows = await self._fetch(self.sql.count(plan), plan.params)
        return int(rows[0][0])

    async def many_rows(
        self, sessions: Iterable[str | HasSessionId]
    ) -> dict[str, list[tuple[str, str]]]:
        """Every stored (key, value) of each session, in one statement; ids checked first."""
        if isinstance(sessions, str):
            raise TypeError("get_many takes a list of session ids, not one string")
        ids = list(dict.fromkeys(check_session_id(session) for session in sessions))
        found: dict[str, list[tuple[str, str]]] = {session_id: [] for session_id in ids}
        if not ids:
            return found
        if self.sql.arrays:
            statement = self.sql.many(len(ids))
            params: dict[str, Any] = {"ids": ids}
        else:
            # Padded to a power of two, so a few statement shapes serve every count.
            size = 1
            while size < len(ids):
                size *= 2
            padded = ids + [ids[-1]] * (size - len(ids))
            statement = self.sql.many(size)
            params = {f"id{index}": session_id for index, session_id in enumerate(padded)}
        for session_id, key, value in await self._fetch(statement, params):
            found[session_id].append((key, value))
        return found

    async def many(self, sessions: Iterable[str | HasSessionId]) -> dict[str, ModelT]:
        rows = await self.many_rows(sessions)
        models = self.decode_many(list(rows.items()))
        return dict(zip(rows, models, strict=True))
