"""Tenant scoping raced against a concurrent hand-over, on every backend.

A session is handed from tenant A to tenant B by an unscoped write of
``owner_id="B"`` while A's scoped view works on it. Whatever the interleaving, a
scoped operation must behave as if it ran entirely before the hand-over, or was
refused entirely after it: A never reads B's data, never changes B's session,
and never undoes the hand-over. Likewise two tenants claiming one free session
at once leave it to exactly one of them.

Each test races many rounds, each on its own session, ``WAVE`` rounds at a time,
with the harness of ``tests/racing.py``: in each round the two sides start
together, or one of them is held back by up to twice the median time the racing
calls have taken so far, so that both orders, and the overlaps between them, occur.
Every broken invariant of every round is counted; a test fails with the counts per
invariant and a few examples, and also when the race never went one of its two
ways (which would make its passing meaningless).

Rounds per test: ``SESSIONMETA_SCOPE_RACE_ROUNDS`` (default 150).
"""

from __future__ import annotations

import os
import random
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from sessionmeta import (
    ConflictError,
    MetadataStore,
    ScopedStore,
    SessionMeta,
    SessionNotInScopeError,
    Versioned,
)

from .racing import Tally, kind, race, run_rounds

ROUNDS = int(os.environ.get("SESSIONMETA_SCOPE_RACE_ROUNDS", "150"))
# Rounds raced at the same time, each on its own session (and its own connections).
WAVE = 6
SEED = 20240611


class Meta(SessionMeta):
    owner_id: str | None = None
    title: str | None = None
    tags: list[str] | None = None


A_START: dict[str, Any] = {"owner_id": "A", "title": "A original", "tags": ["a-tag", "b-tag"]}


def b_state(index: int) -> dict[str, Any]:
    """B's data, written by the hand-over in the same ``set_metadata`` call as the new owner."""
    return {"owner_id": "B", "title": f"B secret {index}", "tags": ["b-tag"]}


def stored(meta: Meta) -> dict[str, Any]:
    """The keys a session holds, with their values."""
    return {name: getattr(meta, name) for name in sorted(meta.model_fields_set)}


async def make_store(engine: AsyncEngine) -> MetadataStore[Meta]:
    store = MetadataStore(Meta, engine, create_tables=True)
    await store.create_tables()
    return store


async def rounds(one_round: Callable[[int, random.Random], Awaitable[None]]) -> None:
    """``ROUNDS`` rounds, ``WAVE`` at a time, each with its own seeded random schedule."""
    await run_rounds(ROUNDS, WAVE, SEED, one_round)


# Scoped writes --------------------------------------------------------------------------


@pytest.mark.parametrize("conditional", [False, True], ids=["plain", "conditional"])
@pytest.mark.parametrize("with_b_data", [False, True], ids=["owner-only", "owner-and-b-data"])
async def test_scoped_write_never_undoes_a_hand_over(
    wide_engine: AsyncEngine, backend: str, conditional: bool, with_b_data: bool
) -> None:
    """A's write of its title either lands before the hand-over or is refused: B always owns
    the session afterwards, and A's title is there exactly when A's write succeeded (or, when
    the hand-over writes B's title too, never). Conditionally (``expected_version`` from an
    in-scope versioned read), A may also get ConflictError."""
    store = await make_store(wide_engine)
    tally = Tally(backend, ROUNDS)
    view_a = store.scoped(owner_id="A")
    allowed: tuple[type[Exception], ...] = (
        (ConflictError, SessionNotInScopeError) if conditional else (SessionNotInScopeError,)
    )

    async def one_round(index: int, rng: random.Random) -> None:
        session_id = f"write-{index}"
        await store.bind(session_id).set_metadata(A_START)
        version = None
        if conditional:
            read = await view_a.bind(session_id).get_metadata_versioned()
            assert stored(read.metadata) == A_START
            version = read.version
        mine = f"A write {index}"
        handed = b_state(index) if with_b_data else {"owner_id": "B"}
        a_result, b_result = await race(
            tally,
            rng,
            lambda: view_a.bind(session_id).set_metadata({"title": mine}, expected_version=version),
            lambda: store.bind(session_id).set_metadata(handed),
        )
        final = stored(await store.bind(session_id).get_metadata())
        tally.outcomes[kind(a_result)] += 1
        tally.expect(b_result is None, "hand-over failed", index, b_result)
        tally.expect(
            a_result is None or isinstance(a_result, allowed),
            f"A raised something other than {' or '.join(e.__name__ for e in allowed)}",
            index,
            a_result,
        )
        tally.expect(final.get("owner_id") == "B", "hand-over undone", index, final)
        if with_b_data:
            # A first, then B overwrites every key; or B first and A refused: B's data.
            tally.expect(final == b_state(index), "B's data changed", index, final)
        elif a_result is None:
            # Ordered before the hand-over, which leaves the title alone.
            tally.expect(final.get("title") == mine, "A's acknowledged write lost", index, final)
        else:
            tally.expect(
                final.get("title") == "A original", "A's refused write landed", index, final
            )
        if not with_b_data:
            tally.expect(final.get("tags") == A_START["tags"], "tags changed", index, final)

    await rounds(one_round)
    tally.verdict(["ok"], [error.__name__ for error in allowed])


