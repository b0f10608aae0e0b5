"""The drop-in's whole-history replacement raced against the SDK's own writes, on every backend.

The SDK's compaction replaces a session's history through the drop-in's
``_atomic_replace_items`` (``Operations.replace_history``: one transaction holding
the session's lock). Each round gives a session metadata and four messages, then
replaces the history with a summary through one drop-in while another drop-in on
the same session (as another request would) runs ``add_items``, ``pop_item``,
``clear_session``, ``set_metadata`` or ``add_to``.

What the SDK allows: a replacement does not check whether the history it replaces
is the one compacted (its Redis session says so), so a message added just before it
is replaced away with the rest; one added after it follows the summary. So the round
ends as the two calls would leave it one after the other, in one order or the other:
the history (every message once, in order, nothing of the old history left), what
``pop_item`` returned, whether the replacement found the session, and the metadata,
which the replacement never touches. A cleared session stays gone, with no message
and no metadata left, and no call fails or hangs (a deadlock nobody broke).

Rounds per test: ``SESSIONMETA_COMPACTION_RACE_ROUNDS`` (default 40).
"""

from __future__ import annotations

import os
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from agents.items import TResponseInputItem
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from sessionmeta.agents import MetadataSQLAlchemySession
from tests.models import ChatMeta
from tests.racing import Tally, kind, race, run_rounds

ROUNDS = int(os.environ.get("SESSIONMETA_COMPACTION_RACE_ROUNDS", "40"))
WAVE = 6
SEED = 20250302

Drop = MetadataSQLAlchemySession[ChatMeta]
START: dict[str, Any] = {"owner_id": "A", "title": "kept", "tags": ["x"]}


def message(role: str, text: str) -> TResponseInputItem:
    return {"role": role, "content": text}  # type: ignore[return-value,misc]


def drop_in(engine: AsyncEngine, session_id: str) -> Drop:
    return MetadataSQLAlchemySession(session_id, engine=engine, metadata_model=ChatMeta)


@dataclass
class Final:
    """What a round left: the history, whether the session row is there, its metadata
    and how many message rows it has (the SDK reads only a session's own)."""

    history: list[Any]
    exists: bool
    metadata: dict[str, Any]
    messages: int


@dataclass(frozen=True)
class Outcome:
    """What one order of the two calls gives: their results and what is left."""

    replaced: bool
    other: object
    history: list[Any]
    exists: bool
    metadata: dict[str, Any]


# The other side of a race: what it runs on its drop-in, and what each order gives.
@dataclass(frozen=True)
class Other:
    run: Callable[[Drop, int], Awaitable[Any]]
    orders: Callable[[list[Any], list[Any], int], dict[str, Outcome]]


def _adding(history: list[Any], summary: list[Any], index: int) -> dict[str, Outcome]:
    new = message("user", f"new {index}")
    return {
        # Added, then replaced away with the rest: the SDK's replacement is not conditional.
        "other first": Outcome(True, None, summary, True, START),
        "replace first": Outcome(True, None, [*summary, new], True, START),
    }


def _popping(history: list[Any], summary: list[Any], index: int) -> dict[str, Outcome]:
    return {
        "other first": Outcome(True, history[-1], summary, True, START),
        "replace first": Outcome(True, summary[-1], summary[:-1], True, START),
    }


def _clearing(history: list[Any], summary: list[Any], index: int) -> dict[str, Outcome]:
    return {
        # The replacement finds no session and creates none.
        "other first": Outcome(False, None, [], False, {}),
        "replace first": Outcome(True, None, [], False, {}),
    }


def _renaming(history: list[Any], summary: list[Any], index: int) -> dict[str, Outcome]:
    renamed = {**START, "title": f"renamed {index}"}
    return {"either order": Outcome(True, None, summary, True, renamed)}


def _tagging(history: list[Any], summary: list[Any], index: int) -> dict[str, Outcome]:
    tagged = {**START, "tags": [*START["tags"], f"tag {index}"]}
    return {"either order": Outcome(True, None, summary, True, tagged)}


OTHERS: dict[str, Other] = {
    "add_items": Other(lambda s, i: s.add_items([message("user", f"new {i}")]), _adding),
    "pop_item": Other(lambda s, i: s.pop_item(), _popping),
    "clear_session": Other(lambda s, i: s.clear_session(), _clearing),
    "set_metadata": Other(lambda s, i: s.set_metadata({"title": f"renamed {i}"}), _renaming),
    "add_to": Other(
        lambda s, i: s.metadata_store.bind(s.session_id).add_to("tags", f"tag {i}"), _tagging
    ),
}


async def left(session: Drop) -> Final:
    store = session.metadata_store
    messages = session.sql_metadata.tables["agent_messages"]
    async with session.engine.connect() as connection:
        count = await connection.scalar(
            select(func.count())
            .select_from(messages)
            .where(messages.c.session_id == session.session_id)
        )
    metadata = await session.get_metadata()
    return Final(
        history=list(await session.get_items()),
        exists=await store.exists(session.session_id),
        metadata={name: getattr(metadata, name) for name in metadata.model_fields_set},
        messages=int(count or 0),
    )


@pytest.mark.parametrize("other_name", list(OTHERS))
async def test_history_replacement_races(
    wide_engine: AsyncEngine, backend: str, other_name: str
) -> None:
    """The drop-in's replacement of a session's history, raced against another call on it."""
    other = OTHERS[other_name]
    tally = Tally(backend, ROUNDS)
    await MetadataSQLAlchemySession(
        "tables", engine=wide_engine, metadata_model=ChatMeta, create_tables=True
    ).create_tables()

    async def one_round(index: int, rng: random.Random) -> None:
        session_id = f"{other_name}-{index:03d}"
        compacting, writing = drop_in(wide_engine, session_id), drop_in(wide_engine, session_id)
        history = [
            message("user" if n % 2 == 0 else "assistant", f"m{n} {index}") for n in range(4)
        ]
        summary = [message("user", f"summary {index}"), message("assistant", f"ack {index}")]
        await compacting.set_metadata(START)
        await compacting.add_items(history)
        replaced, result = await race(
            tally,
            rng,
            lambda: compacting._atomic_replace_items(summary),
            lambda: other.run(writing, index),
        )
        final = await left(compacting)
        for name, outcome in (("replacement", replaced), (other_name, result)):
            tally.expect(
                not isinstance(outcome, BaseException), f"{name} raised", index, repr(outcome)
            )
        tally.expect(
            final.messages == len(final.history),
            "message rows the history does not show",
            index,
            (final.messages, final.history),
        )
        orders = other.orders(history, summary, index)
        seen = Outcome(replaced is True, result, final.history, final.exists, final.metadata)
        matching = [label for label, outcome in orders.items() if outcome == seen]
        tally.outcomes[matching[0] if matching else kind(result)] += 1
        if not matching and not isinstance(result, BaseException):
            tally.expect(False, "no order of the two calls gives this", index, (seen, orders))

    await run_rounds(ROUNDS, WAVE, SEED, one_round)
    orders = other.orders([None], [None], 0)
    tally.verdict(*([label] for label in orders))
