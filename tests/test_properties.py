"""Property-based round trip: generated values of every supported field type read back equal."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import uuid
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

from sessionmeta import MetadataStore, field
from sessionmeta.core.codec import encode_model, equality_hash, item_hashes, sort_key
from sessionmeta.core.spec import ModelSpec

from .models import AllTypes, Priority, Settings

# A deeper search: SESSIONMETA_HYPOTHESIS_EXAMPLES=2000 pytest tests/test_properties.py
EXAMPLES_PER_BACKEND = int(os.environ.get("SESSIONMETA_HYPOTHESIS_EXAMPLES", "60"))

finite_floats = st.floats(allow_nan=False, allow_infinity=False)
# Any offset Python allows, to the microsecond: seconds (+00:19:32) are kept too.
offsets = st.integers(-(24 * 3600 * 10**6 - 1), 24 * 3600 * 10**6 - 1).map(
    lambda microseconds: dt.timezone(dt.timedelta(microseconds=microseconds))
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | finite_floats | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=12,
)
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "text": st.text(),
    "integer": st.integers(),
    "number": finite_floats,
    "flag": st.booleans(),
    "amount": st.decimals(allow_nan=False, allow_infinity=False),
    "moment": st.datetimes(timezones=st.none() | offsets),
    "day": st.dates(),
    "ident": st.uuids(),
    "level": st.sampled_from(Priority),
    "mode": st.sampled_from(["fast", "slow"]),
    "words": st.lists(st.text(), max_size=5),
    "numbers": st.sets(st.integers(), max_size=5),
    "pair": st.tuples(st.integers(), st.text()),
    "dates": st.lists(st.dates(), max_size=3),
    "extra": st.dictionaries(st.text(), json_values, max_size=4),
    "settings": st.builds(Settings, temperature=finite_floats, model=st.text()),
    "old_name": st.text(),
    "blob": st.binary(),
}
all_types_values = st.fixed_dictionaries(
    {}, optional={key: st.none() | strategy for key, strategy in FIELDS.items()}
)


@settings(
    max_examples=EXAMPLES_PER_BACKEND,
    deadline=None,
    # One database per backend for all examples; each example writes its own session.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(values=all_types_values)
async def test_generated_values_round_trip(engine: AsyncEngine, values: dict[str, Any]) -> None:
    store = MetadataStore(AllTypes, engine, create_tables=True)
    session_id = f"s{next(_session_numbers)}"
    meta = store.bind(session_id)
    await meta.set_metadata(values)
    read = await meta.get_metadata()
    written = AllTypes.model_validate(values)
    assert read.model_fields_set == written.model_fields_set
    for name in written.model_fields_set:
        assert getattr(read, name) == getattr(written, name), name
        if isinstance(getattr(written, name), dt.datetime):
            assert getattr(read, name).utcoffset() == getattr(written, name).utcoffset()


_session_numbers = itertools.count()


@settings(max_examples=400, deadline=None)
@given(values=all_types_values)
def test_rows_index_values_by_the_definitions_of_equality_and_order(
    values: dict[str, Any],
) -> None:
    # Writes encode a whole model at once, by shortcuts per type; every row's hash,
    # sort key and items must still be what the one definition of each gives.
    spec = ModelSpec(AllTypes)
    written = spec.validate_values(values)
    for row in encode_model(spec, written):
        value = spec.value_of(written, spec.field(row.key))
        assert row.value_hash == equality_hash(value), row.key
        assert row.sort_key == sort_key(value), row.key
        collection = spec.field(row.key).kind == "collection"
        assert row.items == (item_hashes(value) if collection else None), row.key


@settings(
    max_examples=EXAMPLES_PER_BACKEND,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(values=all_types_values)
async def test_listings_read_values_as_a_single_read_does(
    engine: AsyncEngine, values: dict[str, Any]
) -> None:
    # Listings gather each session's rows into one JSON object in SQL where the
    # database keeps the stored text (PostgreSQL, SQLite): the same values must come back.
    store = MetadataStore(AllTypes, engine, create_tables=True)
    marker = uuid.uuid4()
    session_id = f"listed{next(_session_numbers)}"
    await store.bind(session_id).set_metadata({**values, "ident": marker})
    page = await store.list_sessions(field("ident") == marker, limit=5)
    assert [listing.session_id for listing in page] == [session_id]
    listed = page[0].metadata
    read = await store.bind(session_id).get_metadata()
    assert listed.model_fields_set == read.model_fields_set
    for name in read.model_fields_set:
        assert repr(getattr(listed, name)) == repr(getattr(read, name)), name


@given(
    st.one_of(
        st.datetimes(timezones=st.timezones()).map(dt.datetime.isoformat),
        st.times(timezones=st.timezones()).map(dt.time.isoformat),
        st.from_regex(r"[0-9T:.+\-]{0,40}\n?", fullmatch=True),
    )
)
def test_reading_offset_seconds_skips_the_pattern_only_where_it_cannot_match(text: str) -> None:
    # The position test in front of the pattern gives what the pattern alone would.
    from sessionmeta.core import instants

    for parse in (dt.datetime.fromisoformat, dt.time.fromisoformat):
        found = instants._SECOND_OFFSET.search(text)
        parsed = instants._parsed(text, parse)
        if found is None:
            assert parsed is text
        else:
            try:
                expected = parse(text[: found.start()])
            except (ValueError, TypeError):
                assert parsed is text
            else:
                assert parsed.replace(tzinfo=None) == expected.replace(tzinfo=None)