@pytest.mark.parametrize(
    ("operation", "argument"),
    [
        ("delete_metadata", None),
        ("delete_metadata", ["title"]),
        ("add_to", "a"),
        ("remove_from", "b-tag"),
    ],
    ids=["delete-all", "delete-title", "add-to-tags", "remove-from-tags"],
)
async def test_scoped_change_never_touches_the_new_owners_data(
    wide_engine: AsyncEngine, backend: str, operation: str, argument: Any
) -> None:
    """A's delete or list change either precedes the hand-over (which then overwrites every
    key) or is refused: in every order the session ends up exactly as B's hand-over wrote it."""
    store = await make_store(wide_engine)
    tally = Tally(backend, ROUNDS)
    view_a = store.scoped(owner_id="A")

    def scoped_change(session_id: str) -> Awaitable[None]:
        bound = view_a.bind(session_id)
        if operation == "delete_metadata":
            return bound.delete_metadata(argument)
        if operation == "add_to":
            return bound.add_to("tags", argument)
        return bound.remove_from("tags", argument)

    async def one_round(index: int, rng: random.Random) -> None:
        session_id = f"change-{index}"
        await store.bind(session_id).set_metadata(A_START)
        a_result, b_result = await race(
            tally,
            rng,
            lambda: scoped_change(session_id),
            lambda: store.bind(session_id).set_metadata(b_state(index)),
        )
        final = stored(await store.bind(session_id).get_metadata())
        tally.outcomes[kind(a_result)] += 1
        tally.expect(b_result is None, "hand-over failed", index, b_result)
        tally.expect(
            a_result is None or isinstance(a_result, SessionNotInScopeError),
            "A raised something other than SessionNotInScopeError",
            index,
            a_result,
        )
        tally.expect(final.get("owner_id") == "B", "hand-over undone", index, final)
        tally.expect(
            final.get("title") == b_state(index)["title"], "B's title changed", index, final
        )
        tally.expect(final.get("tags") == ["b-tag"], "B's tags changed", index, final)

    await rounds(one_round)
    tally.verdict(["ok"], ["SessionNotInScopeError"])


# Scoped reads ---------------------------------------------------------------------------


