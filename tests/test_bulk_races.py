"""``set_many`` and ``delete_many`` raced against every other write path, on every backend.

Each round works on its own three sessions ``s0 < s1 < s2``. The bulk call covers
all three; the other call works on ``s1`` (the overlapping session in the middle,
so the bulk call reaches it after ``s0``): a plain ``set_metadata``, ``add_to``,
``remove_from``, a delete of the session row (as the Agents SDK's
``clear_session()`` does), ``set_metadata(..., create=False)``, a scoped view's
write, or another ``set_many`` that covers ``s1``, ``s2`` and a session of its
own, listed in the opposite order.

Whatever the interleaving, the round must end as the two calls would leave it run
one after the other, in one order or the other: the calls' outcomes (success, or
the sessionmeta error that order gives, such as ``SessionNotFoundError`` for a
``create=False`` write before the session exists) and every session's stored keys,
and whether its row exists, are compared with a small model of the store run in
both orders. So ``set_many`` is all or nothing (never half of a call's sessions
written), a deleted session is never re-created by a write that should not create
it, and no call fails because of the other. Besides: each session's ``contains``
index (its items rows) matches its stored list, and no error leaks that is not
sessionmeta's. Two large ``set_many`` calls listing the same sessions in opposite
orders never deadlock: each writes its sessions in id order, so the database never
has to abort one of them (the store would retry it, which the test counts).

Not asserted here: on MariaDB, concurrent writes of list values to sessions next to
each other in id order (new sessions, say) deadlock in the items table's gap locks,
and are retried; these tests see about one such retry per round.

Rounds per test: ``SESSIONMETA_BULK_RACE_ROUNDS`` (default 40; a quarter of that for
the two large calls).
"""

from __future__ import annotations

import contextlib
import copy
import os
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from sessionmeta import MetadataStore, SessionMeta, SessionMetaError, field
from sessionmeta.core.codec import item_hashes

from .dbstate import clear_session
from .racing import CountedRetries, Tally, kind, race, run_rounds
from .test_bulk import small_chunks

ROUNDS = int(os.environ.get("SESSIONMETA_BULK_RACE_ROUNDS", "40"))
WAVE = 6
SEED = 20250301


class Meta(SessionMeta):
    owner_id: str | None = None
    title: str | None = None
    tags: list[str] | None = None
    # Written by set_many calls only: which call wrote a session last.
    bulk: str | None = None
    # Written by the single-session calls only.
    single: str | None = None


Store = MetadataStore[Meta]
# Each session's stored keys; a session missing from the mapping has no row.
State = dict[str, dict[str, Any]]
START: dict[str, Any] = {"owner_id": "A", "title": "start", "tags": ["t0", "t1"]}
SINGLE: dict[str, Any] = {"title": "single", "tags": ["single"], "single": "S"}


@dataclass
class Op:
    """One racing call, and what it does to the model of the store: its outcome
    (``"ok"``, the sessionmeta error it raises, or what a read returns) and the state
    it leaves. ``observe`` turns what the call returned or raised into that outcome."""

    name: str
    call: Callable[[], Awaitable[Any]]
    apply: Callable[[State], object]
    observe: Callable[[object], object] = kind


def bulk_values(marker: str, sessions: list[str]) -> dict[str, dict[str, Any]]:
    """What one set_many call writes: a hand-over to owner B, marked with the call."""
    values = {"owner_id": "B", "title": f"bulk {marker}", "tags": ["t1", marker], "bulk": marker}
    return {session_id: dict(values) for session_id in sessions}


def set_many(store: Store, values: dict[str, dict[str, Any]]) -> Op:
    def apply(state: State) -> str:
        for session_id, written in values.items():
            state.setdefault(session_id, {}).update(written)
        return "ok"

    return Op("set_many", lambda: store.set_many(values), apply)


def delete_many(store: Store, sessions: list[str]) -> Op:
    def apply(state: State) -> str:
        for session_id in sessions:
            if session_id in state:
                state[session_id] = {}
        return "ok"

    return Op("delete_many", lambda: store.delete_many(sessions), apply)


def set_one(store: Store, session_id: str, *, create: bool = True) -> Op:
    def apply(state: State) -> str:
        if session_id not in state and not create:
            return "SessionNotFoundError"
        state.setdefault(session_id, {}).update(SINGLE)
        return "ok"

    name = "set_metadata" if create else "set_metadata(create=False)"
    return Op(name, lambda: store.bind(session_id).set_metadata(SINGLE, create=create), apply)


def add_to(store: Store, session_id: str) -> Op:
    def apply(state: State) -> str:
        stored = state.setdefault(session_id, {})
        stored["tags"] = [*(stored.get("tags") or []), "added"]
        return "ok"

    return Op("add_to", lambda: store.bind(session_id).add_to("tags", "added"), apply)


