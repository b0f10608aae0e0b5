"""Unique fields raced: concurrent finders-or-creators, and two sessions claiming one value.

Whatever the interleaving, a value is held by at most one session, the claims table
agrees with the value table, a refused writer gets UniqueValueError naming the
holder with nothing of its call written, and of many concurrent
``get_or_create_by`` calls with one value exactly one creates the session.

Rounds: ``SESSIONMETA_UNIQUE_RACE_ROUNDS`` (default 100) for the pairs;
``SESSIONMETA_UNIQUE_CROWD_ROUNDS`` (default 10) rounds of 50 callers.
"""

from __future__ import annotations

import asyncio
import os
import random
from typing import Annotated, Any

from sqlalchemy import column, select, table
from sqlalchemy.ext.asyncio import AsyncEngine

from sessionmeta import MetadataStore, SessionMeta, Unique, UniqueValueError

from .conftest import connection_budget
from .racing import CountedRetries, Tally, kind, race, run_rounds

ROUNDS = int(os.environ.get("SESSIONMETA_UNIQUE_RACE_ROUNDS", "100"))
CROWD_ROUNDS = int(os.environ.get("SESSIONMETA_UNIQUE_CROWD_ROUNDS", "10"))
CROWD = 50
WAVE = 6
SEED = 20261201


class Thread(SessionMeta):
    owner_id: str | None = None
    title: str | None = None
    slack_thread: Annotated[str | None, Unique()] = None


async def make_store(engine: AsyncEngine, tally: Tally) -> MetadataStore[Thread]:
    store = MetadataStore(Thread, engine, create_tables=True, retry=CountedRetries(tally=tally))
    await store.create_tables()
    return store


async def claims_agree_with_values(engine: AsyncEngine) -> list[str]:
    """Differences between the claims table and the stored values of the unique key."""
    values = table(
        "agent_sessions_metadata", column("session_id"), column("key"), column("value_hash")
    )
    claims = table(
        "agent_sessions_metadata_unique",
        column("session_id"),
        column("key"),
        column("value_hash"),
    )
    async with engine.connect() as connection:
        stored = set(
            await connection.execute(
                select(values.c.session_id, values.c.value_hash).where(
                    values.c.key == "slack_thread"
                )
            )
        )
        claimed = set(
            await connection.execute(
                select(claims.c.session_id, claims.c.value_hash).where(
                    claims.c.key == "slack_thread"
                )
            )
        )
    return [f"stored, unclaimed: {row}" for row in stored - claimed] + [
        f"claimed, not stored: {row}" for row in claimed - stored
    ]


async def test_fifty_concurrent_get_or_create_by_make_one_session(
    wide_engine: AsyncEngine, backend: str
) -> None:
    tally = Tally(backend, CROWD_ROUNDS)
    store = await make_store(wide_engine, tally)
    callers = min(CROWD, await connection_budget(wide_engine, CROWD))
    tally.notes[f"{callers} callers a round"] += 1

    async def one_round(index: int, rng: random.Random) -> None:
        value = f"C0123/{index}"
        results = await asyncio.gather(
            *(
                store.get_or_create_by("slack_thread", value, {"title": f"caller {caller}"})
                for caller in range(callers)
            ),
            return_exceptions=True,
        )
        failed = [result for result in results if isinstance(result, BaseException)]
        tally.expect(not failed, "a caller raised", index, failed[:3])
        found = [result for result in results if not isinstance(result, BaseException)]
        tally.expect(len({session for session, _ in found}) == 1, "several sessions", index, found)
        created = sum(1 for _, made in found if made)
        tally.expect(created == 1, "not exactly one created", index, created)
        holders = await store.find_sessions_by_metadata("slack_thread", value)
        tally.expect(len(holders) == 1, "the value is stored in several sessions", index, holders)
        tally.outcomes[f"created {created}"] += 1

    await run_rounds(CROWD_ROUNDS, 1, SEED, one_round)
    tally.expect(not await claims_agree_with_values(wide_engine), "claims disagree", -1, None)
    tally.verdict()