@pytest.mark.parametrize("versioned", [False, True], ids=["get_metadata", "versioned"])
@pytest.mark.parametrize("keys", [None, ["title"]], ids=["all-keys", "title-only"])
async def test_scoped_read_never_sees_the_new_owners_data(
    wide_engine: AsyncEngine, backend: str, versioned: bool, keys: list[str] | None
) -> None:
    """A's read is refused or returns A's data as it stood before the hand-over, never B's
    (whose title the hand-over writes with the new owner); a version returned with it is the
    version of that state."""
    store = await make_store(wide_engine)
    tally = Tally(backend, ROUNDS)
    view_a = store.scoped(owner_id="A")
    expected = A_START if keys is None else {"title": A_START["title"]}

    async def scoped_read(session_id: str) -> Meta | Versioned[Meta]:
        bound = view_a.bind(session_id)
        if versioned:
            return await bound.get_metadata_versioned(keys)
        return await bound.get_metadata(keys)

    async def one_round(index: int, rng: random.Random) -> None:
        session_id = f"read-{index}"
        await store.bind(session_id).set_metadata(A_START)
        # The version of A's data, as A's view reports it before the hand-over.
        before = await view_a.bind(session_id).get_metadata_versioned()
        assert stored(before.metadata) == A_START
        a_result, b_result = await race(
            tally,
            rng,
            lambda: scoped_read(session_id),
            lambda: store.bind(session_id).set_metadata(b_state(index)),
        )
        tally.outcomes[kind(a_result)] += 1
        tally.expect(b_result is None, "hand-over failed", index, b_result)
        if isinstance(a_result, BaseException):
            tally.expect(
                isinstance(a_result, SessionNotInScopeError),
                "A raised something other than SessionNotInScopeError",
                index,
                a_result,
            )
            return
        if isinstance(a_result, Versioned):
            tally.expect(a_result.version == before.version, "version is not A's", index, a_result)
            a_result = a_result.metadata
        assert isinstance(a_result, Meta)
        seen = stored(a_result)
        tally.expect(
            b_state(index)["title"] not in repr(seen) and seen.get("owner_id") != "B",
            "A saw B's data",
            index,
            seen,
        )
        tally.expect(seen == expected, "A's read is not A's data", index, seen)

    await rounds(one_round)
    tally.verdict(["ok"], ["SessionNotInScopeError"])


# Claims of free sessions ----------------------------------------------------------------


@pytest.mark.parametrize("via", ["set_metadata", "add_to"])
@pytest.mark.parametrize("fresh", ["never-written", "emptied"])
async def test_two_tenants_claiming_one_free_session_leave_one_owner(
    wide_engine: AsyncEngine, backend: str, fresh: str, via: str
) -> None:
    """A's and B's scoped views write the same free session at once: exactly one succeeds,
    the other gets SessionNotInScopeError, and the session holds the winner's write alone."""
    store = await make_store(wide_engine)
    tally = Tally(backend, ROUNDS)
    views: dict[str, ScopedStore[Meta]] = {
        "A": store.scoped(owner_id="A"),
        "B": store.scoped(owner_id="B"),
    }

    def written(tenant: str, index: int) -> dict[str, Any]:
        if via == "set_metadata":
            return {"owner_id": tenant, "title": f"{tenant} claim {index}"}
        return {"owner_id": tenant, "tags": [f"{tenant} tag {index}"]}

    def claim(tenant: str, session_id: str, index: int) -> Callable[[], Awaitable[None]]:
        bound = views[tenant].bind(session_id)
        if via == "set_metadata":
            return lambda: bound.set_metadata({"title": f"{tenant} claim {index}"})
        return lambda: bound.add_to("tags", f"{tenant} tag {index}")

    async def one_round(index: int, rng: random.Random) -> None:
        session_id = f"claim-{index}"
        if fresh == "emptied":
            # A session row with no metadata left: free to claim, as a new id is.
            await store.bind(session_id).set_metadata({"title": "gone"})
            await store.bind(session_id).delete_metadata()
        outcomes = await race(
            tally, rng, claim("A", session_id, index), claim("B", session_id, index)
        )
        results = dict(zip("AB", outcomes, strict=True))
        final = stored(await store.bind(session_id).get_metadata())
        winners = [tenant for tenant, result in results.items() if result is None]
        refused = [
            tenant
            for tenant, result in results.items()
            if isinstance(result, SessionNotInScopeError)
        ]
        shown = {tenant: kind(result) for tenant, result in results.items()}
        tally.outcomes[f"{''.join(winners) or 'none'} won"] += 1
        tally.expect(
            len(winners) == 1 and len(refused) == 1, "not exactly one claim won", index, shown
        )
        tally.expect(
            any(final == written(tenant, index) for tenant in winners),
            "the session is not the winner's alone",
            index,
            (shown, final),
        )

    await rounds(one_round)
    tally.verdict(["A won"], ["B won"])
