"""Update-only writes (``create=False``) raced against deletes of their session.

Each round writes a session, then runs two things at once: a ``create=False``
write to it (plain, scoped, versioned, or an ``add_to``) and a delete of its
session row, as the Agents SDK's ``clear_session()`` does. Whatever the order, the
session must be gone afterwards with every row of its metadata: the write either
landed before the delete (and went with it) or was refused with
``SessionNotFoundError``, never re-creating the session. A check-then-write would
re-create it whenever the delete falls between the check and the write.

Rounds run ``WAVE`` at a time, each on its own session; one side of each round is
held back by up to twice the median time the writes have taken so far, so both
orders and their overlaps occur. The test fails on any broken round, and also when
the race never went both ways (which would make its passing meaningless).
Rounds per test: ``SESSIONMETA_CREATE_RACE_ROUNDS`` (default 120).
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from sessionmeta import MetadataStore, SessionNotFoundError

from .models import ChatMeta

ROUNDS = int(os.environ.get("SESSIONMETA_CREATE_RACE_ROUNDS", "120"))
WAVE = 6
SEED = 20250115

Store = MetadataStore[ChatMeta]
# (store, session id, the version read before the race)
Write = Callable[[Store, str, str], Awaitable[None]]


async def plain(store: Store, session_id: str, version: str) -> None:
    await store.bind(session_id).set_metadata({"title": "after"}, create=False)


async def scoped(store: Store, session_id: str, version: str) -> None:
    view = store.scoped(owner_id="A")
    await view.bind(session_id).set_metadata({"title": "after"}, create=False)


async def versioned(store: Store, session_id: str, version: str) -> None:
    meta = store.bind(session_id)
    await meta.set_metadata({"title": "after"}, create=False, expected_version=version)


async def add(store: Store, session_id: str, version: str) -> None:
    await store.bind(session_id).add_to("tags", "after", create=False)


WRITES: dict[str, Write] = {"plain": plain, "scoped": scoped, "versioned": versioned, "add": add}


async def delete_session(store: Store, session_id: str) -> None:
    sessions = store.tables.sessions
    async with store.engine.begin() as connection:
        await connection.execute(delete(sessions).where(sessions.c.session_id == session_id))


async def remaining(store: Store, session_id: str) -> tuple[bool, int]:
    """Whether the session row is there, and how many metadata rows it has."""
    values = store.tables.values
    async with store.engine.connect() as connection:
        rows = await connection.scalar(
            select(func.count()).select_from(values).where(values.c.session_id == session_id)
        )
    return await store.exists(session_id), int(rows or 0)


@pytest.mark.parametrize("kind", list(WRITES))
async def test_create_false_never_recreates_a_deleted_session(
    engine: AsyncEngine, kind: str
) -> None:
    store = MetadataStore(ChatMeta, engine, create_tables=True)
    await store.create_tables()
    write = WRITES[kind]
    rng = random.Random(f"{SEED}-{kind}")
    took: list[float] = [0.002]
    outcomes: Counter[str] = Counter()
    broken: list[str] = []

    async def timed_write(session_id: str, version: str, pause: float) -> str:
        await asyncio.sleep(pause)
        started = time.perf_counter()
        try:
            await write(store, session_id, version)
        except SessionNotFoundError:
            return "refused"
        finally:
            took.append(time.perf_counter() - started)
        return "written"

    async def late_delete(session_id: str, pause: float) -> None:
        await asyncio.sleep(pause)
        await delete_session(store, session_id)

    async def one_round(index: int) -> None:
        session_id = f"race-{kind}-{index}"
        meta = store.bind(session_id)
        await meta.set_metadata({"owner_id": "A", "title": "before", "tags": ["before"]})
        version = (await meta.get_metadata_versioned()).version
        spread = 2 * statistics.median(took[-50:])
        held = rng.uniform(0, spread)
        write_pause, delete_pause = (held, 0.0) if rng.random() < 0.5 else (0.0, held)
        outcome, _ = await asyncio.gather(
            timed_write(session_id, version, write_pause), late_delete(session_id, delete_pause)
        )
        outcomes[outcome] += 1
        exists, rows = await remaining(store, session_id)
        if exists or rows:
            broken.append(
                f"{session_id}: write {outcome}, then the session "
                f"{'exists' if exists else 'is gone'} with {rows} metadata row(s)"
            )

    for start in range(0, ROUNDS, WAVE):
        wave = range(start, min(start + WAVE, ROUNDS))
        await asyncio.gather(*(one_round(index) for index in wave))

    assert not broken, f"{len(broken)} of {ROUNDS} rounds broken: {broken[:5]}"
    # Both orders happened: the test saw writes land and writes refused.
    assert outcomes["written"] and outcomes["refused"], dict(outcomes)
