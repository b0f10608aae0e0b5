"""Checked by mypy in test_typing.py: each line marked E must be reported, and no other."""

from __future__ import annotations

from sessionmeta import MetadataStore, SessionMeta


class ChatMeta(SessionMeta):
    owner_id: str | None = None
    priority: int | None = None


async def usage(store: MetadataStore[ChatMeta]) -> None:
    meta = store.bind("s1")
    read = await meta.get_metadata()
    title: str | None = read.owner_id
    count: int | None = read.priority
    print(title, count)
    print(read.titel)  # E
    ChatMeta(priority="high")  # E
    wrong: int = read.owner_id  # E
    ids: list[int] = await store.find_sessions_by_metadata("owner_id", "u1")  # E
    print(wrong, ids)
    await store.set_many({"s1": ChatMeta(priority=1), "s2": {"owner_id": "u1"}})
    await store.set_many({f"s{n}": {"priority": n} for n in range(3)})
    await store.set_many({"s1": OtherMeta()})  # E
    await store.set_many(["s1"])  # E
    await store.delete_many(["s1", "s2"], keys=["priority"])


class OtherMeta(SessionMeta):
    title: str | None = None
