"""One equality: ``find`` by ``==``, ``!=``, ``in`` and ``contains`` agrees with Python's ``==``."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from sessionmeta import MetadataStore, SessionMeta, check_store, field, rehash_store
from sessionmeta.core.codec import value_hash


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Point(BaseModel):
    x: int = 0
    y: float = 0.0


def tz(hours: float) -> dt.timezone:
    return dt.timezone(dt.timedelta(hours=hours))


class Everything(SessionMeta):
    number: int | float | Decimal | None = None
    ratio: float | None = None
    amount: Decimal | None = None
    flag_or_count: bool | int | None = None
    at: dt.datetime | None = None
    day: dt.date | None = None
    text: str | None = None
    ident: uuid.UUID | None = None
    color: Color | None = None
    extra: dict[str, Any] | None = None
    point: Point | None = None
    numbers: list[float] | None = None
    amounts: set[Decimal] | None = None


UUID = uuid.UUID("12345678-1234-5678-1234-567812345678")
INSTANT = dt.datetime(2024, 5, 1, 12, 0, tzinfo=tz(0))

# (key, stored, queried): look-alike pairs, equal or not as Python says.
PAIRS: list[tuple[str, Any, Any]] = [
    ("number", 1, 1.0),
    ("number", 1, Decimal("1.00")),
    ("number", 1.5, Decimal("1.50")),
    ("number", 2, 2.5),
    ("number", 10, 1e1),
    ("ratio", 0.0, -0.0),
    ("ratio", 0.1, 0.1000000001),
    ("ratio", 1e-310, 0.0),
    ("amount", Decimal("1.50"), Decimal("1.5")),
    ("amount", Decimal("-0"), Decimal("0.000")),
    ("amount", Decimal("1.5"), Decimal("1.51")),
    ("amount", Decimal("1E+2"), Decimal("100")),
    ("flag_or_count", True, 1),
    ("flag_or_count", False, 0),
    ("flag_or_count", 1, 1),
    ("at", INSTANT.astimezone(tz(2)), INSTANT),
    ("at", INSTANT.astimezone(tz(-4.5)), INSTANT.astimezone(tz(5.75))),
    ("at", INSTANT, INSTANT + dt.timedelta(microseconds=1)),
    ("at", dt.datetime(2024, 5, 1, 12), dt.datetime(2024, 5, 1, 12)),
    ("at", dt.datetime(2024, 5, 1, 12), INSTANT),
    ("day", dt.date(2024, 5, 1), dt.date(2024, 5, 1)),
    ("text", "42", "42"),
    ("text", "1.0", "1"),
    ("text", "Straße", "Strasse"),
    ("ident", UUID, str(UUID)),
    ("color", Color.RED, "red"),
    ("extra", {"a": 1, "b": 2}, {"b": 2, "a": 1}),
    ("extra", {"a": 1}, {"a": 1.0}),
    ("extra", {"a": [1, 2]}, {"a": [2, 1]}),
    ("extra", {"a": {"x": None, "y": "z"}}, {"a": {"y": "z", "x": None}}),
    ("extra", {"a": True}, {"a": 1}),
    ("point", Point(x=1, y=2), Point(x=1, y=2.0)),
    ("point", Point(x=1, y=2), {"y": 2, "x": 1}),
    ("numbers", [1.0, -0.0], [1, 0]),
    ("numbers", [1.0, 2.0], [2.0, 1.0]),
    ("amounts", {Decimal("1.0"), Decimal("2")}, {Decimal("2.00"), Decimal("1")}),
]


def python_equal(store: MetadataStore[Everything], key: str, stored: Any, queried: Any) -> bool:
    """What Python's == says of the two values, once each is validated as the field's type,
    with the two documented differences (see docs/queries.md, "Equality")."""
    spec = store.spec
    return same(
        getattr(spec.validate_values({key: stored}), key),
        getattr(spec.validate_values({key: queried}), key),
    )


def same(left: Any, right: Any) -> bool:
    # Python calls True == 1; JSON and a field typed `bool | int` tell them apart.
    if isinstance(left, bool) or isinstance(right, bool):
        return type(left) is type(right) and left == right
    numbers = (int, float, Decimal)
    if isinstance(left, numbers) and isinstance(right, numbers):
        # Python compares a float with a Decimal by its binary value (0.1 != Decimal("0.1"));
        # the store by its shortest repr, as ranges order it.
        return as_decimal(left) == as_decimal(right)
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(same(v, right[k]) for k, v in left.items())
    if isinstance(left, (list, tuple)) and isinstance(right, (list, tuple)):
        return len(left) == len(right) and all(map(same, left, right))
    if isinstance(left, BaseModel) and isinstance(right, BaseModel):
        return type(left) is type(right) and same(dict(left), dict(right))
    return bool(left == right)


def as_decimal(number: float | Decimal) -> Decimal:
    return Decimal(repr(number)) if isinstance(number, float) else Decimal(number)


@pytest.fixture
async def store(engine: AsyncEngine) -> MetadataStore[Everything]:
    store = MetadataStore(Everything, engine, create_tables=True)
    await store.create_tables()
    return store


@pytest.mark.parametrize(
    ("key", "stored", "queried"), PAIRS, ids=[f"{k}: {s!r} vs {q!r}" for k, s, q in PAIRS]
)
async def test_find_agrees_with_python(
    store: MetadataStore[Everything], key: str, stored: Any, queried: Any
) -> None:
    equal = python_equal(store, key, stored, queried)
    await store.bind("stored").set_metadata({key: stored})
    # A session without the key: `!=` and `not in` match it, `==` never does.
    await store.bind("other").set_metadata({"day" if key == "text" else "text": None})
    expected = ["stored"] if equal else []
    assert list(await store.find_sessions(field(key) == queried)) == expected
    assert await store.find_sessions_by_metadata(key, queried) == expected
    assert list(await store.find_sessions(field(key).is_in([queried]))) == expected
    # `!=` is the complement of `==` among sessions that hold the key (a session
    # without it matches `!=` too).
    unequal = await store.find_sessions(field(key).exists(), field(key) != queried)
    assert list(unequal) == ([] if equal else ["stored"])
    assert list(await store.find_sessions(field(key).not_in([queried]))) == (
        ["other"] if equal else ["other", "stored"]
    )


ELEMENTS: list[tuple[str, Any, Any]] = [
    ("numbers", [1.5, 2.0], 2),
    ("numbers", [1.5, -0.0], 0.0),
    ("numbers", [1.5], 1.25),
    ("amounts", {Decimal("2.50")}, Decimal("2.5")),
    ("amounts", {Decimal("2.50")}, 2.5),
    ("amounts", {Decimal("2.5")}, Decimal("2.6")),
]


@pytest.mark.parametrize(("key", "stored", "element"), ELEMENTS)
async def test_contains_agrees_with_python_in(
    store: MetadataStore[Everything], key: str, stored: Any, element: Any
) -> None:
    spec = store.spec
    validated = getattr(spec.validate_values({key: stored}), key)
    (probe,) = getattr(spec.validate_values({key: [element]}), key)
    await store.bind("s").set_metadata({key: stored})
    found = await store.find_sessions(field(key).contains(element))
    assert list(found) == (["s"] if probe in validated else [])


NUMBERS = st.one_of(
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.decimals(allow_nan=False, allow_infinity=False, places=None).filter(
        lambda d: abs(d.adjusted()) < 300
    ),
)
SMALL = st.sampled_from([0, 1, -1, 2, 0.5, 1.5])


def near(value: Any) -> st.SearchStrategy[Any]:
    """Look-alikes of ``value``: the same number as another type or with other digits."""
    choices: list[Any] = [value]
    if isinstance(value, Decimal):
        choices += [value.normalize(), float(value)]
    elif isinstance(value, float):
        choices.append(Decimal(repr(value)))
        if value.is_integer():
            choices.append(int(value))
    elif isinstance(value, int):
        choices += [Decimal(value), float(value)]
    return st.sampled_from(choices)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
async def test_generated_numbers_find_as_python_compares(
    store: MetadataStore[Everything], data: st.DataObject
) -> None:
    stored = data.draw(st.one_of(NUMBERS, SMALL))
    queried = data.draw(st.one_of(near(stored), NUMBERS, SMALL))
    equal = python_equal(store, "number", stored, queried)
    await store.bind("n").set_metadata({"number": stored})
    assert (await store.find_sessions_by_metadata("number", queried)) == (["n"] if equal else [])


async def test_check_reports_and_rehash_recomputes_hashes_of_an_older_rule(
    store: MetadataStore[Everything], engine: AsyncEngine
) -> None:
    await store.bind("s1").set_metadata({"amount": Decimal("1.50"), "text": "t"})
    await store.bind("s2").set_metadata({"numbers": [1.0, 2.5]})
    # The rule before: a Decimal's hash was its JSON text's; a list's, its text's.
    key = "`key`" if engine.dialect.name in ("mysql", "mariadb") else '"key"'
    async with engine.begin() as connection:
        for session_id, name, old in [("s1", "amount", '"1.50"'), ("s2", "numbers", "[1.0,2.5]")]:
            await connection.execute(
                text(
                    f"UPDATE agent_sessions_metadata SET value_hash = :h "
                    f"WHERE session_id = :s AND {key} = :k"
                ),
                {"h": value_hash(old), "s": session_id, "k": name},
            )
    assert await store.find_sessions_by_metadata("amount", Decimal("1.5")) == []
    report = await check_store(store)
    assert report.stale_total == 2 and not report.ok
    assert {(item.session_id, item.key) for item in report.stale} == {
        ("s1", "amount"),
        ("s2", "numbers"),
    }
    assert await rehash_store(store) == 2
    assert await rehash_store(store) == 0
    assert (await check_store(store)).ok
    assert await store.find_sessions_by_metadata("amount", Decimal("1.5")) == ["s1"]
    assert list(await store.find_sessions(field("numbers") == [1, 2.5])) == ["s2"]
    assert list(await store.find_sessions(field("numbers").contains(2.5))) == ["s2"]


OFFSETS = st.integers(-(24 * 3600 - 1), 24 * 3600 - 1).map(
    lambda seconds: dt.timezone(dt.timedelta(seconds=seconds))
)
INSTANTS = st.datetimes(
    min_value=dt.datetime(1900, 1, 2), max_value=dt.datetime(2100, 1, 1), timezones=OFFSETS
)
DICTS = st.dictionaries(
    st.sampled_from(["a", "b", "c"]), st.one_of(SMALL, st.booleans(), st.none()), max_size=3
)


@st.composite
def look_alike(draw: st.DrawFn) -> tuple[str, Any, Any]:
    """A stored value and a query: the same instant at another offset (seconds included),
    a microsecond off, the same dict in another key order, or another value outright."""
    if draw(st.booleans()):
        stored = draw(INSTANTS)
        queried = draw(
            st.one_of(
                OFFSETS.map(stored.astimezone),
                st.just(stored + dt.timedelta(microseconds=1)),
                INSTANTS,
            )
        )
        return "at", stored, queried
    stored_dict = draw(DICTS)
    reordered = dict(reversed(list(stored_dict.items())))
    return "extra", stored_dict, draw(st.one_of(st.just(reordered), DICTS))


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(pair=look_alike())
async def test_generated_instants_and_dicts_find_as_python_compares(
    store: MetadataStore[Everything], pair: tuple[str, Any, Any]
) -> None:
    key, stored, queried = pair
    equal = python_equal(store, key, stored, queried)
    await store.bind("v").set_metadata({key: stored})
    found = await store.find_sessions_by_metadata(key, queried)
    assert found == (["v"] if equal else []), (stored, queried)
    missed = list(await store.find_sessions(field(key) != queried))
    assert missed == ([] if equal else ["v"]), (stored, queried)
