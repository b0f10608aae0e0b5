"""The benchmark's use of the query API (issue 3): range finds, listings, get_many.

Kept apart from the core operations: it is written against the query API's
contract (``store.find_sessions``, ``store.list_sessions``, ``store.get_many``,
``sessionmeta.Condition(key, op, value)``) and its rows are reported as not
available until that API is in the package.
"""

from __future__ import annotations

from typing import Any

from data import BenchMeta, owner_of

import sessionmeta
from sessionmeta import MetadataStore


def available() -> bool:
    return hasattr(sessionmeta, "Condition") and all(
        hasattr(MetadataStore, name) for name in ("find_sessions", "list_sessions", "get_many")
    )


class SessionmetaQueries:
    name = "sessionmeta"

    def __init__(self, store: MetadataStore[BenchMeta]) -> None:
        self.store: Any = store
        self.condition: Any = getattr(sessionmeta, "Condition", None)

    async def find_range(self, index: int, start: int) -> Any:
        return await self.store.find_sessions(self.condition("priority", "ge", start), limit=100)

    async def list50(self, index: int) -> Any:
        return await self.store.list_sessions(
            self.condition("owner_id", "eq", owner_of(index)), limit=50
        )

    async def get_many(self, ids: list[str]) -> Any:
        return await self.store.get_many(ids)