def remove_from(store: Store, session_id: str) -> Op:
    def apply(state: State) -> str:
        # Removing never creates the session; removing from nothing writes nothing.
        current = state.get(session_id, {}).get("tags")
        if current:
            state[session_id]["tags"] = [tag for tag in current if tag != "t1"]
        return "ok"

    return Op("remove_from", lambda: store.bind(session_id).remove_from("tags", "t1"), apply)


def delete_session(store: Store, session_id: str) -> Op:
    def apply(state: State) -> str:
        state.pop(session_id, None)
        return "ok"

    return Op("delete session row", lambda: clear_session(store.engine, session_id), apply)


def scoped_set(store: Store, session_id: str) -> Op:
    written = {"title": "single", "single": "S"}

    def apply(state: State) -> str:
        stored = state.get(session_id, {})
        if stored and stored.get("owner_id") != "A":
            return "SessionNotInScopeError"
        # In scope, or free (no metadata, or no session row): claimed for owner A.
        state[session_id] = {**stored, "owner_id": "A", **written}
        return "ok"

    view = store.scoped(owner_id="A")
    return Op("scoped set_metadata", lambda: view.bind(session_id).set_metadata(written), apply)


def get_many(store: Store, sessions: list[str]) -> Op:
    """A read of the round's sessions, in one statement: it sees all of a bulk call or
    none of it, if the call is one transaction."""

    def apply(state: State) -> object:
        return copy.deepcopy({session_id: state.get(session_id, {}) for session_id in sessions})

    def observe(result: object) -> object:
        if not isinstance(result, dict):
            return kind(result)
        return {
            sid: {name: getattr(meta, name) for name in meta.model_fields_set}
            for sid, meta in result.items()
        }

    return Op("get_many", lambda: store.get_many(sessions), apply, observe)


# The other side of each race: (name, its op on the round's sessions, whether s1 starts
# without a session row).
Other = Callable[[Store, list[str], int], Op]
OTHERS: dict[str, tuple[Other, bool]] = {
    "set_metadata": (lambda store, ids, index: set_one(store, ids[1]), False),
    "add_to": (lambda store, ids, index: add_to(store, ids[1]), False),
    "remove_from": (lambda store, ids, index: remove_from(store, ids[1]), False),
    "delete-session": (lambda store, ids, index: delete_session(store, ids[1]), False),
    # Listed in the opposite order, with a session of its own after the shared ones.
    "set_many": (
        lambda store, ids, index: set_many(
            store, bulk_values(f"C{index}", [ids[3], ids[2], ids[1]])
        ),
        False,
    ),
    # s1 starts without a row, so a create=False write ordered first is refused.
    "create-false": (lambda store, ids, index: set_one(store, ids[1], create=False), True),
    "scoped": (lambda store, ids, index: scoped_set(store, ids[1]), False),
    "get_many": (lambda store, ids, index: get_many(store, ids[:3]), False),
}


async def make_store(engine: AsyncEngine, tally: Tally) -> Store:
    store = MetadataStore(Meta, engine, create_tables=True, retry=CountedRetries(tally=tally))
    await store.create_tables()
    return store


async def observed(store: Store, sessions: list[str]) -> State:
    """The stored keys of each of ``sessions`` that has a row."""
    table = store.tables.sessions
    async with store.engine.connect() as connection:
        rows = await connection.execute(
            select(table.c.session_id).where(table.c.session_id.in_(sessions))
        )
        existing = {row[0] for row in rows}
    metadata = await store.get_many(sorted(existing))
    return {
        session_id: {name: getattr(meta, name) for name in meta.model_fields_set}
        for session_id, meta in metadata.items()
    }


async def items_mismatches(
    store: Store, sessions: list[str], state: State, tally: Tally
) -> list[str]:
    """Where the items table (what ``contains`` finds) disagrees with the stored lists.

    Items are joined to the value they came from by its hash, so those of an older
    value are never found; PostgreSQL may leave some behind when two writers of one
    list race (``sql/schema.py``). They are counted in the tally's notes, not here.
    """
    values, items = store.tables.values, store.tables.items
    async with store.engine.connect() as connection:
        hashes = {
            row[0]: row[1]
            for row in await connection.execute(
                select(values.c.session_id, values.c.value_hash).where(
                    values.c.session_id.in_(sessions), values.c.key == "tags"
                )
            )
        }
        found: dict[str, set[str]] = {}
        for session_id, value_hash, item_hash in await connection.execute(
            select(items.c.session_id, items.c.value_hash, items.c.item_hash).where(
                items.c.session_id.in_(sessions), items.c.key == "tags"
            )
        ):
            if value_hash == hashes.get(session_id):
                found.setdefault(session_id, set()).add(item_hash)
            else:
                tally.notes["items of an older value left"] += 1
    mismatches = []
    for session_id in sessions:
        tags = state.get(session_id, {}).get("tags")
        expected = set(item_hashes(tags))
        if found.get(session_id, set()) != expected:
            mismatches.append(
                f"{session_id} tags {tags!r}: {len(found.get(session_id, ()))} items, "
                f"{len(expected)} expected"
            )
    return mismatches


