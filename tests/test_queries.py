"""Finding, ordering, paging, listing and counting sessions by metadata, on every backend."""

from __future__ import annotations

import asyncio
import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from sessionmeta import (
    Condition,
    MetadataStore,
    OrderBy,
    SessionMeta,
    StoredValueError,
    all_of,
    any_of,
    field,
)


class Meta(SessionMeta):
    owner_id: str | None = None
    title: str | None = None
    priority: int | None = None
    score: float | None = None
    amount: Decimal | None = None
    day: dt.date | None = None
    moment: dt.datetime | None = None
    tags: list[str] | None = None
    codes: set[int] | None = None
    note: str | None = None


@pytest.fixture
async def meta_store(engine: AsyncEngine) -> MetadataStore[Meta]:
    store = MetadataStore(Meta, engine, create_tables=True)
    await store.create_tables()
    return store


def utc(hours: float) -> dt.timezone:
    return dt.timezone(dt.timedelta(hours=hours))


async def fill(store: MetadataStore[Meta], rows: dict[str, dict[str, Any]]) -> None:
    for session_id, values in rows.items():
        await store.bind(session_id).set_metadata(values)


async def find(store: MetadataStore[Meta], *filters: Any, **kwargs: Any) -> list[str]:
    return list(await store.find_sessions(*filters, **kwargs))


async def test_every_operator_on_every_backend(meta_store: MetadataStore[Meta]) -> None:
    await fill(
        meta_store,
        {
            "a": {"owner_id": "u1", "priority": 9, "tags": ["work", "x"], "codes": {1, 2}},
            "b": {"owner_id": "u2", "priority": 10, "tags": ["home"], "note": None},
            "c": {"owner_id": "u1", "priority": 2, "tags": []},
            "d": {"title": "no owner, no priority"},
        },
    )
    store = meta_store
    assert await find(store, field("owner_id") == "u1") == ["a", "c"]
    # Negative conditions are per session; a session lacking the key matches them.
    assert await find(store, field("owner_id") != "u1") == ["b", "d"]
    assert await find(store, field("owner_id").is_in(["u2", "u9"])) == ["b"]
    assert await find(store, field("owner_id").not_in(["u2", "u9"])) == ["a", "c", "d"]
    # 9 < 10 in the value's own order, not text order.
    assert await find(store, field("priority") > 9) == ["b"]
    assert await find(store, field("priority") >= 9) == ["a", "b"]
    assert await find(store, field("priority") < 10) == ["a", "c"]
    assert await find(store, field("priority") <= 2) == ["c"]
    assert await find(store, field("tags").contains("work")) == ["a"]
    assert await find(store, field("codes").contains(2)) == ["a"]
    assert await find(store, field("codes").contains("2")) == ["a"]
    assert await find(store, field("tags").exists()) == ["a", "b", "c"]
    assert await find(store, field("note").exists()) == ["b"]
    assert await find(store, field("tags").missing()) == ["d"]
    assert await find(store, field("note") == None) == ["b"]  # noqa: E711 - a stored null
    # The same through Condition, as the command line builds them.
    assert await find(store, Condition("priority", "gt", 9)) == ["b"]
    assert await find(store, Condition("tags", "missing")) == ["d"]


async def test_and_or_groups(meta_store: MetadataStore[Meta]) -> None:
    await fill(
        meta_store,
        {
            "a": {"owner_id": "u1", "priority": 1, "tags": ["billing"]},
            "b": {"owner_id": "u1", "priority": 5, "tags": ["billing"]},
            "c": {"owner_id": "u2", "priority": 7},
            "d": {"owner_id": "u3"},
        },
    )
    store = meta_store
    billing_urgent = [field("tags").contains("billing"), field("priority") > 2]
    assert await find(store, *billing_urgent) == ["b"]
    assert await find(store, billing_urgent) == ["b"]
    either = any_of(field("owner_id") == "u2", field("priority") < 2)
    assert await find(store, either) == ["a", "c"]
    assert await find(store, either | (field("owner_id") == "u3")) == ["a", "c", "d"]
    assert await find(store, all_of(either, field("tags").missing())) == ["c"]
    assert await find(store, {"owner_id": "u1", "priority": 5}) == ["b"]
    assert await find(store, any_of()) == []
    assert await find(store) == ["a", "b", "c", "d"]
    assert await store.count_sessions() == 4
    assert await store.count_sessions(either) == 2
    assert await store.count_sessions(field("owner_id") != "u1") == 2
    assert await store.count_sessions(field("owner_id").is_in([])) == 0


