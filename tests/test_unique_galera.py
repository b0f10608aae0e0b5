"""Unique fields on a 3-node MariaDB Galera cluster: every node claims at once.

Two nodes inserting one claim both succeed locally; the cluster's certification
then aborts one of them as a deadlock, which the store's retry policy runs again,
and the run again meets the claim replicated from the winner. Callers never see
the deadlock: one session holds the value, the others get it (or UniqueValueError).
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from sessionmeta import MetadataStore, SessionMeta, Unique, UniqueValueError

from .test_galera import galera_urls, nodes  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.galera, pytest.mark.mysql]

CALLERS = 51  # 17 on each node
ROUNDS = 8


class Thread(SessionMeta):
    title: str | None = None
    slack_thread: Annotated[str | None, Unique()] = None


async def _stores(engines: list[AsyncEngine]) -> list[MetadataStore[Thread]]:
    stores = [MetadataStore(Thread, engine, create_tables=True) for engine in engines]
    await stores[0].create_tables()
    return stores


async def test_get_or_create_by_from_every_node_makes_one_session(
    nodes: list[AsyncEngine],  # noqa: F811
) -> None:
    stores = await _stores(nodes)
    for round_ in range(ROUNDS):
        value = f"C0123/{round_}"
        results = await asyncio.gather(
            *(
                stores[caller % len(stores)].get_or_create_by(
                    "slack_thread", value, {"title": f"caller {caller}"}
                )
                for caller in range(CALLERS)
            ),
            return_exceptions=True,
        )
        failed = [repr(result) for result in results if isinstance(result, BaseException)]
        assert not failed, f"round {round_}: {len(failed)} callers failed: {failed[:3]}"
        found = [result for result in results if not isinstance(result, BaseException)]
        assert len({session_id for session_id, _ in found}) == 1, found
        assert sum(1 for _, created in found if created) == 1, found
        for store in stores:
            assert await store.find_sessions_by_metadata("slack_thread", value) == [found[0][0]]


async def test_two_nodes_claiming_one_value_leave_it_to_one(
    nodes: list[AsyncEngine],  # noqa: F811
) -> None:
    stores = await _stores(nodes)
    won: dict[str, int] = {}
    for round_ in range(30):
        value = f"T{round_}"
        here, there = stores[round_ % 3], stores[(round_ + 1) % 3]
        results = await asyncio.gather(
            here.bind(f"a{round_}").set_metadata({"slack_thread": value}),
            there.bind(f"b{round_}").set_metadata({"slack_thread": value}),
            return_exceptions=True,
        )
        winners = [sid for sid, result in zip("ab", results, strict=True) if result is None]
        assert len(winners) == 1, results
        loser = next(result for result in results if result is not None)
        assert isinstance(loser, UniqueValueError), repr(loser)
        assert loser.holder == f"{winners[0]}{round_}"
        won[winners[0]] = won.get(winners[0], 0) + 1
        for store in stores:
            assert await store.find_sessions_by_metadata("slack_thread", value) == [
                f"{winners[0]}{round_}"
            ]