async def contains_agrees(store: Store, final: State, tally: Tally) -> None:
    """``find_sessions(field("tags").contains(x))`` finds exactly the sessions whose
    stored tags hold ``x``, for each item the races wrote."""
    for item in ("t0", "t1", "added", "single"):
        found: list[str] = []
        cursor: str | None = None
        while True:
            page = await store.find_sessions(field("tags").contains(item), limit=500, cursor=cursor)
            found.extend(page)
            cursor = page.next_cursor
            if cursor is None:
                break
        expected = sorted(sid for sid, keys in final.items() if item in (keys.get("tags") or ()))
        tally.expect(
            sorted(found) == expected,
            "contains finds other sessions than the stored lists hold",
            -1,
            (item, sorted(set(found) ^ set(expected))[:5]),
        )


def serial_orders(
    start: State, bulk: Op, other: Op
) -> list[tuple[str, tuple[object, object], State]]:
    """What each order of the two calls gives: (label, their outcomes, the final state)."""
    results = []
    for label, bulk_first in (("bulk first", True), ("other first", False)):
        state = copy.deepcopy(start)
        if bulk_first:
            outcomes = (bulk.apply(state), other.apply(state))
        else:
            other_outcome = other.apply(state)
            outcomes = (bulk.apply(state), other_outcome)
        results.append((label, outcomes, state))
    return results


def check_round(
    tally: Tally,
    index: int,
    start: State,
    bulk: Op,
    other: Op,
    results: tuple[object, object],
    final: State,
) -> None:
    """The round's outcomes and final state are those of one serial order of the calls."""
    for op, result in zip((bulk, other), results, strict=True):
        tally.expect(
            not isinstance(result, Exception) or isinstance(result, SessionMetaError),
            f"{op.name} raised an error that is not sessionmeta's",
            index,
            repr(result),
        )
    kinds = (bulk.observe(results[0]), other.observe(results[1]))
    orders = serial_orders(start, bulk, other)
    matching = [label for label, outcomes, state in orders if (outcomes, state) == (kinds, final)]
    tally.outcomes[
        matching[0] if len(matching) == 1 else "either order" if matching else "none"
    ] += 1
    if not any(outcomes == kinds for _, outcomes, _ in orders):
        tally.expect(False, "a call's outcome is no order's", index, (kinds, results))
    elif not matching:
        tally.expect(
            False,
            "the final state is no order's",
            index,
            {"outcomes": kinds, "final": final, **{label: s for label, _, s in orders}},
        )


def half_written(
    result: object, marker: str, sessions: list[str], final: State, others: set[str]
) -> bool:
    """Whether a set_many call is partly there: it succeeded, yet a surviving session of
    its holds neither its write nor one of ``others`` (another set_many's, written whole
    over it); or it failed, yet a session holds its write."""
    markers = [final[sid].get("bulk") for sid in sessions if sid in final]
    if isinstance(result, BaseException):
        return marker in markers
    return any(found != marker and found not in others for found in markers)


# Each other call against a set_many of one statement per chunk (all three sessions);
# two of them also against a set_many of a statement per session (chunks of a session's
# four rows), whose statements only its transaction holds together.
SET_MANY_CASES = [
    *(pytest.param(name, None, id=name) for name in OTHERS),
    *(
        pytest.param(name, 4, id=f"{name}-statement-per-session")
        for name in ("delete-session", "get_many")
    ),
]