async def test_ranges_on_numbers_dates_and_instants(meta_store: MetadataStore[Meta]) -> None:
    await fill(
        meta_store,
        {
            "neg": {"score": -1.5, "amount": Decimal("-10.25"), "day": dt.date(1999, 12, 31)},
            "zero": {"score": 0.0, "amount": Decimal("0"), "day": dt.date(2000, 1, 1)},
            "small": {"score": 0.25, "amount": Decimal("9.99"), "day": dt.date(2000, 1, 2)},
            "big": {"score": 1e20, "amount": Decimal("100.5"), "day": dt.date(2024, 2, 29)},
        },
    )
    store = meta_store
    assert await find(store, field("score") > 0) == ["big", "small"]
    assert await find(store, field("score") >= -1.5, field("score") < 1) == ["neg", "small", "zero"]
    assert await find(store, field("score") > -2, order_by="score") == [
        "neg",
        "zero",
        "small",
        "big",
    ]
    assert await find(store, field("amount") > Decimal("9.990")) == ["big"]
    assert await find(store, field("amount") >= 9.99) == ["big", "small"]
    assert await find(store, field("day") >= dt.date(2000, 1, 1), order_by="-day") == [
        "big",
        "small",
        "zero",
    ]
    # 10:00+02:00 is 08:00 UTC: before 09:00 UTC, whatever the offsets say as text.
    await fill(
        store,
        {
            "east": {"moment": dt.datetime(2024, 1, 1, 10, 0, tzinfo=utc(2))},
            "west": {"moment": dt.datetime(2024, 1, 1, 4, 30, tzinfo=utc(-4.5))},
            "utc": {"moment": dt.datetime(2024, 1, 1, 9, 0, tzinfo=utc(0))},
        },
    )
    nine = dt.datetime(2024, 1, 1, 9, 0, tzinfo=dt.timezone.utc)
    assert await find(store, field("moment") < nine) == ["east"]
    assert await find(store, field("moment") >= nine, order_by="-moment") == ["west", "utc"]
    # Equality is Python's: the same instant at another offset is equal.
    assert await find(store, field("moment") == dt.datetime(2024, 1, 1, 9, 0, tzinfo=utc(0))) == [
        "utc",
        "west",
    ]
    assert await find(store, field("moment").exists(), field("moment") != nine) == ["east"]


async def test_contains_follows_rewrites_and_deletes(meta_store: MetadataStore[Meta]) -> None:
    store = meta_store
    session = store.bind("s")
    await session.set_metadata({"tags": ["a", "b", "a"]})
    assert await find(store, field("tags").contains("a")) == ["s"]
    await session.set_metadata({"tags": ["b", "c"]})
    assert await find(store, field("tags").contains("a")) == []
    assert await find(store, field("tags").contains("c")) == ["s"]
    await session.set_metadata({"tags": None})
    assert await find(store, field("tags").contains("b")) == []
    await session.set_metadata({"tags": ["b"], "owner_id": "u"})
    await session.delete_metadata(["tags"])
    assert await find(store, field("tags").contains("b")) == []
    await session.set_metadata({"tags": ["b"]})
    await session.delete_metadata()
    assert await find(store, field("tags").contains("b")) == []
    assert await store.bind("s").get_metadata() == Meta()


class Labels(SessionMeta):
    labels: set[str] | None = None


async def test_equal_sets_are_found_whatever_their_iteration_order(engine: AsyncEngine) -> None:
    store = MetadataStore(Labels, engine, create_tables=True)
    # A set that grew and shrank iterates in another order than a fresh one.
    grown = {f"label {index}" for index in range(200)}
    for index in range(3, 200):
        grown.discard(f"label {index}")
    fresh = {"label 2", "label 0", "label 1"}
    await store.bind("s").set_metadata({"labels": grown})
    assert await store.find_sessions(field("labels") == fresh) == ["s"]
    assert await store.find_sessions(field("labels").is_in([fresh])) == ["s"]
    async with engine.connect() as connection:
        rows = await connection.execute(text("SELECT value FROM agent_sessions_metadata"))
        stored = rows.scalar()
    assert stored == '["label 0","label 1","label 2"]'


async def test_contains_on_a_long_list(meta_store: MetadataStore[Meta]) -> None:
    await meta_store.bind("long").set_metadata({"codes": set(range(12_000))})
    await meta_store.bind("short").set_metadata({"codes": {5}})
    assert await find(meta_store, field("codes").contains(11_999)) == ["long"]
    assert await find(meta_store, field("codes").contains(5)) == ["long", "short"]
    await meta_store.bind("long").set_metadata({"codes": {1}})
    assert await find(meta_store, field("codes").contains(5)) == ["short"]


