"""Checked by mypy in test_query_typing.py: each line marked E must be reported, and no other."""

from __future__ import annotations

from sessionmeta import Condition, MetadataStore, OrderBy, SessionMeta, any_of, field


class ChatMeta(SessionMeta):
    owner_id: str | None = None
    priority: int | None = None


async def usage(store: MetadataStore[ChatMeta]) -> None:
    page = await store.find_sessions(field("priority") > 2, Condition("owner_id", "eq", "u1"))
    first: str = page[0]
    cursor: str | None = page.next_cursor
    listed = await store.list_sessions({"owner_id": "u1"}, order_by="-created_at", cursor=cursor)
    item = listed[0]
    priority: int | None = item.metadata.priority
    session_id: str = item.session_id
    many = await store.get_many([first, session_id])
    meta: ChatMeta = many[first]
    either = any_of(field("priority") < 1, field("owner_id").missing())
    count: int = await store.count_sessions(either & (field("owner_id") != "u2"))
    tenant = store.scoped(owner_id="u1")
    read = await tenant.bind("s1").get_metadata()
    mine: int | None = read.priority
    ordered = await tenant.find_sessions(order_by=OrderBy("priority", descending=True))
    print(priority, meta, count, mine, ordered)
    Condition("priority", "greater", 2)  # E
    wrong_ids: list[int] = await store.find_sessions()  # E
    wrong_priority: str = item.metadata.priority  # E
    await store.find_sessions(42)  # E
    await store.list_sessions(order_by=3)  # E
    tenant_meta: int = (await tenant.get_many(["s"]))["s"]  # E
    print(wrong_ids, wrong_priority, tenant_meta)