async def test_two_sessions_claiming_one_value_leave_it_to_one(
    wide_engine: AsyncEngine, backend: str
) -> None:
    tally = Tally(backend, ROUNDS)
    store = await make_store(wide_engine, tally)

    async def one_round(index: int, rng: random.Random) -> None:
        value = f"T{index}"
        first, second = f"a-{index}", f"b-{index}"
        results = await race(
            tally,
            rng,
            lambda: store.bind(first).set_metadata({"slack_thread": value, "title": "a"}),
            lambda: store.set_many({second: {"slack_thread": value, "title": "b"}}),
        )
        pairs = list(zip((first, second), results, strict=True))
        winners = [sid for sid, result in pairs if result is None]
        tally.expect(len(winners) == 1, "not exactly one writer won", index, results)
        holders = await store.find_sessions_by_metadata("slack_thread", value)
        tally.expect(holders == winners, "the value is not the winner's alone", index, holders)
        for sid, result in pairs:
            if isinstance(result, UniqueValueError):
                tally.expect(
                    result.holder in winners and result.session_id == sid,
                    "the error names the wrong sessions",
                    index,
                    result,
                )
                tally.expect(
                    not await store.bind(sid).exists(), "the loser wrote something", index, sid
                )
            elif result is not None:
                tally.expect(False, "a writer raised something else", index, result)
        tally.outcomes[f"{'a' if winners == [first] else 'b'} won"] += 1
        tally.outcomes[kind(results[0])] += 1

    await run_rounds(ROUNDS, WAVE, SEED, one_round)
    tally.expect(not await claims_agree_with_values(wide_engine), "claims disagree", -1, None)
    tally.verdict(["a won"], ["b won"])


async def test_a_value_released_by_one_session_while_another_claims_it(
    wide_engine: AsyncEngine, backend: str
) -> None:
    """A moves from value v to w while B claims v: B wins exactly when A's move came first,
    and never do both hold v."""
    tally = Tally(backend, ROUNDS)
    store = await make_store(wide_engine, tally)

    async def one_round(index: int, rng: random.Random) -> None:
        old, new = f"v{index}", f"w{index}"
        holder, claimer = f"a-{index}", f"b-{index}"
        await store.bind(holder).set_metadata({"slack_thread": old})
        moved, claimed = await race(
            tally,
            rng,
            lambda: store.bind(holder).set_metadata({"slack_thread": new}),
            lambda: store.bind(claimer).set_metadata({"slack_thread": old}),
        )
        tally.expect(moved is None, "the move failed", index, moved)
        tally.expect(
            claimed is None or isinstance(claimed, UniqueValueError),
            "the claim raised something else",
            index,
            claimed,
        )
        holders = await store.find_sessions_by_metadata("slack_thread", old)
        expected = [claimer] if claimed is None else []
        tally.expect(holders == expected, "the old value is held wrongly", index, holders)
        tally.outcomes["claimed" if claimed is None else "refused"] += 1

    await run_rounds(ROUNDS, WAVE, SEED, one_round)
    tally.expect(not await claims_agree_with_values(wide_engine), "claims disagree", -1, None)
    tally.verdict(["claimed"], ["refused"])


async def test_swaps_in_set_many_race_single_claims(wide_engine: AsyncEngine, backend: str) -> None:
    """A set_many swapping two sessions' values races a third session claiming one of them:
    the swap always lands whole or is refused whole, and every value has one holder."""
    tally = Tally(backend, ROUNDS)
    store = await make_store(wide_engine, tally)

    async def one_round(index: int, rng: random.Random) -> None:
        x, y = f"x{index}", f"y{index}"
        a, b, c = f"a-{index}", f"b-{index}", f"c-{index}"
        await store.set_many({a: {"slack_thread": x}, b: {"slack_thread": y}})
        swapped, claimed = await race(
            tally,
            rng,
            lambda: store.set_many({a: {"slack_thread": y}, b: {"slack_thread": x}}),
            lambda: store.bind(c).set_metadata({"slack_thread": x}),
        )
        tally.expect(swapped is None, "the swap failed", index, swapped)
        tally.expect(isinstance(claimed, UniqueValueError), "c took a held value", index, claimed)
        got: dict[str, Any] = {
            sid: (await store.bind(sid).get_metadata()).slack_thread for sid in (a, b, c)
        }
        tally.expect(got == {a: y, b: x, c: None}, "the swap is not whole", index, got)
        tally.outcomes[kind(claimed)] += 1

    await run_rounds(ROUNDS, WAVE, SEED, one_round)
    tally.expect(not await claims_agree_with_values(wide_engine), "claims disagree", -1, None)
    tally.verdict()
