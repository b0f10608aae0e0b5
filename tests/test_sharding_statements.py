"""docs/scaling.md's list of single-shard and fan-out statements, held against the code.

With ``session_id`` as the distribution key (Citus, YugabyteDB; CockroachDB's
ranges start with it), a statement stays on one shard when every table it touches
is constrained to one session: ``session_id = $session_id`` in its WHERE or join,
or the inserted row's ``session_id`` being that parameter. This test builds every
statement the store emits, for PostgreSQL (the dialect those engines speak): each
statement-building method of :class:`Statements` and :class:`QuerySQL`, with
several sizes, and queries of every filter shape. It reads each statement's
SQLAlchemy tree and sorts it into one of three kinds:

* ``one session``: every table it touches is pinned to the one parameter
  ``session_id`` by equality (in a conjunct, never under OR/NOT): a single shard;
* ``listed sessions``: every table it touches is constrained to session ids the
  caller passed (``= ANY($ids)``, ``IN ($id0, ...)``, rows of ``unnest($ids)``):
  the shards holding those ids;
* ``every shard``: some table is read by key and value, or whole: a fan-out.

The kind must be the one the table "Every statement, by shard" in
docs/scaling.md gives, in both directions: a new statement is refused until it
is listed there, and a single-session statement that starts to fan out fails.
"""

from __future__ import annotations

import contextlib
import inspect
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import FromClause, Table
from sqlalchemy.sql import ClauseElement, Executable, operators, visitors
from sqlalchemy.sql.dml import Delete, Insert, Update
from sqlalchemy.sql.elements import (
    BinaryExpression,
    BindParameter,
    BooleanClauseList,
    ClauseList,
    ColumnElement,
    Grouping,
)
from sqlalchemy.sql.functions import Function
from sqlalchemy.sql.selectable import Alias, Join, Select, TableValuedAlias

from sessionmeta import SessionMeta, all_of, any_of
from sessionmeta import field as meta_field
from sessionmeta.core.codec import encode_model
from sessionmeta.core.filters import FilterArg
from sessionmeta.core.plan import encode_cursor, plan_query
from sessionmeta.core.spec import ModelSpec
from sessionmeta.sql.dialects import backend_named
from sessionmeta.sql.plans import BROAD, QuerySQL
from sessionmeta.sql.schema import Tables, add_messages_table, build_tables
from sessionmeta.sql.statements import CompiledStatement, Statements, statements_for
from sessionmeta.sql.sweep import delete_chosen, expired_batch, sweep_in_one

DOC = Path(__file__).resolve().parent.parent / "docs" / "scaling.md"
SECTION = "## Every statement, by shard"
KINDS = ("one session", "listed sessions", "every shard")
MESSAGES = "agent_messages"
# The dialect Citus, YugabyteDB and CockroachDB speak.
PG = backend_named("postgresql").ddl_dialect()


class Meta(SessionMeta):
    owner_id: str | None = None
    title: str | None = None
    priority: int | None = None
    tags: list[str] | None = None


# --- Reading a statement's tree -----------------------------------------------------


def _conjuncts(clause: Any) -> Iterator[ClauseElement]:
    """The parts of ``clause`` that must all hold (AND's operands, recursively)."""
    if clause is None:
        return
    if isinstance(clause, Grouping):
        yield from _conjuncts(clause.element)
    elif isinstance(clause, BooleanClauseList) and clause.operator is operators.and_:
        parts: list[Any] = list(clause.clauses)
        for part in parts:
            yield from _conjuncts(part)
    else:
        yield clause


def _parameters(element: Any) -> set[str] | None:
    """The parameters ``element`` is made of when it is only parameters, else None."""
    if isinstance(element, BindParameter):
        return {element.key}
    if isinstance(element, Grouping):
        return _parameters(element.element)
    if isinstance(element, Function):
        return _parameters(element.clauses)
    if isinstance(element, ClauseList):
        names: set[str] = set()
        for part in element.clauses:
            found = _parameters(part)
            if found is None:
                return None
            names |= found
        return names
    return None


def _array_function(element: Any) -> bool:
    """``any($ids)``: one of the session ids in an array parameter."""
    return isinstance(element, Function) and element.name == "any" and bool(_parameters(element))