@pytest.mark.parametrize(("other_name", "chunk_rows"), SET_MANY_CASES)
async def test_set_many_races(
    wide_engine: AsyncEngine, backend: str, other_name: str, chunk_rows: int | None
) -> None:
    """set_many over three sessions, raced against another write on the middle one."""
    tally = Tally(backend, ROUNDS)
    store = await make_store(wide_engine, tally)
    make_other, s1_absent = OTHERS[other_name]
    everyone: list[str] = []
    statements = "per-session" if chunk_rows else "whole"

    async def one_round(index: int, rng: random.Random) -> None:
        ids = [f"bulk-{other_name}-{statements}-{index:03d}-{n}" for n in range(4)]
        everyone.extend(ids)
        mine, marker, theirs = ids[:3], f"B{index}", f"C{index}"
        start = {sid: dict(START) for sid in mine if not (s1_absent and sid == ids[1])}
        await store.set_many(start)
        # Listed out of order (s1 before s2, the other set_many s2 before s1): each call
        # writes its sessions in id order whatever the order given.
        bulk = set_many(store, bulk_values(marker, [mine[1], mine[2], mine[0]]))
        other = make_other(store, ids, index)
        results = await race(tally, rng, bulk.call, other.call)
        final = await observed(store, ids)
        check_round(tally, index, start, bulk, other, results, final)
        tally.expect(
            not half_written(results[0], marker, mine, final, {theirs}),
            "a set_many call is partly there",
            index,
            (kind(results[0]), final),
        )
        if other_name == "set_many":
            tally.expect(
                not half_written(results[1], theirs, ids[1:], final, {marker}),
                "a set_many call is partly there",
                index,
                (kind(results[1]), final),
            )
            shared = {final[sid].get("bulk") for sid in ids[1:3]}
            tally.expect(
                len(shared) == 1, "shared sessions hold different calls' writes", index, final
            )
        for problem in await items_mismatches(store, ids, final, tally):
            tally.expect(False, "the items table disagrees with a stored list", index, problem)

    with small_chunks(chunk_rows) if chunk_rows else contextlib.nullcontext():
        await run_rounds(ROUNDS, WAVE, SEED, one_round)
    await contains_agrees(store, await observed(store, everyone), tally)
    # Every other call gives a different end in each order: both orders must have happened.
    tally.verdict(["bulk first"], ["other first"])


# Sessions the two set_many calls of the test below share: enough rows that each call's
# statements take long enough for the other to start in the middle of them.
SHARED = 400


async def test_set_many_calls_in_opposite_orders_never_deadlock(
    wide_engine: AsyncEngine, backend: str
) -> None:
    """Two set_many calls over the same sessions, one listing them in id order and the
    other in reverse, racing: each writes its sessions in id order, so neither ever waits
    for a session the other holds while holding one the other waits for. No deadlock for
    the database to break (a retry would show one), and every session ends with the same
    call's write: the calls ran as if one after the other."""
    rounds = max(1, ROUNDS // 4)
    tally = Tally(backend, rounds)
    store = await make_store(wide_engine, tally)
    ids = [f"shared-{n:04d}" for n in range(SHARED)]
    await store.set_many({sid: {"title": "start"} for sid in ids})

    async def one_round(index: int, rng: random.Random) -> None:
        # No lists: on MariaDB their items' gap locks would deadlock on their own.
        def written(marker: str, order: list[str]) -> dict[str, dict[str, Any]]:
            return {
                sid: {"title": f"{marker} {index}", "bulk": f"{marker}{index}"} for sid in order
            }

        forward, backward = written("B", ids), written("C", ids[::-1])
        results = await race(
            tally, rng, lambda: store.set_many(forward), lambda: store.set_many(backward)
        )
        for result in results:
            tally.expect(result is None, "a set_many call failed", index, repr(result))
        markers = {meta.bulk or "" for meta in (await store.get_many(ids)).values()}
        tally.expect(len(markers) == 1, "sessions hold different calls' writes", index, markers)
        tally.outcomes[f"{min(markers)[:1]} last"] += 1

    await run_rounds(rounds, 1, SEED, one_round)
    tally.expect(tally.retries == 0, "the two calls deadlocked", -1, tally.retries)
    tally.verdict(["B last"], ["C last"])


# Against delete_many these end alike in either order: nothing to tell the orders apart.
COMMUTING = ("remove_from", "delete-session")


@pytest.mark.parametrize("other_name", list(OTHERS))
async def test_delete_many_races(wide_engine: AsyncEngine, backend: str, other_name: str) -> None:
    """delete_many of every key of three sessions, raced against another write on the
    middle one; delete_many keeps the session rows and never creates one."""
    tally = Tally(backend, ROUNDS)
    store = await make_store(wide_engine, tally)
    make_other, _ = OTHERS[other_name]
    everyone: list[str] = []

    async def one_round(index: int, rng: random.Random) -> None:
        ids = [f"delete-{other_name}-{index:03d}-{n}" for n in range(4)]
        everyone.extend(ids)
        mine = ids[:3]
        # Every session starts with a row: delete_many keeps it, so create=False lands.
        start = {sid: dict(START) for sid in mine}
        await store.set_many(start)
        deleting = delete_many(store, [mine[2], mine[0], mine[1]])
        other = make_other(store, ids, index)
        results = await race(tally, rng, deleting.call, other.call)
        final = await observed(store, ids)
        check_round(tally, index, start, deleting, other, results, final)
        for problem in await items_mismatches(store, ids, final, tally):
            tally.expect(False, "the items table disagrees with a stored list", index, problem)

    await run_rounds(ROUNDS, WAVE, SEED, one_round)
    await contains_agrees(store, await observed(store, everyone), tally)
    if other_name in COMMUTING:
        tally.verdict()
    else:
        tally.verdict(["bulk first"], ["other first"])