async def test_concurrent_list_writes_all_land_and_stay_findable(
    meta_store: MetadataStore[Meta],
) -> None:
    # Neighbouring sessions' elements share index pages: InnoDB deadlocks some of these
    # transactions, which must be retried rather than surface as errors.
    async def write(number: int) -> None:
        session = meta_store.bind(f"s{number % 4}")
        if number % 9 == 0:
            await session.delete_metadata()
        else:
            await session.set_metadata({"tags": [f"t{number}", "x"], "priority": number})

    await asyncio.gather(*(write(number) for number in range(80)))
    for number in range(4):
        read = await meta_store.bind(f"s{number}").get_metadata()
        if read.tags is not None:
            assert await find(meta_store, field("tags").contains(read.tags[0])) == [f"s{number}"]
    assert await meta_store.count_sessions(
        field("tags").contains("x")
    ) == await meta_store.count_sessions(field("tags").exists())


async def test_a_one_megabyte_string_is_stored_read_and_found(
    meta_store: MetadataStore[Meta],
) -> None:
    huge = "é" + "x" * (1024 * 1024)
    await meta_store.bind("big").set_metadata({"note": huge, "tags": [huge]})
    await meta_store.bind("other").set_metadata({"note": huge[:-1]})
    assert (await meta_store.bind("big").get_metadata()).note == huge
    assert await find(meta_store, field("note") == huge) == ["big"]
    assert await find(meta_store, field("note").is_in([huge, "y"])) == ["big"]
    assert await find(meta_store, field("tags").contains(huge)) == ["big"]
    listed = await meta_store.list_sessions(field("note") == huge)
    assert listed[0].metadata.note == huge


async def set_created(engine: AsyncEngine, session_id: str, moment: dt.datetime) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "UPDATE agent_sessions SET created_at = :moment, updated_at = :moment "
                "WHERE session_id = :sid"
            ),
            {"moment": moment, "sid": session_id},
        )


async def test_order_by_session_columns_and_metadata(
    meta_store: MetadataStore[Meta], engine: AsyncEngine
) -> None:
    store = meta_store
    base = dt.datetime(2024, 3, 1, 12, 0, 0)
    created = {"s1": 3, "s2": 1, "s3": 2, "s4": 2}
    priorities = {"s1": 10, "s2": 9, "s3": None, "s4": -1}
    for session_id, minutes in created.items():
        values: dict[str, Any] = {"owner_id": "u"}
        if priorities[session_id] is not None:
            values["priority"] = priorities[session_id]
        await store.bind(session_id).set_metadata(values)
        await set_created(engine, session_id, base + dt.timedelta(minutes=minutes))
    assert await find(store, order_by="created_at") == ["s2", "s3", "s4", "s1"]
    assert await find(store, order_by="-created_at") == ["s1", "s4", "s3", "s2"]
    assert await find(store, {"owner_id": "u"}, order_by="-updated_at") == ["s1", "s4", "s3", "s2"]
    # A session lacking the key sorts first ascending, last descending.
    assert await find(store, order_by="priority") == ["s3", "s4", "s2", "s1"]
    assert await find(store, order_by=field("priority").desc()) == ["s1", "s2", "s4", "s3"]
    assert await find(store, order_by=OrderBy("session_id", descending=True)) == [
        "s4",
        "s3",
        "s2",
        "s1",
    ]


@pytest.mark.parametrize(
    "order_by", ["session_id", "-session_id", "created_at", "-created_at", "priority", "-priority"]
)
@pytest.mark.parametrize(
    "where",
    [{"owner_id": "u"}, field("priority") >= 0],
    ids=["equality", "range"],
)
async def test_pages_neither_repeat_nor_skip_while_others_are_written(
    meta_store: MetadataStore[Meta], engine: AsyncEngine, order_by: str, where: Any
) -> None:
    store = meta_store
    base = dt.datetime(2024, 3, 1, 12, 0, 0)
    originals = [f"s{index:02d}" for index in range(23)]
    for index, session_id in enumerate(originals):
        await store.bind(session_id).set_metadata({"owner_id": "u", "priority": index % 4})
        # Ties in the sort value are many: the session id must break them.
        await set_created(engine, session_id, base + dt.timedelta(minutes=index % 5))
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = await store.find_sessions(where, order_by=order_by, limit=4, cursor=cursor)
        seen.extend(page)
        pages += 1
        # Between pages, new sessions sort before and after the cursor, and others change.
        for extra in (f"a{pages}", f"z{pages}"):
            await store.bind(extra).set_metadata({"owner_id": "u", "priority": pages % 4})
        await store.bind(originals[pages]).set_metadata({"title": f"touched {pages}"})
        cursor = page.next_cursor
        if cursor is None:
            break
    found = [session_id for session_id in seen if session_id in originals]
    assert sorted(found) == originals
    assert len(seen) == len(set(seen))
    if order_by.lstrip("-") == "session_id":
        assert found == sorted(originals, reverse=order_by.startswith("-"))