@dataclass
class Pins:
    """What each column of a statement is held to, from its conjuncts."""

    # Column -> names of the parameters it equals (one session each).
    single: dict[Any, set[str]] = field(default_factory=dict)
    # Columns held to a list of parameters: IN ($a, $b), = ANY($ids), unnest($ids) rows.
    listed: set[Any] = field(default_factory=set)
    # Column = column, for carrying a pin across a join.
    equal: list[tuple[Any, Any]] = field(default_factory=list)

    def add(self, clause: ClauseElement) -> None:
        if not isinstance(clause, BinaryExpression):
            return
        left, right = clause.left, clause.right
        if clause.operator is operators.in_op:
            if isinstance(left, ColumnElement) and _in_parameters(right):
                self.listed.add(left)
            return
        if clause.operator is not operators.eq:
            return
        for one, other in ((left, right), (right, left)):
            names = _parameters(other) if isinstance(other, BindParameter) else None
            if names is not None:
                self.single.setdefault(one, set()).update(names)
            elif _array_function(other) or _from_parameters(other):
                self.listed.add(one)
        if _is_column(left) and _is_column(right):
            self.equal.append((left, right))

    def settle(self) -> None:
        """Carry pins across column equalities until nothing changes."""
        changed = True
        while changed:
            changed = False
            for left, right in self.equal:
                for one, other in ((left, right), (right, left)):
                    if one in self.single and not self.single[one] <= self.single.get(other, set()):
                        self.single.setdefault(other, set()).update(self.single[one])
                        changed = True
                    if one in self.listed and other not in self.listed:
                        self.listed.add(other)
                        changed = True

    def of(self, column: Any) -> tuple[str, set[str]]:
        """``("one", names)``, ``("listed", set())`` or ``("none", set())`` for ``column``."""
        if column in self.single:
            return "one", self.single[column]
        if column in self.listed or _from_parameters(column):
            return "listed", set()
        return "none", set()


def _is_column(element: Any) -> bool:
    return isinstance(element, ColumnElement) and hasattr(element, "table")


def _in_parameters(element: Any) -> bool:
    clauses = getattr(element, "clauses", None)
    if clauses is None and isinstance(element, Grouping):
        clauses = getattr(element.element, "clauses", None)
    if isinstance(element, BindParameter):
        return True  # an expanding IN parameter
    return clauses is not None and all(isinstance(part, BindParameter) for part in clauses)


def _from_parameters(element: Any) -> bool:
    """A column of ``unnest($array, ...)``: rows the caller passed."""
    table = getattr(element, "table", None)
    return isinstance(table, TableValuedAlias) and bool(_parameters(table.element))


@dataclass
class Touch:
    """One table a statement reads or writes, and what its ``session_id`` is held to there:
    ``("one", parameter names)``, ``("listed", ...)`` or ``("none", ...)``."""

    table: str
    how: str
    held: tuple[str, set[str]]


def _ours(source: FromClause, tables: set[str]) -> Table | Alias | None:
    if isinstance(source, Table) and source.name in tables:
        return source
    if isinstance(source, Alias) and isinstance(source.element, Table):
        return source if source.element.name in tables else None
    return None


def _froms(source: FromClause, pins: Pins) -> Iterator[FromClause]:
    """The tables of a FROM item, their join conditions added to ``pins``."""
    if isinstance(source, Join):
        for part in _conjuncts(source.onclause):
            pins.add(part)
        yield from _froms(source.left, pins)
        yield from _froms(source.right, pins)
    else:
        yield source


def analyse(statement: Executable, tables: set[str]) -> list[Touch]:
    """Every table ``statement`` touches, each judged by the conditions of its own
    SELECT, UPDATE or DELETE (its WHERE and its joins), never by another part's."""
    assert isinstance(statement, ClauseElement)
    touches: list[Touch] = []
    for element in visitors.iterate(statement):
        if isinstance(element, Select):
            pins = Pins()
            for part in _conjuncts(element.whereclause):
                pins.add(part)
            found = [
                table
                for source in element.get_final_froms()
                for leaf in _froms(source, pins)
                if (table := _ours(leaf, tables)) is not None
            ]
            pins.settle()
            touches.extend(
                Touch(_name(table), "read", pins.of(table.c.session_id)) for table in found
            )
        elif isinstance(element, (Update, Delete)):
            pins = Pins()
            for part in _conjuncts(element.whereclause):
                pins.add(part)
            pins.settle()
            table = _ours(element.table, tables)
            assert table is not None, f"a write to a table not known here: {element.table}"
            touches.append(Touch(_name(table), "written", pins.of(table.c.session_id)))
        elif isinstance(element, Insert):
            table = _ours(element.table, tables)
            assert table is not None, f"an insert into a table not known here: {element.table}"
            for value in _inserted_session_ids(element):
                held = Pins().of(value)
                if isinstance(value, BindParameter):
                    held = ("one", {value.key})
                touches.append(Touch(_name(table), "inserted", held))
    return touches


