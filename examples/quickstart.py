"""Quickstart: typed metadata for agent sessions, on an embedded SQLite file."""

import asyncio

from sessionmeta import MetadataStore, SessionMeta


class ChatMeta(SessionMeta):
    owner_id: str | None = None
    title: str | None = None
    tags: list[str] | None = None
    incognito: bool | None = None


async def main() -> None:
    url = "sqlite+aiosqlite:///quickstart.sqlite3"
    async with MetadataStore.from_url(ChatMeta, url, create_tables=True) as store:
        meta = store.bind("session-1")
        await meta.set_metadata({"owner_id": "user_123", "title": "My Chat", "tags": ["work"]})
        read = await meta.get_metadata()  # a ChatMeta: read.tags is list[str] | None
        print(read.title, read.tags, read.incognito)
        print(await store.find_sessions_by_metadata("owner_id", "user_123"))


asyncio.run(main())