@pytest.mark.parametrize("order_by", ["priority", "-priority", "title", "-title"])
@pytest.mark.parametrize("where_id", ["equality", "contains", "and_ne", "none"])
async def test_pages_by_a_metadata_key_are_the_same_walked_or_gathered(
    meta_store: MetadataStore[Meta],
    monkeypatch: pytest.MonkeyPatch,
    order_by: str,
    where_id: str,
) -> None:
    # A broad filter walks the order key's index (held values, then the blank group:
    # sessions lacking the key, or holding null or ""); a narrow one sorts its matches.
    # With BROAD at 1 every filter here walks; at its default only "none" does.
    wheres: dict[str, list[Any]] = {
        "equality": [{"owner_id": "u"}],
        "contains": [field("tags").contains("t")],
        "and_ne": [{"owner_id": "u"}, field("note") != "skip"],
        "none": [],
    }
    where = wheres[where_id]
    store = meta_store
    stored: dict[str, dict[str, Any]] = {}
    for index in range(17):
        values: dict[str, Any] = {"owner_id": "u" if index % 5 else "v", "tags": ["t"]}
        if index % 4:
            values["priority"] = index % 3
            values["title"] = ["", "b", "a"][index % 3]
        elif index % 8:
            values["priority"] = None
            values["title"] = None
        if index == 6:
            values["note"] = "skip"
        stored[f"s{index:02d}"] = values
        await store.bind(f"s{index:02d}").set_metadata(values)

    def expected() -> list[str]:
        key = order_by.lstrip("-")
        matches = [
            session_id
            for session_id, values in stored.items()
            if (where_id not in ("equality", "and_ne") or values["owner_id"] == "u")
            and not (where_id == "and_ne" and values.get("note") == "skip")
        ]

        def sort_value(session_id: str) -> tuple[Any, ...]:
            value = stored[session_id].get(key)
            # Lacking the key, null and "" sort alike, first: ties in session id order.
            return (0, session_id) if value in (None, "") else (1, value, session_id)

        ordered = sorted(matches, key=sort_value)
        return ordered[::-1] if order_by.startswith("-") else ordered

    async def pages(limit: int, listed: bool) -> list[str]:
        seen: list[str] = []
        cursor = None
        while True:
            if listed:
                listing = await store.list_sessions(
                    *where, order_by=order_by, limit=limit, cursor=cursor
                )
                seen.extend(item.session_id for item in listing)
                cursor = listing.next_cursor
            else:
                page = await store.find_sessions(
                    *where, order_by=order_by, limit=limit, cursor=cursor
                )
                seen.extend(page)
                cursor = page.next_cursor
            if cursor is None:
                return seen

    gathered = await pages(100, listed=False)
    assert gathered == expected()
    monkeypatch.setattr("sessionmeta.sql.plans.BROAD", 1)
    walked = MetadataStore(Meta, store.engine)
    store = walked
    for limit in (1, 2, 3, 100):
        assert await pages(limit, listed=False) == gathered, limit
        assert await pages(limit, listed=True) == gathered, limit


async def test_list_sessions_returns_typed_metadata_in_pages(
    meta_store: MetadataStore[Meta],
) -> None:
    store = meta_store
    for index in range(7):
        await store.bind(f"s{index}").set_metadata(
            {"owner_id": "u1" if index % 2 else "u2", "priority": index, "tags": [str(index)]}
        )
    await store.bind("bare").set_metadata({"title": "t"})
    await store.bind("bare").delete_metadata()
    first = await store.list_sessions({"owner_id": "u1"}, order_by="-priority", limit=2)
    assert [(item.session_id, item.metadata.priority) for item in first] == [("s5", 5), ("s3", 3)]
    session_id, metadata = first[0]
    assert session_id == "s5"
    assert metadata == Meta(owner_id="u1", priority=5, tags=["5"])
    assert metadata.model_fields_set == {"owner_id", "priority", "tags"}
    second = await store.list_sessions(
        {"owner_id": "u1"}, order_by="-priority", limit=2, cursor=first.next_cursor
    )
    assert [item.session_id for item in second] == ["s1"]
    assert second.next_cursor is None
    # A session row with no metadata lists with the model's defaults.
    everything = await store.list_sessions(limit=100)
    assert everything[0].session_id == "bare"
    assert everything[0].metadata == Meta()
    assert len(everything) == 8


