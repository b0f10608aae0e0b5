"""Nothing is changed silently: a value that would not read back identical is refused."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from sessionmeta import MetadataStore, SessionMeta, field

from .dbstate import stored_rows


class Event(BaseModel):
    at: dt.datetime


class Values(SessionMeta):
    at: dt.datetime | None = None
    clock: dt.time | None = None
    event: Event | None = None
    moments: list[dt.datetime] | None = None
    amount: Decimal | None = None
    ratio: float | None = None
    title: str | None = None


AMSTERDAM_1930 = dt.datetime(1930, 5, 1, 12, tzinfo=ZoneInfo("Europe/Amsterdam"))
HALF_MINUTE = dt.timezone(dt.timedelta(seconds=30))
SECOND_OFFSETS = [
    pytest.param("at", AMSTERDAM_1930, id="Amsterdam 1930, +00:19:32"),
    pytest.param("at", dt.datetime(2020, 1, 1, tzinfo=HALF_MINUTE), id="+00:00:30"),
    pytest.param(
        "at",
        dt.datetime(2020, 1, 1, tzinfo=dt.timezone(-dt.timedelta(seconds=90, microseconds=5))),
        id="-00:01:30.000005",
    ),
    pytest.param(
        "moments", [dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc), AMSTERDAM_1930], id="list"
    ),
    pytest.param("clock", dt.time(12, 0, tzinfo=HALF_MINUTE), id="time +00:00:30"),
]


@pytest.mark.parametrize(("key", "value"), SECOND_OFFSETS)
async def test_an_offset_with_seconds_reads_back_whole(
    engine: AsyncEngine, key: str, value: Any
) -> None:
    store = MetadataStore(Values, engine, create_tables=True)
    meta = store.bind("s")
    await meta.set_metadata({key: value})
    read = getattr(await meta.get_metadata(), key)
    pairs = zip(read, value, strict=True) if isinstance(value, list) else [(read, value)]
    for got, wrote in pairs:
        assert got == wrote and got.utcoffset() == wrote.utcoffset(), (got, wrote)
    if key == "at":
        # The same instant, written in UTC, finds it; so does a range around it.
        in_utc = value.astimezone(dt.timezone.utc)
        assert list(await store.find_sessions(field("at") == in_utc)) == ["s"]
        assert list(await store.find_sessions(field("at") >= in_utc, field("at") <= in_utc)) == [
            "s"
        ]


async def test_an_offset_with_seconds_inside_a_nested_model_is_refused(
    engine: AsyncEngine,
) -> None:
    # A nested model's own schema decides how it is written: to the minute.
    store = MetadataStore(Values, engine, create_tables=True)
    meta = store.bind("s")
    await meta.set_metadata({"title": "kept"})
    with pytest.raises(ValidationError) as caught:
        await meta.set_metadata({"event": Event(at=AMSTERDAM_1930), "title": "not written"})
    (error,) = caught.value.errors()
    assert error["loc"] == ("event",)
    assert "+00:19:32" in error["msg"] and "read back" in error["msg"]
    # All or nothing: the valid key of the same call was not written either.
    assert await stored_rows(engine, "s") == {"title": '"kept"'}


KEPT = [
    pytest.param("at", dt.datetime(2020, 1, 1, 12, tzinfo=ZoneInfo("Asia/Kolkata")), id="+05:30"),
    pytest.param("at", dt.datetime(1930, 5, 1, 12, tzinfo=ZoneInfo("UTC")), id="UTC"),
    pytest.param("at", dt.datetime(2020, 1, 1, 12, 0, 0, 7), id="naive, microseconds"),
    pytest.param("amount", Decimal("1.50"), id="Decimal digits"),
    pytest.param("amount", Decimal("-0.000"), id="Decimal negative zero"),
    pytest.param("ratio", -0.0, id="float negative zero"),
    pytest.param("ratio", 1e-310, id="subnormal float"),
]


@pytest.mark.parametrize(("key", "value"), KEPT)
async def test_what_is_read_is_what_was_written(engine: AsyncEngine, key: str, value: Any) -> None:
    store = MetadataStore(Values, engine, create_tables=True)
    meta = store.bind("s")
    await meta.set_metadata({key: value})
    read = getattr(await meta.get_metadata(), key)
    assert read == value and repr(read.as_tuple() if isinstance(read, Decimal) else read) == repr(
        value.as_tuple() if isinstance(value, Decimal) else read
    )
    if isinstance(value, dt.datetime):
        assert read.utcoffset() == value.utcoffset()
    if isinstance(value, float):
        assert repr(read) == repr(value)
