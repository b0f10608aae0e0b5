"""SQL for query plans, built with SQLAlchemy Core and compiled once per plan shape.

The shape of every statement:

* The FROM is the index range of one positive top-level condition (the
  *driver*: ``key = ? AND value_hash = ?`` and the like), else the UNION of the
  index ranges of a top-level OR of positive conditions, else the sessions
  table. Equality ordered by session id is then one index range.
* Other positive conditions are ``session_id IN (SELECT session_id ... )``:
  an uncorrelated index range each, which every engine turns into a semi-join.
* Negative conditions are ``NOT EXISTS (SELECT ... WHERE session_id = outer)``:
  an anti-join decided per session, probing the same indexes.
* ``contains`` reads the items table joined to the current value (by hash).
* Ordering by ``created_at``/``updated_at`` joins the sessions table by its key;
  by a metadata key, left-joins that key's row and orders by its ``sort_key``
  (a session lacking the key sorts as the empty string: first ascending).
* Ordered by a metadata key with a broad filter (its driving index range holds
  ``BROAD`` entries or more) or none, a page is two statements instead
  (:meth:`QuerySQL.parts`): the key's ``(key, sort_key)`` index walked in order with
  the filter as a correlated ``EXISTS`` probe per entry, and, only where that leaves
  the page short, the sessions sorting as the empty string, gathered as above.
* The cursor is a keyset condition on (sort value, session id).

Only standard SQL: IN/EXISTS subqueries, joins on the distribution key, and
``= ANY(array)`` on PostgreSQL, which Citus, CockroachDB and YugabyteDB accept.
"""

from __future__ import annotations

import operator
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    FromClause,
    Select,
    Text,
    and_,
    bindparam,
    false,
    func,
    literal_column,
    not_,
    or_,
    select,
    true,
    union,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect

from sessionmeta.core.plan import Group, Leaf, Node, Plan
from sessionmeta.sql.dialects import backend_for
from sessionmeta.sql.expiry import live
from sessionmeta.sql.schema import Tables
from sessionmeta.sql.statements import CompiledStatement, compile_statement

__all__ = ["QuerySQL"]

