"""Running query plans: finds, listings, counts and bulk reads, one statement each.

Plans are checked by ``core.plan`` and their SQL built by ``sql.plans``; this
module only fills parameters, runs the compiled statements through the store's
operations and shapes the rows. Each method is one round trip, run as a query
(:meth:`Operations.query`): on the store's read replica when it has one. A page
ordered by a metadata key with a filter is the exception: a count of the filter's
index range picks its statement first, and its last pages take a second statement
(:meth:`QuerySQL.parts`).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Generic

from pydantic import TypeAdapter, ValidationError

from sessionmeta.core.codec import encode_model, object_text
from sessionmeta.core.filters import FilterArg, OrderArg
from sessionmeta.core.page import Page, SessionListing
from sessionmeta.core.plan import Plan, check_limit, encode_cursor, plan_query
from sessionmeta.core.sealing import object_rows, open_rows
from sessionmeta.core.spec import HasSessionId, ModelT, check_session_id
from sessionmeta.errors import InvalidArgumentError
from sessionmeta.io.operations import Operations
from sessionmeta.sql.plans import Part, QuerySQL
from sessionmeta.sql.statements import CompiledStatement

__all__ = ["Searcher"]


class Searcher(Generic[ModelT]):
    """The query side of a store, optionally limited to one scope (``key == value`` pairs)."""

    def __init__(self, ops: Operations[ModelT], sql: QuerySQL) -> None:
        self.ops = ops
        self.sql = sql
        many: Any = list[ops.spec.model]  # type: ignore[name-defined]
        self._many_adapter: TypeAdapter[list[ModelT]] = TypeAdapter(many)

    def on(self, ops: Operations[ModelT]) -> Searcher[ModelT]:
        """The same queries through other operations (a caller's connection)."""
        searcher: Searcher[ModelT] = Searcher.__new__(Searcher)
        searcher.__dict__.update(self.__dict__)
        searcher.ops = ops
        return searcher

    def decode_many(self, sessions: Sequence[tuple[str, list[tuple[str, str]]]]) -> list[ModelT]:
        """Models for many sessions' rows: one validation of one JSON array when all fit."""
        spec = self.ops.spec
        opened = sessions
        if spec.encrypted:
            opened = [
                (session_id, open_rows(spec, session_id, rows)) for session_id, rows in sessions
            ]
        text = (
            "["
            + ",".join(
                object_text([(key, value) for key, value in rows if spec.knows(key)])
                for _, rows in opened
            )
            + "]"
        )
        try:
            return self._many_adapter.validate_json(text)
        except ValidationError:
            # Name the session and key that do not fit (or read them as defaults).
            return [self.ops.decode(session_id, rows) for session_id, rows in sessions]

    def plan(
        self,
        filters: Iterable[FilterArg],
        order_by: OrderArg,
        cursor: str | None,
        scope: Mapping[str, Any] | None,
    ) -> Plan:
        return plan_query(
            self.ops.spec,
            filters,
            order_by=order_by,
            cursor=cursor,
            arrays=self.sql.arrays,
            scope=scope,
        )

    async def find_equal(self, key: str, value: Any, limit: int) -> list[str]:
        """Ids of sessions whose ``key`` equals ``value`` (validated as the field's type)."""
        check_limit(limit)
        spec = self.ops.spec
        field = spec.field(key)
        (row,) = encode_model(spec, spec.validate_values({field.key: value}))
        params = {"key": row.key, "value_hash": row.value_hash, "limit": limit}
        rows = await self.ops.query(self.ops.statements.find_equal(), params)
        return [session_id for (session_id,) in rows]

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
        rows = await self._page_rows(plan, limit + 1, lambda part: self.sql.ids(plan, part))
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
        spec = self.ops.spec
        known = None if spec.open else tuple(spec.fields)
        rows = await self._page_rows(
            plan, limit + 1, lambda part: self.sql.listing(plan, known, part)
        )
        # Each session's id and sort value, in page order, then its model.
        entries: list[tuple[str, Any]]
        if self.sql.objects:
            # One row per session: (id, its values as one JSON object, [sort value]).
            entries = [(row[0], row[2] if len(row) > 2 else None) for row in rows]
            models = await self._decode_objects([(row[0], row[1]) for row in rows[:limit]])
        else:
            # One row per key, each session's rows together: (id, key, value[, sort]).
            sessions: list[tuple[str, Any, list[tuple[str, str]]]] = []
            for row in rows:
                session_id, key, value = row[0], row[1], row[2]
                if not sessions or sessions[-1][0] != session_id:
                    sessions.append((session_id, row[3] if len(row) > 3 else None, []))
                if key is not None:
                    sessions[-1][2].append((key, value))
            entries = [(session_id, sort) for session_id, sort, _ in sessions]
            models = self.decode_many(
                [(session_id, pairs) for session_id, _, pairs in sessions[:limit]]
            )
        page = [
            SessionListing(session_id, model)
            for (session_id, _), model in zip(entries[:limit], models, strict=True)
        ]
        next_cursor = None
        if len(entries) > limit:
            session_id, sort_value = entries[limit - 1]
            next_cursor = encode_cursor(plan.order, sort_value, session_id)
        return Page(page, next_cursor)

    async def _page_rows(
        self, plan: Plan, limit: int, statement: Callable[[Part], CompiledStatement]
    ) -> list[Sequence[Any]]:
        """The rows of ``limit`` sessions in page order, from the statements of the page's
        parts (:meth:`QuerySQL.parts`), each run while the page is short: one statement
        but for a broad filter ordered by a metadata key, where a count of the filter's
        index range (up to ``BROAD``) comes first, and on the last pages a second part."""
        parts = self.sql.parts(plan)
        if parts is None:
            counted = await self.ops.query(self.sql.breadth(plan), plan.params)
            parts = self.sql.parts(plan, int(counted[0][0])) or (None,)
        if len(parts) == 1:
            return await self.ops.query(statement(parts[0]), {**plan.params, "limit": limit})
        rows: list[Sequence[Any]] = []
        sessions = 0
        for part in parts:
            if not _may_hold(part, plan):
                continue
            found = await self.ops.query(
                statement(part), {**plan.params, "limit": limit - sessions}
            )
            rows.extend(found)
            # A listing on MySQL gives a row per key: count sessions, not rows.
            sessions = len(dict.fromkeys(row[0] for row in rows))
            if sessions >= limit:
                break
        return rows

    async def _decode_objects(self, sessions: Sequence[tuple[str, str | None]]) -> list[ModelT]:
        """Models for sessions' values as JSON objects: one validation when all fit."""
        if self.ops.spec.encrypted:
            # Each value decrypted first: the object's members, verbatim, as rows.
            return self.decode_many(
                [(session_id, object_rows(values or "{}")) for session_id, values in sessions]
            )
        text = "[" + ",".join(values or "{}" for _, values in sessions) + "]"
        try:
            return self._many_adapter.validate_json(text)
        except ValidationError:
            # Name the session and key that do not fit (or read them as defaults), from
            # the stored rows, as a single read does (where the listing read them).
            select_values = self.ops.statements.select_values(None)
            models = []
            for session_id, _ in sessions:
                rows = await self.ops.query(
                    select_values, {"session_id": session_id}, session_id=session_id
                )
                models.append(self.ops.decode(session_id, [(key, value) for key, value in rows]))
            return models

    async def count(
        self, filters: Iterable[FilterArg], scope: Mapping[str, Any] | None = None
    ) -> int:
        plan = self.plan(filters, "session_id", None, scope)
        rows = await self.ops.query(self.sql.count(plan), plan.params)
        return int(rows[0][0])

    async def many_rows(
        self, sessions: Iterable[str | HasSessionId], *, with_hashes: bool = False
    ) -> dict[str, list[Sequence[Any]]]:
        """Every stored (key, value[, hash]) row of each session, in one statement; ids
        checked first."""
        if isinstance(sessions, str) or not isinstance(sessions, Iterable):
            raise InvalidArgumentError(f"get_many takes a list of session ids, not {sessions!r}")
        ids = list(dict.fromkeys(check_session_id(session) for session in sessions))
        found: dict[str, list[Sequence[Any]]] = {session_id: [] for session_id in ids}
        if not ids:
            return found
        if self.sql.arrays:
            statement = self.sql.many(len(ids), with_hashes=with_hashes)
            params: dict[str, Any] = {"ids": ids}
        else:
            # Padded to a power of two, so a few statement shapes serve every count.
            size = 1
            while size < len(ids):
                size *= 2
            padded = ids + [ids[-1]] * (size - len(ids))
            statement = self.sql.many(size, with_hashes=with_hashes)
            params = {f"id{index}": session_id for index, session_id in enumerate(padded)}
        for row in await self.ops.query(statement, params):
            rows = found.get(row[0])
            if rows is not None:
                rows.append(row[1:])
                continue
            # A sessions table in a case-insensitive collation (MySQL, made by hand) gives
            # the id as it was written, not as asked: file it under each id asked that
            # the collation takes for the same one.
            for session_id in ids:
                if _loosely(session_id) == _loosely(row[0]):
                    found[session_id].append(row[1:])
        return found

    async def many(self, sessions: Iterable[str | HasSessionId]) -> dict[str, ModelT]:
        found = await self.many_rows(sessions)
        models = self.decode_many(
            [(sid, [(key, value) for key, value in rows]) for sid, rows in found.items()]
        )
        return dict(zip(found, models, strict=True))


def _may_hold(part: Part, plan: Plan) -> bool:
    """Whether ``part`` of a page may hold sessions past the plan's cursor: none sorts
    before the blank group (so ascending it is behind any cursor in the held part),
    and descending the held part is behind a cursor in the blank group."""
    if part is None or not plan.after:
        return True
    in_blank = plan.params["after_value"] == ""
    if part == "blank":
        return in_blank or plan.order.descending
    return not in_blank or not plan.order.descending


def _loosely(session_id: str) -> str:
    """``session_id`` without case and accents, as MySQL's ``_ci`` collations compare."""
    decomposed = unicodedata.normalize("NFKD", session_id)
    return "".join(char for char in decomposed if not unicodedata.combining(char)).casefold()
