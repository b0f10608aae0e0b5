"""Filters, orders and cursors are checked before any I/O: no database needed."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import create_async_engine

from sessionmeta import (
    AllOf,
    AnyOf,
    Condition,
    FilterError,
    InvalidCursorError,
    MetadataStore,
    OrderBy,
    SessionMeta,
    UnknownKeyError,
    all_of,
    any_of,
    field,
)
from sessionmeta.core.fieldtypes import field_kind
from sessionmeta.core.plan import encode_cursor, plan_query
from sessionmeta.core.spec import ModelSpec


class Meta(SessionMeta):
    owner_id: str | None = None
    priority: int | None = None
    score: float | None = None
    amount: Decimal | None = None
    day: dt.date | None = None
    moment: dt.datetime | None = None
    tags: list[str] | None = None
    ids: set[int] | None = None
    flag: bool | None = None
    extra: dict[str, int] | None = None


SPEC = ModelSpec(Meta)


def test_field_syntax_builds_the_same_conditions_as_condition() -> None:
    assert (field("priority") > 2) == Condition("priority", "gt", 2)
    assert (field("priority") >= 2) == Condition("priority", "ge", 2)
    assert (field("priority") < 2) == Condition("priority", "lt", 2)
    assert (field("priority") <= 2) == Condition("priority", "le", 2)
    assert (field("owner_id") == "u1") == Condition("owner_id", "eq", "u1")
    assert (field("owner_id") != "u1") == Condition("owner_id", "ne", "u1")
    assert field("owner_id").is_in(["a", "b"]) == Condition("owner_id", "in", ("a", "b"))
    assert field("owner_id").not_in(["a"]) == Condition("owner_id", "not_in", ("a",))
    assert field("tags").contains("x") == Condition("tags", "contains", "x")
    assert field("tags").exists() == Condition("tags", "exists")
    assert field("tags").missing() == Condition("tags", "missing")
    assert field("priority").desc() == OrderBy("priority", descending=True, metadata=True)


def test_groups_combine_with_operators_and_functions() -> None:
    a, b = Condition("priority", "gt", 1), Condition("owner_id", "eq", "u")
    assert (a & b) == AllOf((a, b))
    assert (a | b) == AnyOf((a, b))
    assert all_of({"owner_id": "u"}, [a]) == AllOf((b, a))
    assert any_of(a, all_of(b)) == AnyOf((a, AllOf((b,))))
    with pytest.raises(TypeError):
        all_of("owner_id")  # type: ignore[arg-type]


def test_field_kinds() -> None:
    assert field_kind(int | None) == "range"
    assert field_kind(dt.datetime | None) == "range"
    assert field_kind(bool | None) == "scalar"
    assert field_kind(str) == "scalar"
    assert field_kind(list[str] | None) == "collection"
    assert field_kind(tuple[int, ...]) == "collection"
    assert field_kind(tuple[int, str]) == "other"
    assert field_kind(dict[str, int]) == "other"
    assert field_kind(int | list[int]) == "other"


@pytest.mark.parametrize(
    ("condition", "error"),
    [
        (Condition("nope", "eq", 1), UnknownKeyError),
        (Condition("priority", "like", 1), FilterError),  # type: ignore[arg-type]
        (Condition("tags", "gt", ["a"]), FilterError),
        (Condition("flag", "lt", True), FilterError),
        (Condition("owner_id", "ge", "a"), FilterError),
        (Condition("extra", "gt", {}), FilterError),
        (Condition("owner_id", "contains", "a"), FilterError),
        (Condition("priority", "in", 3), FilterError),
        (Condition("owner_id", "in", "abc"), FilterError),
        (Condition("priority", "exists", 3), FilterError),
        (Condition("priority", "gt", None), FilterError),
        (Condition("priority", "eq", "not a number"), ValidationError),
        (Condition("priority", "in", [1, "x"]), ValidationError),
        (Condition("tags", "contains", 5), ValidationError),
        (Condition("ids", "contains", "x"), ValidationError),
    ],
)
def test_bad_filters_are_refused_before_io(condition: Condition, error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        plan_query(SPEC, [condition])
    if error is not ValidationError:
        assert repr(condition.key) in str(info.value)


async def test_store_raises_before_connecting() -> None:
    # Nothing listens there: an error other than the filter's would be a DatabaseError.
    engine = create_async_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none")
    store = MetadataStore(Meta, engine)
    with pytest.raises(FilterError):
        await store.find_sessions(field("tags") > 1)
    with pytest.raises(FilterError):
        await store.list_sessions(order_by="tags")
    with pytest.raises(ValueError, match="limit"):
        await store.find_sessions(limit=0)
    with pytest.raises(InvalidCursorError):
        await store.find_sessions(cursor="garbage!")
    with pytest.raises(FilterError):
        store.scoped(owner_id=None)
    await engine.dispose()


def test_values_are_coerced_and_encoded_through_the_field_type() -> None:
    # "3" validates to 3 for an int field: it must match what set_metadata stored for 3.
    as_text = plan_query(SPEC, [Condition("priority", "eq", "3")]).params
    as_int = plan_query(SPEC, [Condition("priority", "eq", 3)]).params
    assert as_text == as_int
    nine = plan_query(SPEC, [field("priority") > 9]).params["p1"]
    ten = plan_query(SPEC, [field("priority") > 10]).params["p1"]
    assert nine < ten


def test_aware_datetimes_compare_as_instants() -> None:
    plus_two = dt.datetime(2024, 1, 1, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    utc_nine = dt.datetime(2024, 1, 1, 9, 0, tzinfo=dt.timezone.utc)
    early = plan_query(SPEC, [field("moment") > plus_two]).params["p1"]
    late = plan_query(SPEC, [field("moment") > utc_nine]).params["p1"]
    assert early < late


def test_cursor_belongs_to_its_order() -> None:
    plan = plan_query(SPEC, [], order_by="-created_at")
    cursor = encode_cursor(plan.order, dt.datetime(2024, 1, 2, 3, 4, 5), "s1")
    again = plan_query(SPEC, [], order_by="-created_at", cursor=cursor)
    assert again.params["after_value"] == dt.datetime(2024, 1, 2, 3, 4, 5)
    assert again.params["after_session_id"] == "s1"
    with pytest.raises(InvalidCursorError, match="order"):
        plan_query(SPEC, [], order_by="created_at", cursor=cursor)
    with pytest.raises(InvalidCursorError):
        plan_query(SPEC, [], cursor=cursor[:-3])


def test_order_names() -> None:
    assert plan_query(SPEC, [], order_by="updated_at").order.column == "updated_at"
    assert plan_query(SPEC, [], order_by="-priority").order.descending
    assert plan_query(SPEC, [], order_by="priority").order.column == "meta"
    with pytest.raises(UnknownKeyError):
        plan_query(SPEC, [], order_by="nope")
    with pytest.raises(FilterError):
        plan_query(SPEC, [], order_by="tags")


def test_empty_in_matches_nothing_and_empty_not_in_everything() -> None:
    nothing = plan_query(SPEC, [Condition("priority", "in", [])])
    everything = plan_query(SPEC, [Condition("priority", "not_in", [])])
    assert nothing.rest.nodes[0].shape() == ("or", ())
    assert everything.rest.nodes[0].shape() == ("and", ())
