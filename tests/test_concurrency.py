"""Many writers at once, each on its own connection: nothing lost, no error escapes."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from typing import Any

from pydantic import create_model
from sqlalchemy.ext.asyncio import AsyncEngine

from sessionmeta import BoundMetadata, MetadataStore, SessionMeta

from .dbstate import clear_session, session_ids, stored_rows
from .models import ChatMeta

WRITERS = 100
# More rounds of the racing test for a stress run: SESSIONMETA_STRESS_ROUNDS=500 pytest ...
RACE_ROUNDS = int(os.environ.get("SESSIONMETA_STRESS_ROUNDS", "12"))

Wide = create_model(  # type: ignore[call-overload]
    "Wide",
    __base__=SessionMeta,
    **{f"k{index:03d}": (int | None, None) for index in range(WRITERS)},
)


async def test_writers_of_different_keys_all_land(wide_engine: AsyncEngine) -> None:
    store: MetadataStore[Any] = MetadataStore(Wide, wide_engine, create_tables=True)
    await store.create_tables()
    meta = store.bind("shared")
    # The session does not exist yet: every writer also races to create its row.
    await asyncio.gather(*(meta.set_metadata({f"k{index:03d}": index}) for index in range(WRITERS)))
    read = await meta.get_metadata()
    assert {name: getattr(read, name) for name in read.model_fields_set} == {
        f"k{index:03d}": index for index in range(WRITERS)
    }
    assert await session_ids(wide_engine) == ["shared"]
    # The writers overlapped: the pool had to open many connections for them.
    pooled = wide_engine.pool.checkedin()  # type: ignore[attr-defined]
    assert pooled > 1, pooled


async def test_writers_of_one_key_leave_one_of_their_values(wide_engine: AsyncEngine) -> None:
    store = MetadataStore(ChatMeta, wide_engine, create_tables=True)
    await store.create_tables()
    meta = store.bind("shared")
    await asyncio.gather(
        *(meta.set_metadata({"priority": index, "title": f"t{index}"}) for index in range(WRITERS))
    )
    read = await meta.get_metadata()
    assert read.priority in range(WRITERS)
    # Both keys come from one writer: each write is all or nothing.
    assert read.title == f"t{read.priority}"
    assert set(await stored_rows(wide_engine, "shared")) == {"priority", "title"}


async def test_many_writers_create_the_same_new_session(wide_engine: AsyncEngine) -> None:
    store = MetadataStore(ChatMeta, wide_engine, create_tables=True)
    await store.create_tables()
    for round_ in range(5):
        session_id = f"new-{round_}"
        await asyncio.gather(
            *(
                store.bind(session_id).set_metadata({"owner_id": f"u{index}", "priority": index})
                for index in range(20)
            )
        )
        read = await store.bind(session_id).get_metadata()
        assert read.owner_id == f"u{read.priority}"
    assert await session_ids(wide_engine) == [f"new-{round_}" for round_ in range(5)]


State = tuple[bool, frozenset[tuple[str, str]]]


def _apply(state: dict[str, Any] | None, operation: tuple[str, Any]) -> dict[str, Any] | None:
    kind, argument = operation
    if kind == "set":
        return {**(state or {}), **argument}
    if kind == "clear":
        return None
    if state is None:
        return None
    if kind == "delete":
        return {key: value for key, value in state.items() if key not in argument}
    return {}  # delete all keys; the session row stays


def _as_state(state: dict[str, Any] | None) -> State:
    if state is None:
        return (False, frozenset())
    return (True, frozenset((key, json.dumps(value)) for key, value in state.items()))


async def _call(
    meta: BoundMetadata[ChatMeta], engine: AsyncEngine, operation: tuple[str, Any]
) -> None:
    kind, argument = operation
    if kind == "set":
        await meta.set_metadata(argument)
    elif kind == "delete":
        await meta.delete_metadata(argument)
    elif kind == "delete_all":
        await meta.delete_metadata()
    else:
        await clear_session(engine, meta.session_id)


async def test_set_delete_and_clear_racing_leave_a_state_some_order_gives(
    wide_engine: AsyncEngine,
) -> None:
    store = MetadataStore(ChatMeta, wide_engine, create_tables=True)
    await store.create_tables()
    start = {"title": "0", "priority": 0, "owner_id": "o"}
    operations: list[tuple[str, Any]] = [
        ("set", {"title": "a", "priority": 1}),
        ("set", {"title": "b", "tags": ["x"]}),
        ("delete", ["title"]),
        ("delete_all", None),
        ("clear", None),
    ]
    reachable = set()
    for order in itertools.permutations(operations):
        state: dict[str, Any] | None = dict(start)
        for operation in order:
            state = _apply(state, operation)
        reachable.add(_as_state(state))

    for round_ in range(RACE_ROUNDS):
        session_id = f"race-{round_}"
        meta = store.bind(session_id)
        await meta.set_metadata(start)

        # Rotate the start order so each call gets a head start in some round.
        rotated = operations[round_ % 5 :] + operations[: round_ % 5]
        results = await asyncio.gather(
            *(_call(meta, wide_engine, operation) for operation in rotated),
            return_exceptions=True,
        )
        assert [result for result in results if result is not None] == []
        rows = await stored_rows(wide_engine, session_id)
        exists = session_id in await session_ids(wide_engine)
        assert (exists, frozenset(rows.items())) in reachable, (round_, exists, rows)
