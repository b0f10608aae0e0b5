"""A version token changes whenever what a read returns changes, equal values included."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from sessionmeta import ConflictError, MetadataStore, SessionMeta


class Numbers(SessionMeta):
    ratio: float | None = None
    count: int | float | None = None
    amount: Decimal | None = None


# (field, first value, a value equal to it that reads back differently)
EQUAL_BUT_DIFFERENT = [
    ("ratio", 0.0, -0.0),
    ("count", 1, 1.0),
    ("amount", Decimal("1.5"), Decimal("1.50")),
]


@pytest.mark.parametrize(("key", "first", "second"), EQUAL_BUT_DIFFERENT)
async def test_rewriting_an_equal_value_that_reads_differently_changes_the_version(
    engine: AsyncEngine, key: str, first: Any, second: Any
) -> None:
    assert first == second and repr(first) != repr(second)
    store = MetadataStore(Numbers, engine, create_tables=True)
    meta = store.bind("s")
    await meta.set_metadata({key: first})
    before = await meta.get_metadata_versioned()
    await meta.set_metadata({key: second})
    after = await meta.get_metadata_versioned()
    assert repr(getattr(after.metadata, key)) == repr(second)
    assert after.version != before.version
    # A writer holding the old version is refused: it has not seen what is stored now.
    with pytest.raises(ConflictError):
        await meta.set_metadata({key: first}, expected_version=before.version)
    assert repr(getattr(await meta.get_metadata(), key)) == repr(second)


async def test_rewriting_the_same_text_keeps_the_version(engine: AsyncEngine) -> None:
    store = MetadataStore(Numbers, engine, create_tables=True)
    meta = store.bind("s")
    await meta.set_metadata({"ratio": 0.5})
    before = await meta.get_metadata_versioned()
    await meta.set_metadata({"ratio": 0.5})
    assert (await meta.get_metadata_versioned()).version == before.version
    await meta.set_metadata({"ratio": 2.0}, expected_version=before.version)
    assert (await meta.get_metadata()).ratio == 2.0
