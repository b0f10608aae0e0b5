"""Every single-field filter is served by an index, read from the query plan.

Over 100,000 sessions (400,000 metadata rows, 200,000 list elements) loaded in
bulk, each operator's find, count and listing statement is explained by the
database itself (``EXPLAIN`` on PostgreSQL and MariaDB, ``EXPLAIN QUERY PLAN`` on
SQLite). The metadata and items tables must only be read through an index; the
sessions table may be scanned only by negative conditions, which are decided
for every session by definition (each probe is an index lookup).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from sessionmeta import Filter, MetadataStore, SessionMeta, any_of, field
from sessionmeta.core.codec import equality_hash, item_hashes, json_text, sort_key

pytestmark = pytest.mark.slow

SESSIONS = 100_000
OWNERS = 1_000


class Meta(SessionMeta):
    owner_id: str | None = None
    priority: int | None = None
    title: str | None = None
    tags: list[str] | None = None
    incognito: bool | None = None


def session_rows() -> Iterator[tuple[str, list[tuple[str, Any, str]], tuple[str, ...]]]:
    """Each session's id, its (key, python value, json text) values and its tag items."""
    for index in range(SESSIONS):
        tags = [f"t{index % 500}", f"g{index % 7}"]
        values: list[tuple[str, Any, str]] = [
            ("owner_id", f"u{index % OWNERS}", json_text(f"u{index % OWNERS}")),
            ("priority", index % 1000, str(index % 1000)),
            ("title", f"title {index}", json_text(f"title {index}")),
            ("tags", tags, json_text(tags)),
        ]
        # One session in a thousand: at one in a hundred, PostgreSQL's costs put a walk of
        # the primary key in id order (a page of 51 then reads about 5,100 sessions) level
        # with the key's index and a sort, and the plan flipped between runs.
        if index % 1000 == 0:
            values.append(("incognito", True, "true"))
        yield f"s{index:06d}", values, item_hashes(tags)


