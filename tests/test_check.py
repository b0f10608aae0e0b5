"""check_store: every stored row checked against a model, streamed in batches, on every backend."""

from __future__ import annotations

import pytest
from pydantic import model_validator
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from sessionmeta import MetadataStore, SessionMeta, check_store

from .models import ChatMeta


class Wider(SessionMeta):
    owner_id: str | None = None
    title: str | None = None
    priority: int | None = None
    retired: str | None = None


class Paired(SessionMeta):
    owner_id: str | None = None
    title: str | None = None

    @model_validator(mode="after")
    def _not_both(self) -> Paired:
        if self.title is not None and self.owner_id is not None:
            raise ValueError("an owned session has no title")
        return self


async def corrupt(
    engine: AsyncEngine, store: MetadataStore[ChatMeta], sid: str, key: str, text: str
) -> None:
    values = store.tables.values
    async with engine.begin() as connection:
        await connection.execute(
            update(values).where(values.c.session_id == sid, values.c.key == key).values(value=text)
        )


@pytest.mark.parametrize("batch_size", [1, 3, 5_000])
async def test_counts_failures_and_undeclared_keys_across_batches(
    engine: AsyncEngine, store: MetadataStore[ChatMeta], batch_size: int
) -> None:
    wider = MetadataStore(Wider, engine)
    for index in range(7):
        values = {"owner_id": f"u{index}", "priority": index}
        if index % 2:
            values["retired"] = "x"
        await wider.bind(f"s{index}").set_metadata(values)
    await corrupt(engine, store, "s3", "priority", '"high"')
    await corrupt(engine, store, "s5", "owner_id", "{not json")
    seen: list[int] = []
    report = await check_store(store, batch_size=batch_size, progress=seen.append)
    assert (report.rows, report.sessions) == (17, 7)
    assert not report.ok
    assert report.invalid_total == 2
    found = {(item.session_id, item.key, item.stored_text) for item in report.invalid}
    assert found == {("s3", "priority", '"high"'), ("s5", "owner_id", "{not json")}
    assert {key: (stats.rows, stats.invalid) for key, stats in report.keys.items()} == {
        "owner_id": (7, 1),
        "priority": (7, 1),
        "retired": (3, 0),
    }
    assert [stats.key for stats in report.undeclared] == ["retired"]
    assert report.keys["retired"].example_sessions == ["s1", "s3", "s5"]
    assert seen[-1] == 17
    assert seen == sorted(seen)
    document = report.to_json()
    assert document["ok"] is False
    assert document["undeclared_keys"] == {
        "retired": {"rows": 3, "example_sessions": ["s1", "s3", "s5"]}
    }


async def test_clean_table_and_empty_table_are_ok(
    engine: AsyncEngine, store: MetadataStore[ChatMeta]
) -> None:
    empty = await check_store(store)
    assert (empty.ok, empty.rows, empty.sessions, empty.keys) == (True, 0, 0, {})
    await store.bind("a").set_metadata({"title": "t", "tags": ["x"]})
    clean = await check_store(store, batch_size=1)
    assert clean.ok
    assert (clean.rows, clean.sessions) == (2, 1)


async def test_examples_are_capped_but_every_failure_is_counted(
    engine: AsyncEngine, store: MetadataStore[ChatMeta]
) -> None:
    for index in range(5):
        await store.bind(f"s{index}").set_metadata({"priority": index})
        await corrupt(engine, store, f"s{index}", "priority", "1.5")
    report = await check_store(store, batch_size=2, max_examples=2)
    assert report.invalid_total == 5
    assert [item.session_id for item in report.invalid] == ["s0", "s1"]
    assert report.keys["priority"].invalid == 5


async def test_a_model_validator_that_refuses_keys_together_is_reported(
    engine: AsyncEngine, store: MetadataStore[ChatMeta]
) -> None:
    await store.bind("s").set_metadata({"title": "t", "owner_id": "ann"})
    report = await check_store(MetadataStore(Paired, engine))
    assert report.invalid_total == 1
    (item,) = report.invalid
    assert (item.session_id, item.key) == ("s", "*")
    assert "an owned session has no title" in item.reason
    assert item.stored_text == '{"owner_id":"ann","title":"t"}'


async def test_check_writes_nothing(engine: AsyncEngine, store: MetadataStore[ChatMeta]) -> None:
    await store.bind("s").set_metadata({"priority": 1})
    await corrupt(engine, store, "s", "priority", '"x"')
    await check_store(store)
    lenient = MetadataStore(ChatMeta, engine, on_invalid="default")
    assert (await lenient.bind("s").get_metadata()).model_fields_set == set()
    assert (await check_store(store)).invalid_total == 1


async def test_batch_size_must_be_positive(store: MetadataStore[ChatMeta]) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        await check_store(store, batch_size=0)