def _inserted_session_ids(insert: Insert) -> list[Any]:
    """What an INSERT puts in ``session_id``, for each of its rows.

    (SQLAlchemy keeps an INSERT's values and its INSERT ... SELECT column names in
    attributes without a public reader; pinned here, as test_private_apis.py pins the
    store's one private call.)
    """
    if insert.select is not None:
        names = list(insert._select_names or ())
        return [insert.select.selected_columns[names.index("session_id")]]
    rows = [dict(insert._values or {})] if insert._values else []
    for multi in insert._multi_values:
        rows.extend(dict(row) for row in multi)
    found: list[Any] = []
    for row in rows:
        found.extend(
            value for key, value in row.items() if getattr(key, "key", key) == "session_id"
        )
    return found


def _name(table: Table | Alias) -> str:
    element = table.element if isinstance(table, Alias) else table
    assert isinstance(element, Table)
    return element.name


def kind_of(statement: Executable, tables: set[str]) -> tuple[str, list[str]]:
    """The statement's kind, and why (the touches that make it so)."""
    touches = analyse(statement, tables)
    assert touches, "a statement that touches none of the tables"
    free = [f"{touch.table} ({touch.how})" for touch in touches if touch.held[0] == "none"]
    if free:
        return "every shard", free
    names = set().union(*(touch.held[1] for touch in touches))
    if all(touch.held[0] == "one" for touch in touches) and names == {"session_id"}:
        return "one session", []
    return "listed sessions", [f"session_id held to {sorted(names) or 'a list'}"]


# --- Every statement the store emits --------------------------------------------------


class CapturedStatements(Statements):
    """The store's statements, keeping each SQLAlchemy statement as it is compiled."""

    seen: dict[str, list[Executable]]

    def compiled(self, name: str, count: int, build: Callable[[], Executable]) -> CompiledStatement:
        built = build()
        self.seen.setdefault(name.split(":")[0], []).append(built)
        return super().compiled(name, count, lambda: built)

    def compiled_rows(
        self, name: str, count: int, build: Callable[[int], Executable]
    ) -> CompiledStatement:
        built = build(count)
        self.seen.setdefault(name.split(":")[0], []).append(built)
        return super().compiled_rows(name, count, build)


class CapturedQueries(QuerySQL):
    """Query plans' SQL, keeping each SQLAlchemy statement (named by its method)."""

    seen: dict[str, list[Executable]]

    def _compiled(self, cache_key: tuple[Any, ...], build: Callable[[], Any]) -> CompiledStatement:
        built = build()
        self.seen.setdefault(str(cache_key[0]), []).append(built)
        return super()._compiled(cache_key, lambda: built)


def _tables() -> Tables:
    tables = build_tables("agent_sessions", "agent_sessions_metadata")
    add_messages_table(tables, MESSAGES)
    return tables


def _rows(spec: ModelSpec[Meta], values: dict[str, Any]) -> Any:
    return encode_model(spec, spec.validate_values(values))