def bulk_rows() -> tuple[list[tuple[str]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    sessions: list[tuple[str]] = []
    values: list[tuple[Any, ...]] = []
    items: list[tuple[Any, ...]] = []
    for session_id, session_values, tag_items in session_rows():
        sessions.append((session_id,))
        for key, python_value, encoded in session_values:
            hashed = equality_hash(python_value)
            values.append((session_id, key, encoded, hashed, sort_key(python_value)))
            if key == "tags":
                items.extend((session_id, key, hashed, item) for item in tag_items)
    return sessions, values, items


async def load(engine: AsyncEngine) -> None:
    sessions, values, items = bulk_rows()
    value_columns = ("session_id", "key", "value", "value_hash", "sort_key")
    item_columns = ("session_id", "key", "value_hash", "item_hash")
    async with engine.connect() as connection:
        raw = (await connection.get_raw_connection()).driver_connection
        name = engine.dialect.name
        if name == "postgresql":
            assert raw is not None
            await raw.copy_records_to_table(
                "agent_sessions", records=sessions, columns=["session_id"]
            )
            await raw.copy_records_to_table(
                "agent_sessions_metadata", records=values, columns=value_columns
            )
            await raw.copy_records_to_table(
                "agent_sessions_metadata_items", records=items, columns=item_columns
            )
            await raw.execute("VACUUM ANALYZE")
            return
        if name == "sqlite":
            assert raw is not None
            await raw.executemany("INSERT INTO agent_sessions (session_id) VALUES (?)", sessions)
            await raw.executemany(
                "INSERT INTO agent_sessions_metadata "
                "(session_id, key, value, value_hash, sort_key) VALUES (?, ?, ?, ?, ?)",
                values,
            )
            await raw.executemany(
                "INSERT INTO agent_sessions_metadata_items VALUES (?, ?, ?, ?)", items
            )
            await raw.commit()
            await raw.execute("ANALYZE")
            await raw.commit()
            return
        assert raw is not None
        async with raw.cursor() as cursor:
            await cursor.execute("SET foreign_key_checks = 0")
            # aiomysql sends executemany of an INSERT as multi-row statements.
            await cursor.executemany(
                "INSERT INTO agent_sessions (session_id) VALUES (%s)", sessions
            )
            await cursor.executemany(
                "INSERT INTO agent_sessions_metadata "
                "(session_id, `key`, value, value_hash, sort_key) VALUES (%s, %s, %s, %s, %s)",
                values,
            )
            await cursor.executemany(
                "INSERT INTO agent_sessions_metadata_items VALUES (%s, %s, %s, %s)", items
            )
            await cursor.execute("SET foreign_key_checks = 1")
            await raw.commit()
            await cursor.execute(
                "ANALYZE TABLE agent_sessions, agent_sessions_metadata, "
                "agent_sessions_metadata_items"
            )
            await cursor.fetchall()


# One selective condition per operator (a tenant's 100 sessions, 1% of priorities...).
CONDITIONS: dict[str, Filter] = {
    "eq": field("owner_id") == "u42",
    "ne": field("owner_id") != "u42",
    "in": field("owner_id").is_in(["u1", "u2", "u3"]),
    "not_in": field("owner_id").not_in(["u1", "u2", "u3"]),
    "gt": field("priority") > 990,
    "ge": field("priority") >= 990,
    "lt": field("priority") < 10,
    "le": field("priority") <= 10,
    "contains": field("tags").contains("t7"),
    "exists": field("incognito").exists(),
    "missing": field("incognito").missing(),
    # Not a single field, but it must not test every session either: a union of ranges.
    "or": any_of(field("owner_id") == "u1", field("tags").contains("t7")),
}
EXPECTED_COUNTS = {
    "eq": 100,
    "ne": SESSIONS - 100,
    "in": 300,
    "not_in": SESSIONS - 300,
    "gt": 900,
    "ge": 1000,
    "lt": 1000,
    "le": 1100,
    "contains": 200,
    "exists": SESSIONS // 1000,
    "missing": SESSIONS - SESSIONS // 1000,
    "or": 300,
}
NEGATIVE = {"ne", "not_in", "missing"}
INDEXED_TABLES = ("agent_sessions_metadata", "agent_sessions_metadata_items")
KEY_HASH = "idx_agent_sessions_metadata_key_hash"
KEY_SORT = "idx_agent_sessions_metadata_key_sort"
ITEMS = "ix_agent_sessions_metadata_items"
# The index a positive condition must be answered from (not, say, a walk of the
# primary key in id order that filters each row).
EXPECTED_INDEX: dict[str, tuple[str, ...]] = {
    "eq": (KEY_HASH,),
    "in": (KEY_HASH,),
    "gt": (KEY_SORT,),
    "ge": (KEY_SORT,),
    "lt": (KEY_SORT,),
    "le": (KEY_SORT,),
    "contains": (ITEMS,),
    "exists": (KEY_HASH, KEY_SORT),
    "or": (ITEMS,),
}


async def explain(engine: AsyncEngine, sql: str, args: Sequence[Any]) -> Any:
    async with engine.connect() as connection:
        raw = (await connection.get_raw_connection()).driver_connection
        assert raw is not None
        name = engine.dialect.name
        if name == "postgresql":
            rows = await raw.fetch("EXPLAIN (FORMAT JSON) " + sql, *args)
            document = rows[0][0]
            # SQLAlchemy's asyncpg connections decode JSON already.
            return (json.loads(document) if isinstance(document, str) else document)[0]["Plan"]
        if name == "sqlite":
            return [row[3] for row in await raw.execute_fetchall("EXPLAIN QUERY PLAN " + sql, args)]
        async with raw.cursor() as cursor:
            await cursor.execute("EXPLAIN " + sql, tuple(args))
            names = [column[0] for column in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in await cursor.fetchall()]


def postgres_problems(plan: dict[str, Any], negative: bool) -> list[str]:
    problems: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        relation = node.get("Relation Name")
        if node["Node Type"] == "Seq Scan" and (relation in INDEXED_TABLES or not negative):
            problems.append(f"sequential scan of {relation}")
        for child in node.get("Plans", []):
            walk(child)

    walk(plan)
    return problems


def sqlite_problems(details: list[str], negative: bool) -> list[str]:
    problems: list[str] = []
    for detail in details:
        scanned = re.match(r"SCAN (\S+)", detail)
        if scanned is None:
            continue
        table = scanned.group(1)
        if table in ("page", "u"):
            continue  # the listing's page of ids, or the union of an OR's index ranges
        if re.fullmatch(r"[mio]\d*|v|agent_sessions_metadata\w*", table) or not negative:
            problems.append(detail)
    return problems


def mysql_problems(rows: list[dict[str, Any]], negative: bool) -> list[str]:
    problems: list[str] = []
    for row in rows:
        table = str(row["table"])
        if table.startswith("<") or table in ("page", "u"):
            continue  # a materialized subquery or derived table, filled by the rows below
        full_scan = row["type"] in ("ALL", "index") or row["key"] is None
        is_metadata = re.fullmatch(r"[mio]\d*|v", table) is not None
        if full_scan and (is_metadata or not negative):
            problems.append(f"{table}: type={row['type']} key={row['key']}")
    return problems


def indexes_used(engine: AsyncEngine, plan: Any) -> set[str]:
    name = engine.dialect.name
    if name == "postgresql":
        found: set[str] = set()

        def walk(node: dict[str, Any]) -> None:
            if "Index Name" in node:
                found.add(node["Index Name"])
            for child in node.get("Plans", []):
                walk(child)

        walk(plan)
        return found
    if name == "sqlite":
        return {
            match.group(1)
            for detail in plan
            if (match := re.search(r"USING (?:COVERING )?INDEX (\w+)", detail))
        }
    return {str(row["key"]) for row in plan if row["key"]}


def problems_of(engine: AsyncEngine, plan: Any, negative: bool) -> list[str]:
    name = engine.dialect.name
    if name == "postgresql":
        return postgres_problems(plan, negative)
    if name == "sqlite":
        return sqlite_problems(plan, negative)
    return mysql_problems(plan, negative)


async def test_every_single_field_filter_is_served_by_an_index(engine: AsyncEngine) -> None:
    store = MetadataStore(Meta, engine, create_tables=True)
    await store.create_tables()
    await load(engine)
    search = store.search
    failures: dict[str, Any] = {}
    for op, condition in CONDITIONS.items():
        assert await store.count_sessions(condition) == EXPECTED_COUNTS[op], op
        page = await store.find_sessions(condition, limit=100)
        assert len(page) == min(100, EXPECTED_COUNTS[op]), op
        plan = search.plan([condition], "session_id", None, None)
        statements = {
            "find": search.sql.ids(plan),
            "count": search.sql.count(plan),
            "list": search.sql.listing(plan),
        }
        for kind, statement in statements.items():
            args = statement.args({**plan.params, "limit": 51})
            assert isinstance(args, list)  # every driver here takes positional parameters
            explained = await explain(engine, statement.sql, args)
            problems = problems_of(engine, explained, op in NEGATIVE)
            if op in EXPECTED_INDEX and not set(EXPECTED_INDEX[op]) & indexes_used(
                engine, explained
            ):
                problems.append(f"none of {EXPECTED_INDEX[op]} is used")
            if problems:
                failures[f"{op} {kind}"] = (problems, explained)
    assert not failures, json.dumps(failures, indent=1, default=str)[:20_000]


def sorts_the_matches(engine: AsyncEngine, plan: Any) -> bool:
    """Whether the plan sorts rows (and so reads every match first) rather than reading
    an index in order."""
    name = engine.dialect.name
    if name == "postgresql":

        def sorts(node: dict[str, Any]) -> bool:
            return "Sort" in node["Node Type"] or any(
                sorts(child) for child in node.get("Plans", [])
            )

        return sorts(plan)
    if name == "sqlite":
        return any("TEMP B-TREE FOR ORDER BY" in detail for detail in plan)
    return any("filesort" in str(row.get("Extra") or "") for row in plan)


# Ordered by another key than the filter's: a broad filter (one session in seven) walks
# the order key's index and tests each session; a narrow one (an owner's 100 sessions)
# gathers its matches from its own index and sorts them.
ORDERED_PAGES: dict[str, tuple[Filter, int, bool]] = {
    "broad contains": (field("tags").contains("g3"), SESSIONS // 7, True),
    "broad range": (field("priority") >= 100, SESSIONS * 9 // 10, True),
    "narrow eq": (field("owner_id") == "u42", 100, False),
    "narrow contains": (field("tags").contains("t7"), 200, False),
}


async def test_a_page_ordered_by_a_key_walks_its_index_when_the_filter_is_broad(
    engine: AsyncEngine,
) -> None:
    store = MetadataStore(Meta, engine, create_tables=True)
    await store.create_tables()
    await load(engine)
    search = store.search
    failures: dict[str, Any] = {}
    for name, (condition, matches, broad) in ORDERED_PAGES.items():
        for order_by in ("-title", "title"):
            plan = search.plan([condition], order_by, None, None)
            breadth = await store.ops.query(search.sql.breadth(plan), plan.params)
            parts = search.sql.parts(plan, int(breadth[0][0]))
            assert parts is not None
            assert ("held" in parts) is broad, (name, order_by, breadth)
            # Every session has a title: the page comes from its first part alone.
            page = await store.find_sessions(condition, order_by=order_by, limit=50)
            assert len(page) == min(50, matches)
            statement = search.sql.ids(plan, parts[0] if order_by.startswith("-") else "held")
            if not broad:
                statement = search.sql.ids(plan)
            args = statement.args({**plan.params, "limit": 51})
            assert isinstance(args, list)
            explained = await explain(engine, statement.sql, args)
            problems = problems_of(engine, explained, False)
            if broad and KEY_SORT not in indexes_used(engine, explained):
                problems.append(f"{KEY_SORT} is not walked")
            if broad and sorts_the_matches(engine, explained):
                problems.append("the matches are sorted")
            if problems:
                failures[f"{name} {order_by}"] = (problems, explained)
    assert not failures, json.dumps(failures, indent=1, default=str)[:20_000]
