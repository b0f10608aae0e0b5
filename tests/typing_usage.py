"""Checked by mypy in test_typing.py: each line marked E must be reported, and no other."""

from __future__ import annotations

from typing import Annotated

from sqlalchemy.ext.asyncio import AsyncEngine

from sessionmeta import Encrypted, EncryptionKeys, MetadataStore, SessionMeta


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


class SecretMeta(SessionMeta):
    email: Annotated[str | None, Encrypted()] = None


async def encrypted(engine: AsyncEngine, key: bytes, index_key: bytes) -> None:
    keys = EncryptionKeys({"k1": key}, current="k1", index_key=index_key)
    store = MetadataStore(SecretMeta, engine, keys=keys)
    email: str | None = (await store.bind("s1").get_metadata()).email
    report = await store.rekey(batch_size=100)
    rewritten: int = report.rewritten
    print(email, rewritten)
    MetadataStore(SecretMeta, engine, keys={"k1": key})  # E
    EncryptionKeys({"k1": key}, current=1, index_key=index_key)  # E
    wrong: int = (await store.bind("s1").get_metadata()).email  # E
    print(wrong)