def statement_calls(spec: ModelSpec[Meta]) -> dict[str, list[Callable[[Statements], object]]]:
    """How the test calls each statement-building method of Statements: every size class."""
    listy = _rows(spec, {"owner_id": "u", "tags": ["a", "b"]})
    many = {f"s{i}": listy for i in range(5)}
    return {
        "insert_session": [lambda s: s.insert_session()],
        "upsert": [lambda s: s.upsert(1), lambda s: s.upsert(5)],
        "delete_items": [lambda s: s.delete_items(1), lambda s: s.delete_items(3)],
        "insert_items": [lambda s: s.insert_items(1), lambda s: s.insert_items(5)],
        "select_values": [lambda s: s.select_values(None), lambda s: s.select_values(2)],
        "delete_values": [lambda s: s.delete_values(None), lambda s: s.delete_values(2)],
        "find_equal": [lambda s: s.find_equal()],
        "session_rows": [lambda s: s.session_rows()],
        "delete_history": [lambda s: s.delete_history(MESSAGES)],
        "history_end": [lambda s: s.history_end(MESSAGES)],
        "append_history": [lambda s: s.append_history(MESSAGES)],
        "touch_session": [lambda s: s.touch_session()],
        "session_exists": [lambda s: s.session_exists()],
        "lock_session": [lambda s: s.lock_session()],
        "lock_rows": [lambda s: s.lock_rows()],
        "lock_sessions": [lambda s: s.lock_sessions(1), lambda s: s.lock_sessions(5)],
        "scan": [lambda s: s.scan(100, after=False), lambda s: s.scan(100, after=True)],
        "rehash": [lambda s: s.rehash()],
        "reseal": [lambda s: s.reseal()],
        "count_rows": [lambda s: s.count_rows()],
        "upsert_many": [lambda s: s.upsert_many(1), lambda s: s.upsert_many(5)],
        "insert_sessions": [lambda s: s.insert_sessions(1), lambda s: s.insert_sessions(5)],
        "delete_key_items": [lambda s: s.delete_key_items(1), lambda s: s.delete_key_items(5)],
        "delete_values_many": [
            lambda s: s.delete_values_many(1, None),
            lambda s: s.delete_values_many(5, 2),
        ],
        "write_many": [lambda s: s.write_many(many)],
        "delete_one": [lambda s: s.delete_one("s0", None), lambda s: s.delete_one("s0", ["tags"])],
        "release_claims": [lambda s: s.release_claims(1, 1), lambda s: s.release_claims(5, 2)],
        "claim_values": [
            lambda s: s.claim_values(1, scoped=False),
            lambda s: s.claim_values(5, scoped=True),
        ],
        "claim_holder": [lambda s: s.claim_holder()],
        "release_stale_claim": [lambda s: s.release_stale_claim()],
        "delete_many": [
            lambda s: s.delete_many(list(many), None),
            lambda s: s.delete_many(list(many), ["tags"]),
        ],
        # sessionmeta.sql.sweep: PostgreSQL runs the first; the others show their shape.
        "sweep": [
            sweep_in_one,
            expired_batch,
            lambda s: delete_chosen(s, [("s0", "title"), ("s1", "tags"), ("s1", "title")]),
        ],
    }


QUERY_FILTERS: list[list[FilterArg]] = [
    [],
    [{"owner_id": "u1"}],
    [meta_field("owner_id") != "u1"],
    [meta_field("owner_id").is_in(["u1", "u2"])],
    [meta_field("owner_id").not_in(["u1", "u2"])],
    [meta_field("priority") >= 2],
    [meta_field("priority") > 2, meta_field("priority") < 9],
    [meta_field("tags").contains("a")],
    [any_of(meta_field("tags").contains("a"), meta_field("tags").contains("b"))],
    [meta_field("title").exists()],
    [meta_field("title").missing()],
    [any_of({"owner_id": "u1"}, {"owner_id": "u2"})],
    [{"owner_id": "u1"}, any_of(meta_field("priority") > 3, all_of(meta_field("title").missing()))],
]
QUERY_ORDERS = ["session_id", "-created_at", "updated_at", "priority", "-title"]


def query_statements(spec: ModelSpec[Meta], sql: CapturedQueries) -> None:
    """Every query shape: each filter with each order as find (ids), count and listing,
    and once more scoped and after a cursor; and bulk reads of several sizes."""
    for filters in QUERY_FILTERS:
        for order_by in QUERY_ORDERS:
            plan = plan_query(spec, filters, order_by=order_by, arrays=True)
            sql.ids(plan)
            sql.count(plan)
            sql.listing(plan, tuple(spec.fields))
            if sql.parts(plan) is None:
                sql.breadth(plan)
            # A broad filter's statements, ordered by a metadata key (QuerySQL.parts).
            for part in sql.parts(plan, BROAD) or ():
                sql.ids(plan, part)
                sql.listing(plan, tuple(spec.fields), part)
        first = plan_query(spec, filters, order_by="-title", arrays=True)
        cursor = encode_cursor(first.order, "x", "s")
        scope = {"owner_id": "u9"}
        after = plan_query(
            spec, filters, order_by="-title", cursor=cursor, arrays=True, scope=scope
        )
        sql.ids(after)
        sql.listing(after)  # an open model's listing: every key
        sql.ids(after, "held")
        sql.ids(after, "blank")
        sql.count(plan_query(spec, filters, arrays=True, scope=scope))
    for count in (1, 7):
        sql.many(count)
        sql.many(count, with_hashes=True)


def builders(cls: type) -> set[str]:
    """The public methods of ``cls`` that build statements (return one or a batch)."""
    return {
        name
        for name, function in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_")
        and name not in ("compiled", "compiled_rows")
        and function.__annotations__.get("return") in ("CompiledStatement", "Batch")
    }


