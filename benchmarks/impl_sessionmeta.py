"""sessionmeta, through its public API only."""

from __future__ import annotations

from typing import Any

from data import KEYS, TWO_KEYS, BenchMeta, owner_of, session_id, values_of

from sessionmeta import MetadataStore


class SessionmetaImpl:
    name = "sessionmeta"

    def __init__(self, store: MetadataStore[BenchMeta]) -> None:
        self.store = store

    async def set1(self, index: int) -> None:
        await self.store.bind(session_id(index)).set_metadata({"title": f"Renamed {index}"})

    async def set10(self, index: int) -> None:
        await self.store.bind(session_id(index)).set_metadata(values_of(index))

    async def get_all(self, index: int) -> Any:
        result = await self.store.bind(session_id(index)).get_metadata()
        assert len(result.model_fields_set) == len(KEYS), result
        return result

    async def get2(self, index: int) -> Any:
        return await self.store.bind(session_id(index)).get_metadata(TWO_KEYS)

    async def delete1(self, index: int) -> None:
        await self.store.bind(session_id(index)).delete_metadata(["title"])

    async def find_eq(self, index: int) -> list[str]:
        return await self.store.find_sessions_by_metadata("owner_id", owner_of(index))

    async def get_metadata_x50(self, ids: list[str]) -> list[Any]:
        """What an application does without ``get_many``: one call per session."""
        return [await self.store.bind(sid).get_metadata() for sid in ids]