async def test_get_many_reads_every_session_in_one_call(meta_store: MetadataStore[Meta]) -> None:
    store = meta_store
    for index in range(5):
        await store.bind(f"s{index}").set_metadata({"priority": index})
    found = await store.get_many(["s3", "s1", "nope", "s3"])
    assert list(found) == ["s3", "s1", "nope"]
    assert found["s1"].priority == 1
    assert found["nope"] == Meta()
    assert await store.get_many([]) == {}
    many = await store.get_many([f"s{index}" for index in range(5)] + ["x1", "x2", "x3"])
    assert [many[f"s{index}"].priority for index in range(5)] == [0, 1, 2, 3, 4]
    with pytest.raises(TypeError):
        await store.get_many("s1")


async def test_listings_name_a_stored_value_that_no_longer_fits(
    meta_store: MetadataStore[Meta], engine: AsyncEngine
) -> None:
    for session_id in ("a", "b", "c"):
        await meta_store.bind(session_id).set_metadata({"owner_id": "u", "priority": 1})
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "UPDATE agent_sessions_metadata SET value = :bad WHERE session_id = 'b' AND "
                + ("`key`" if engine.dialect.name in ("mysql", "mariadb") else '"key"')
                + " = 'priority'"
            ),
            {"bad": '"not a number"'},
        )
        await connection.execute(
            text(
                "INSERT INTO agent_sessions_metadata (session_id, "
                + ("`key`" if engine.dialect.name in ("mysql", "mariadb") else '"key"')
                + ", value, value_hash) VALUES ('c', 'undeclared', '1', 'h')"
            )
        )
    with pytest.raises(StoredValueError) as info:
        await meta_store.list_sessions({"owner_id": "u"})
    assert (info.value.session_id, info.value.key) == ("b", "priority")
    with pytest.raises(StoredValueError):
        await meta_store.get_many(["a", "b"])
    lenient = MetadataStore(Meta, engine, on_invalid="default")
    listed = await lenient.list_sessions({"owner_id": "u"})
    assert [item.metadata.priority for item in listed] == [1, None, 1]
    assert listed[2].metadata.model_fields_set == {"owner_id", "priority"}
    assert (await lenient.get_many(["b"]))["b"].owner_id == "u"


async def test_listings_name_a_stored_text_that_is_not_json(
    meta_store: MetadataStore[Meta], engine: AsyncEngine
) -> None:
    # The listing pastes stored texts into one document without parsing them in SQL:
    # a text that is no JSON at all is named as a single read names it.
    for session_id in ("a", "b"):
        await meta_store.bind(session_id).set_metadata({"owner_id": "u", "priority": 1})
    key = "`key`" if engine.dialect.name in ("mysql", "mariadb") else '"key"'
    async with engine.begin() as connection:
        await connection.execute(
            text(
                f"UPDATE agent_sessions_metadata SET value = 'not json, {{' "
                f"WHERE session_id = 'b' AND {key} = 'priority'"
            )
        )
    with pytest.raises(StoredValueError) as info:
        await meta_store.list_sessions({"owner_id": "u"})
    assert (info.value.session_id, info.value.key) == ("b", "priority")
    lenient = MetadataStore(Meta, engine, on_invalid="default")
    listed = await lenient.list_sessions({"owner_id": "u"}, order_by="-created_at")
    assert sorted((item.session_id, item.metadata.priority) for item in listed) == [
        ("a", 1),
        ("b", None),
    ]


async def test_find_sessions_by_metadata_still_works(meta_store: MetadataStore[Meta]) -> None:
    await fill(meta_store, {"b": {"owner_id": "u"}, "a": {"owner_id": "u"}, "c": {"owner_id": "v"}})
    assert await meta_store.find_sessions_by_metadata("owner_id", "u") == ["a", "b"]
    assert await meta_store.find_sessions_by_metadata("owner_id", "u", limit=1) == ["a"]