def emitted() -> dict[str, list[Executable]]:
    """Every statement the store emits on PostgreSQL, by name, in all its shapes."""
    tables = _tables()
    spec = ModelSpec(Meta)
    base = statements_for(PG, tables)
    statements = CapturedStatements(base.dialect, base.backend, base.spelling)
    statements.seen = {}
    calls = statement_calls(spec)
    missing = builders(Statements) - set(calls)
    assert not missing, (
        f"Statements.{', '.join(sorted(missing))}: new statements. Say in docs/scaling.md "
        f"({SECTION!r}) which shards each touches, and build them in statement_calls() here"
    )
    for method_calls in calls.values():
        for call in method_calls:
            # NotImplementedError: not a statement PostgreSQL runs (its upserts create sessions).
            with contextlib.suppress(NotImplementedError):
                call(statements)
    queries = CapturedQueries(PG, tables)
    queries.seen = {}
    assert builders(QuerySQL) == {"ids", "count", "listing", "many", "breadth"}, (
        "QuerySQL builds a new statement: list it in docs/scaling.md and build it here"
    )
    query_statements(spec, queries)
    found = dict(statements.seen)
    for name, built in queries.seen.items():
        found[f"QuerySQL.{name}"] = built
    return found


def documented() -> dict[str, str]:
    """docs/scaling.md's table: statement name -> kind."""
    text = DOC.read_text(encoding="utf-8")
    assert SECTION in text, f"docs/scaling.md has no section {SECTION!r}"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    table: dict[str, str] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        match = re.fullmatch(r"`([\w.]+)`", cells[0]) if len(cells) >= 3 else None
        if match is None:
            continue
        kind = cells[-1].strip("*")
        assert kind in KINDS, f"docs/scaling.md: {match[1]} is {kind!r}, not one of {KINDS}"
        assert match[1] not in table, f"docs/scaling.md lists {match[1]} twice"
        table[match[1]] = kind
    return table


STATEMENTS = emitted()
TABLE_NAMES = {table.name for table in _tables().metadata.tables.values()}


def test_every_statement_is_in_the_documented_list_and_no_other() -> None:
    listed = documented()
    assert set(STATEMENTS) - set(listed) == set(), "statements missing from docs/scaling.md"
    assert set(listed) - set(STATEMENTS) == set(), "docs/scaling.md lists statements not emitted"


@pytest.mark.parametrize("name", sorted(STATEMENTS))
def test_each_statement_touches_the_shards_the_documentation_says(name: str) -> None:
    expected = documented()[name]
    for statement in STATEMENTS[name]:
        kind, why = kind_of(statement, TABLE_NAMES)
        if kind != expected:
            assert isinstance(statement, ClauseElement)
            pytest.fail(
                f"{name} is documented as {expected!r} but is {kind!r} ({'; '.join(why)}):\n"
                f"{statement.compile(dialect=PG)}"
            )


def test_the_reading_of_statements_tells_the_kinds_apart() -> None:
    """The analysis itself: a statement of each kind, and the traps (OR, a join, IN)."""
    tables = _tables()
    values, sessions = tables.values, tables.sessions
    from sqlalchemy import bindparam, delete, or_, select

    one = select(values.c.key).where(values.c.session_id == bindparam("session_id"))
    assert kind_of(one, TABLE_NAMES)[0] == "one session"
    joined = (
        select(values.c.key)
        .select_from(values.join(sessions, sessions.c.session_id == values.c.session_id))
        .where(sessions.c.session_id == bindparam("session_id"))
    )
    assert kind_of(joined, TABLE_NAMES)[0] == "one session"
    unjoined = select(values.c.key, sessions.c.created_at).where(
        sessions.c.session_id == bindparam("session_id")
    )
    assert kind_of(unjoined, TABLE_NAMES)[0] == "every shard"  # values is read whole
    either = select(values.c.key).where(
        or_(values.c.session_id == bindparam("session_id"), values.c.key == bindparam("key"))
    )
    assert kind_of(either, TABLE_NAMES)[0] == "every shard"
    two = select(values.c.key).where(
        values.c.session_id == bindparam("a"), values.c.key == bindparam("key")
    )
    assert kind_of(two, TABLE_NAMES)[0] == "listed sessions"  # not the session_id parameter
    listed = delete(values).where(values.c.session_id.in_([bindparam("id0"), bindparam("id1")]))
    assert kind_of(listed, TABLE_NAMES)[0] == "listed sessions"
    by_key = select(values.c.session_id).where(values.c.key == bindparam("key"))
    assert kind_of(by_key, TABLE_NAMES)[0] == "every shard"