_COMPARISONS: dict[str, Callable[[Any, Any], Any]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
_CACHE_SIZE = 512
# One statement of a page ordered by a metadata key (QuerySQL.parts); None: the whole page.
Part = Literal["held", "blank"] | None
# Entries in the driving condition's index range from which a page ordered by a metadata
# key walks that key's index instead of sorting the matches: at most this many sorted,
# or (1,000,000 sessions, 51 rows a page) about 5,100 index entries walked when matches
# are spread over the order. Chosen here, not by the planner, whose estimate of the
# filter's selectivity inside a semi-join can be off a thousandfold (PostgreSQL took an
# owner's 50 matches among 1,000,000 sessions for 113,088 and walked the whole index).
BROAD = 10_000
# How a session lacking the order key sorts: as the empty string, before every sort key
# (NULL sorts first on some engines and last on others).
_BLANK: Any = literal_column("''")


class _Builder:
    """Builds the SQL of one plan; fresh aliases per condition."""

    def __init__(
        self, tables: Tables, arrays: bool, averaged_statistics: bool, now: ColumnElement[Any]
    ) -> None:
        self.tables = tables
        # The database's current instant: an expired value row matches nothing.
        self.now = now
        self.arrays = arrays
        self.averaged_statistics = averaged_statistics
        self.count = 0
        # The rows of the keys tested inside groups, by key parameter: one join per key.
        self.key_rows: dict[str, FromClause] = {}

    def _next(self) -> int:
        self.count += 1
        return self.count

    def leaf_source(self, leaf: Leaf) -> tuple[FromClause, ColumnElement[Any], list[Any]]:
        """The rows a leaf selects: a FROM, its session id column, its conditions."""
        number = self._next()
        values = self.tables.values.alias(f"m{number}")
        if leaf.kind == "contains":
            items = self.tables.items.alias(f"i{number}")
            source = items.join(
                values,
                and_(
                    values.c.session_id == items.c.session_id,
                    values.c.key == items.c.key,
                    # An element of an older value never matches.
                    values.c.value_hash == items.c.value_hash,
                    live(values, self.now),
                ),
            )
            elements: list[Any] = [bindparam(name) for name in leaf.value_params]
            key = items.c.key == bindparam(leaf.key_param)
            if len(elements) == 1:
                return source, items.c.session_id, [key, items.c.item_hash == elements[0]]
            # Any of several elements: a session holding two of them is still one session.
            holding = (
                select(items.c.session_id)
                .distinct()
                .select_from(source)
                .where(key, items.c.item_hash.in_(elements))
                .subquery(f"c{number}")
            )
            return holding, holding.c.session_id, []
        conditions = [
            values.c.key == bindparam(leaf.key_param),
            *self.row_test(leaf, values),
            live(values, self.now),
        ]
        return values, values.c.session_id, conditions

    def row_test(self, leaf: Leaf, values: FromClause) -> list[Any]:
        """What a leaf asks of the key's row, beyond its being there."""
        if leaf.kind == "eq":
            return [values.c.value_hash == bindparam(leaf.value_params[0])]
        if leaf.kind == "in" and leaf.as_array:
            hashes = bindparam(leaf.value_params[0], type_=postgresql.ARRAY(Text))
            return [values.c.value_hash == func.any(hashes)]
        if leaf.kind == "in":
            return [values.c.value_hash.in_([bindparam(name) for name in leaf.value_params])]
        if leaf.kind == "range" and "," in leaf.comparison:
            low, high = (_COMPARISONS[op] for op in leaf.comparison.split(","))
            return [
                low(values.c.sort_key, bindparam(leaf.value_params[0])),
                high(values.c.sort_key, bindparam(leaf.value_params[1])),
            ]
        if leaf.kind == "range":
            compare = _COMPARISONS[leaf.comparison]
            # The far end of the range of sort keys this field's values can have.
            bound: Any = bindparam(leaf.value_params[1])
            upward = leaf.comparison.startswith(">")
            return [
                compare(values.c.sort_key, bindparam(leaf.value_params[0])),
                values.c.sort_key < bound if upward else values.c.sort_key >= bound,
            ]
        return []

    def union_source(self, group: Group) -> tuple[FromClause, ColumnElement[Any], list[Any]]:
        """The sessions matching any of several positive leaves: a union of index ranges."""
        parts = []
        for leaf in group.nodes:
            assert isinstance(leaf, Leaf)
            source, inner_id, conditions = self.leaf_source(leaf)
            parts.append(
                select(inner_id.label("session_id")).select_from(source).where(*conditions)
            )
        matched = union(*parts).subquery("u")
        return matched, matched.c.session_id, []

    def condition(self, node: Node, session_id: ColumnElement[Any]) -> ColumnElement[bool]:
        """A top-level condition: a semi-join or an anti-join of its own, or a group."""
        if isinstance(node, Group):
            return self.grouped(node, session_id)
        source, inner_id, conditions = self.leaf_source(node)
        if not node.negated:
            return session_id.in_(select(inner_id).select_from(source).where(*conditions))
        probe: Select[Any] = select(literal_column("1")).select_from(source)
        return ~probe.where(inner_id == session_id, *conditions).exists()

    def grouped(self, node: Node, session_id: ColumnElement[Any]) -> ColumnElement[bool]:
        """A condition inside a group, tested on the session's row of its key.

        Each key tested inside groups is joined once (``LEFT JOIN`` on the primary key),
        and the group becomes a plain expression on those rows. Subqueries under an OR
        would be one subplan per condition, which PostgreSQL prices so high that it
        compiles them with JIT: seconds, for hundreds of conditions on a few keys.
        """
        if isinstance(node, Group):
            parts = [self.grouped(child, session_id) for child in node.nodes]
            if not parts:
                return false() if node.any_ else true()
            return or_(*parts) if node.any_ else and_(*parts)
        if node.kind == "contains":
            return self.condition(node, session_id)
        row = self.key_rows.get(node.key_param)
        if row is None:
            row = self.key_rows[node.key_param] = self.tables.values.alias(f"k{self._next()}")
        tests = self.row_test(node, row)
        # A missing row makes the tests NULL: count that as not held, so that negation
        # gives "a session lacking the key matches ne", as everywhere else.
        held = func.coalesce(and_(*tests), false()) if tests else row.c.session_id.is_not(None)
        return not_(held) if node.negated else held

    def joined_key_rows(self, source: FromClause, session_id: ColumnElement[Any]) -> FromClause:
        for key_param, row in self.key_rows.items():
            on = and_(
                row.c.session_id == session_id,
                row.c.key == bindparam(key_param),
                live(row, self.now),
            )
            source = source.outerjoin(row, on)
        return source

    def matching(self, plan: Plan) -> tuple[FromClause, ColumnElement[Any], list[Any]]:
        """The matching sessions: a FROM, its session id column, its conditions (fresh
        aliases on every call)."""
        self.key_rows = {}
        sessions = self.tables.sessions
        if isinstance(plan.driver, Group):
            source, session_id, where = self.union_source(plan.driver)
        elif plan.driver is not None:
            source, session_id, where = self.leaf_source(plan.driver)
        else:
            source, session_id, where = sessions, sessions.c.session_id, []
        where.extend(self.condition(node, session_id) for node in plan.rest.nodes)
        return self.joined_key_rows(source, session_id), session_id, where

    def page(self, plan: Plan, *, count: bool = False, part: Part = None) -> Select[Any]:
        """The ids (and sort values) of the matching sessions, in order, or their count;
        ordered by a metadata key, one ``part`` of them (see :meth:`QuerySQL.parts`)."""
        if part == "held":
            return self.walked(plan)
        return self.gathered(plan, count=count, blank=part == "blank")

    def breadth(self, plan: Plan) -> Select[Any]:
        """How many index entries the driving condition's range holds, counted up to
        :data:`BROAD` (entries, not sessions: an old list's elements and expired rows
        count too; they only decide the statement's shape)."""
        driver = plan.driver
        if isinstance(driver, Leaf) and driver.kind == "contains":
            items = self.tables.items.alias("i")
            elements: list[Any] = [bindparam(name) for name in driver.value_params]
            source: FromClause = items
            where: list[Any] = [
                items.c.key == bindparam(driver.key_param),
                items.c.item_hash.in_(elements)
                if len(elements) > 1
                else items.c.item_hash == elements[0],
            ]
        elif isinstance(driver, Group):
            source, _, where = self.union_source(driver)
        elif driver is not None:
            source, _, where = self.leaf_source(driver)
        else:
            source, where = self.tables.sessions, []
        sample = (
            select(literal_column("1").label("one"))
            .select_from(source)
            .where(*where)
            .limit(BROAD)
            .subquery("sample")
        )
        return select(func.count()).select_from(sample)

    def gathered(self, plan: Plan, *, count: bool = False, blank: bool = False) -> Select[Any]:
        """The matches gathered from the filter's index ranges, then sorted (or counted).

        Ordered by a metadata key, ``blank`` keeps only the sessions whose sort value is
        the empty string (lacking the key, or holding a value without a sort key).
        """
        sessions = self.tables.sessions
        source, session_id, where = self.matching(plan)
        if count:
            return select(func.count()).select_from(source).where(*where)
        order = plan.order
        sort: ColumnElement[Any] | None = None
        if order.column in ("created_at", "updated_at"):
            if plan.driver is not None:
                joined = sessions.alias("s")
                source = source.join(joined, joined.c.session_id == session_id)
                sort = joined.c[order.column]
            else:
                sort = sessions.c[order.column]
        elif order.column == "meta":
            ordered = self.tables.values.alias("o")
            source = source.outerjoin(
                ordered,
                and_(
                    ordered.c.session_id == session_id,
                    ordered.c.key == bindparam("order_key"),
                    live(ordered, self.now),
                ),
            )
            sort = func.coalesce(ordered.c.sort_key, _BLANK)
            if blank:
                where.append(sort == _BLANK)
                sort = _BLANK
        after = operator.lt if order.descending else operator.gt
        if plan.after:
            last_id: Any = bindparam("after_session_id")
            if sort is None:
                where.append(after(session_id, last_id))
            else:
                last_value: Any = bindparam("after_value")
                where.append(
                    or_(
                        after(sort, last_value),
                        and_(sort == last_value, after(session_id, last_id)),
                    )
                )
        keys = [session_id] if sort is None or blank else [sort, session_id]
        if sort is None and self._sort_matches(plan.driver):
            # Ordering by the bare column lets the planner walk the primary key in id
            # order and filter each row, a choice it bases on statistics that cannot see
            # the driver's selectivity; as an expression it cannot, so the filter's own
            # index is used and the matches sorted: a cost that follows the number of
            # matches, not the table's size.
            keys = [session_id.concat(literal_column("''"))]
        columns = [session_id.label("session_id")]
        if sort is not None:
            columns.append(sort.label("sort_value"))
        return (
            select(*columns)
            .select_from(source)
            .where(*where)
            .order_by(*(key.desc() if order.descending else key.asc() for key in keys))
            .limit(bindparam("limit"))
        )

    def walked(self, plan: Plan) -> Select[Any]:
        """Ordered by a metadata key, the sessions whose row of the key has a sort key
        past the empty string: the key's ``(key, sort_key)`` index walked in order, each
        session probed against the filter, until the page is full. About
        ``limit`` x sessions / matches entries read, when matches are spread over the
        order."""
        descending = plan.order.descending
        after = operator.lt if descending else operator.gt
        rows = self.tables.values.alias("o")
        where = [
            rows.c.key == bindparam("order_key"),
            live(rows, self.now),
            rows.c.sort_key > _BLANK,
        ]
        if plan.driver is not None or plan.rest.nodes:
            # A probe per entry (EXISTS, correlated), not IN, which SQLite turns into a
            # loop over the filter's matches, sorted after: the shape this one avoids. Its
            # OFFSET changes nothing but keeps PostgreSQL from making the probe a join and
            # choosing that shape by its own estimates (the count chose already); MySQL
            # takes no OFFSET without a LIMIT.
            source, session_id, conditions = self.matching(plan)
            probe: Select[Any] = select(literal_column("1")).select_from(source).limit(1).offset(0)
            where.append(probe.where(session_id == rows.c.session_id, *conditions).exists())
        if plan.after:
            last_value: Any = bindparam("after_value")
            last_id: Any = bindparam("after_session_id")
            where.append(
                or_(
                    after(rows.c.sort_key, last_value),
                    and_(rows.c.sort_key == last_value, after(rows.c.session_id, last_id)),
                )
            )
            # The same bound alone: an index range where the OR above is not one.
            where.append(
                rows.c.sort_key <= last_value if descending else rows.c.sort_key >= last_value
            )
        keys = (rows.c.sort_key, rows.c.session_id)
        return (
            select(rows.c.session_id.label("session_id"), rows.c.sort_key.label("sort_value"))
            .where(*where)
            .order_by(*(key.desc() if descending else key.asc() for key in keys))
            .limit(bindparam("limit"))
        )

    def _sort_matches(self, driver: Leaf | Group | None) -> bool:
        if isinstance(driver, Group):
            return True  # a union comes in no particular order
        if driver is None or driver.kind == "eq":
            return False  # no filter, or equality's index already yields ids in order
        if driver.kind == "exists":
            # How many sessions hold a key, every engine but SQLite knows per key
            # (PostgreSQL's most common values, InnoDB's index dives); SQLite's
            # statistics are averages over all keys.
            return self.averaged_statistics
        # Ranges, `in` and `contains`: sort_key's statistics mix every key's values,
        # and element hashes are rare by nature.
        return True


class QuerySQL:
    """The compiled SQL of query plans for one dialect, cached by plan shape."""

    def __init__(self, dialect: Dialect, tables: Tables) -> None:
        self.dialect = dialect
        self.tables = tables
        backend = backend_for(dialect)
        # PostgreSQL takes a list as one array parameter: one statement for any length.
        self.arrays = backend.arrays
        self.per_key_statistics = backend.per_key_statistics
        self.object_of_rows = backend.object_of_rows
        self.now = backend.spelling.clock.now(tables.clock_offset)
        self._cache: OrderedDict[tuple[Any, ...], CompiledStatement] = OrderedDict()

    def _compiled(self, cache_key: tuple[Any, ...], build: Callable[[], Any]) -> CompiledStatement:
        compiled = self._cache.get(cache_key)
        if compiled is None:
            compiled = compile_statement(build(), self.dialect)
            self._cache[cache_key] = compiled
            if len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(cache_key)
        return compiled

    def _builder(self) -> _Builder:
        return _Builder(self.tables, self.arrays, not self.per_key_statistics, self.now)

    def parts(self, plan: Plan, breadth: int | None = None) -> tuple[Part, ...] | None:
        """The statements of one page, in order, each run while the page is short.

        Ordered by a metadata key with a broad filter (``breadth``, from
        :meth:`breadth`, at least :data:`BROAD`; no filter counts as broad), a page
        is two parts: ``"held"``, the sessions whose row of the key has a sort key past
        the empty string, walked from the key's index; ``"blank"``, those that sort as
        the empty string (lacking the key, or holding a value without a sort key),
        which no index yields in order, so they are gathered and sorted. Descending,
        held comes first, and the blank part, which a broad filter makes slow, runs
        only when the held part leaves the page short (on the last pages); ascending,
        blank comes first. Any other query is one statement (``(None,)``): the matches
        gathered from the filter's index and sorted. ``None``: run :meth:`breadth` and
        ask again.
        """
        if plan.order.column != "meta":
            return (None,)
        # No driving condition: no filter, or only negative ones, which most sessions pass.
        if plan.driver is not None:
            if breadth is None:
                return None
            if breadth < BROAD:
                return (None,)
        return ("held", "blank") if plan.order.descending else ("blank", "held")

    def breadth(self, plan: Plan) -> CompiledStatement:
        """The driving condition's index entries, counted up to :data:`BROAD`."""
        return self._compiled(("breadth", plan.shape()), lambda: self._builder().breadth(plan))

    def ids(self, plan: Plan, part: Part = None) -> CompiledStatement:
        """Session ids (and the sort value, unless ordered by id) of one page."""
        return self._compiled(
            ("ids", plan.shape(), part), lambda: self._builder().page(plan, part=part)
        )

    def count(self, plan: Plan) -> CompiledStatement:
        return self._compiled(
            ("count", plan.shape()),
            lambda: self._builder().page(plan, count=True),
        )

    @property
    def objects(self) -> bool:
        """Whether :meth:`listing` gives one JSON object per session, not one row per key."""
        return self.object_of_rows is not None

    def listing(
        self, plan: Plan, known_keys: tuple[str, ...] | None = None, part: Part = None
    ) -> CompiledStatement:
        """One page of sessions, in page order, each with its stored values: one row per
        session with its ``known_keys`` (all keys: ``None``) as one JSON object where the
        database can keep the stored text (:attr:`objects`), else one row per key."""

        def build() -> Any:
            page = self._builder().page(plan, part=part).subquery("page")
            values = self.tables.values.alias("v")
            sort = page.c.sort_value if "sort_value" in page.c else None
            keys = [page.c.session_id] if sort is None else [sort, page.c.session_id]
            descending = plan.order.descending
            order = [key.desc() if descending else key.asc() for key in keys]
            joined = and_(values.c.session_id == page.c.session_id, live(values, self.now))
            if self.object_of_rows is None:
                columns = [page.c.session_id, values.c.key, values.c.value]
                if sort is not None:
                    columns.append(sort)
                return select(*columns).select_from(page.outerjoin(values, joined)).order_by(*order)
            # Each session's object from its own rows, one index range per page row: a
            # correlated subquery, which groups nothing and sorts only the page.
            rows = [values.c.session_id == page.c.session_id, live(values, self.now)]
            if known_keys is not None:
                # Undeclared keys would not validate: leave them in the table.
                known = [bindparam(f"known{i}", key, Text) for i, key in enumerate(known_keys)]
                rows.append(values.c.key.in_(known))
            stored = (
                select(self.object_of_rows(values.c.key, values.c.value))
                .where(*rows)
                .scalar_subquery()
            )
            objects: list[ColumnElement[Any]] = [page.c.session_id, stored]
            if sort is not None:
                objects.append(sort)
            return select(*objects).select_from(page).order_by(*order)

        return self._compiled(("listing", plan.shape(), known_keys, part), build)

    def many(self, count: int, *, with_hashes: bool = False) -> CompiledStatement:
        """Every (session id, key, value[, hash]) row of ``count`` sessions (``id0``...)."""
        values = self.tables.values

        def build() -> Any:
            if self.arrays:
                ids = bindparam("ids", type_=postgresql.ARRAY(Text))
                match = values.c.session_id == func.any(ids)
            else:
                match = values.c.session_id.in_([bindparam(f"id{i}") for i in range(count)])
            columns = [values.c.session_id, values.c.key, values.c.value]
            if with_hashes:
                columns.append(values.c.value_hash)
            return select(*columns).where(match, live(values, self.now))

        return self._compiled(("many", 0 if self.arrays else count, with_hashes), build)
