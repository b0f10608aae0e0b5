"""The items table (one row per element of a list or set value) holds exactly the elements
of the values stored now: every delete path takes a key's items with its value row, since
the items' foreign key refers to the session, not to the value row."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from sessionmeta import MetadataStore, field, migrations
from sessionmeta.core.codec import item_hashes
from tests.models import ChatMeta

ITEMS = "agent_sessions_metadata_items"

Store = MetadataStore[ChatMeta]


async def item_rows(engine: AsyncEngine) -> set[tuple[str, str, str]]:
    async with engine.connect() as connection:
        key = engine.dialect.identifier_preparer.quote("key")
        rows = await connection.execute(text(f"SELECT session_id, {key}, item_hash FROM {ITEMS}"))
        return {(str(row[0]), str(row[1]), str(row[2])) for row in rows}


def expected_items(stored: dict[str, list[str] | None]) -> set[tuple[str, str, str]]:
    return {
        (session_id, "tags", item)
        for session_id, tags in stored.items()
        if tags is not None
        for item in item_hashes(tags)
    }


async def stored_tags(store: Store, ids: list[str]) -> dict[str, list[str] | None]:
    return {session_id: (await store.bind(session_id).get_metadata()).tags for session_id in ids}


async def test_every_delete_path_takes_the_items_with_the_value(store: Store) -> None:
    engine = store.engine
    ids = [f"s{index}" for index in range(6)]
    await store.set_many(
        {
            session_id: {"owner_id": "u1", "title": session_id, "tags": ["a", session_id]}
            for session_id in ids
        }
    )
    assert await item_rows(engine) == expected_items(await stored_tags(store, ids))

    await store.bind("s0").delete_metadata(["tags"])
    await store.bind("s1").delete_metadata()
    await store.delete_many(["s2", "s3"], keys=["tags"])
    await store.delete_many(["s4"])
    await store.scoped(owner_id="u1").bind("s5").delete_metadata(["tags"])

    assert await item_rows(engine) == set()
    assert await store.find_sessions(field("tags").contains("a")) == []
    assert (await store.bind("s0").get_metadata()).title == "s0"

    # Written again, the items come back, and only the new value's.
    await store.bind("s0").set_metadata({"tags": ["b"]})
    await store.bind("s2").set_metadata({"tags": ["a", "c"]})
    assert await item_rows(engine) == expected_items(await stored_tags(store, ids))
    assert await store.find_sessions(field("tags").contains("a")) == ["s2"]


async def test_deleting_the_session_row_takes_its_items(store: Store) -> None:
    await store.bind("s1").set_metadata({"tags": ["a", "b"]})
    await store.bind("s2").set_metadata({"tags": ["c"]})
    async with store.engine.begin() as connection:
        await connection.execute(text("DELETE FROM agent_sessions WHERE session_id = 's1'"))
    assert await item_rows(store.engine) == expected_items({"s2": ["c"]})


async def make_old_foreign_key(engine: AsyncEngine) -> None:
    """The items table as sessionmeta created it before round three: its foreign key
    refers to the value row (``session_id, key``)."""
    async with engine.begin() as connection:
        if engine.dialect.name == "sqlite":
            ddl = await connection.scalar(
                text("SELECT sql FROM sqlite_master WHERE name = :name"), {"name": ITEMS}
            )
            old_ddl = (
                str(ddl)
                .replace(
                    "FOREIGN KEY(session_id) REFERENCES agent_sessions (session_id)",
                    "FOREIGN KEY(session_id, key) REFERENCES agent_sessions_metadata "
                    "(session_id, key)",
                )
                .replace(f"fk_{ITEMS}_session", f"fk_{ITEMS}")
            )
            assert old_ddl != ddl
            await connection.execute(text(f"ALTER TABLE {ITEMS} RENAME TO old_items"))
            await connection.execute(text(old_ddl))
            await connection.execute(text(f"INSERT INTO {ITEMS} SELECT * FROM old_items"))
            await connection.execute(text("DROP TABLE old_items"))
            return
        drop = "FOREIGN KEY" if engine.dialect.name == "mysql" else "CONSTRAINT"
        await connection.execute(text(f"ALTER TABLE {ITEMS} DROP {drop} fk_{ITEMS}_session"))
        key = engine.dialect.identifier_preparer.quote("key")
        await connection.execute(
            text(
                f"ALTER TABLE {ITEMS} ADD CONSTRAINT fk_{ITEMS} FOREIGN KEY (session_id, {key}) "
                f"REFERENCES agent_sessions_metadata (session_id, {key}) ON DELETE CASCADE"
            )
        )


async def items_foreign_keys(engine: AsyncEngine) -> list[dict[str, Any]]:
    async with engine.connect() as connection:
        return await connection.run_sync(
            lambda sync: [dict(fk) for fk in inspect(sync).get_foreign_keys(ITEMS)]
        )


async def repoint(engine: AsyncEngine) -> None:
    migration = pytest.importorskip("alembic.migration")
    operations = pytest.importorskip("alembic.operations")

    def run(sync: Any) -> None:
        op = operations.Operations(migration.MigrationContext.configure(sync))
        migrations.repoint_items_foreign_key(op)

    async with engine.begin() as connection:
        await connection.run_sync(run)


async def test_tables_made_before_round_three_are_repointed(store: Store) -> None:
    engine = store.engine
    await store.set_many({f"s{index}": {"title": "t", "tags": ["a", "b"]} for index in range(20)})
    await make_old_foreign_key(engine)
    (old,) = await items_foreign_keys(engine)
    assert old["referred_table"] == "agent_sessions_metadata"
    before = await item_rows(engine)

    # The store works on the old tables too: its deletes take the items themselves.
    await store.bind("s0").delete_metadata(["tags"])
    before -= expected_items({"s0": ["a", "b"]})
    assert await item_rows(engine) == before

    await repoint(engine)
    (new,) = await items_foreign_keys(engine)
    assert (new["referred_table"], new["constrained_columns"]) == ("agent_sessions", ["session_id"])
    assert await item_rows(engine) == before
    assert await store.count_sessions(field("tags").contains("a")) == 19

    # Again: nothing to do, nothing changed.
    await repoint(engine)
    assert len(await items_foreign_keys(engine)) == 1
    await store.delete_many(["s1"])
    async with engine.begin() as connection:
        await connection.execute(text("DELETE FROM agent_sessions WHERE session_id = 's2'"))
    assert await item_rows(engine) == before - expected_items({"s1": ["a", "b"], "s2": ["a", "b"]})
