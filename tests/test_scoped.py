"""A scoped view sees one tenant only, on every query path and every backend."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from sessionmeta import (
    MetadataStore,
    SessionMeta,
    SessionNotInScopeError,
    any_of,
    field,
)


class Meta(SessionMeta):
    owner_id: str | None = None
    org: str | None = None
    title: str | None = None
    priority: int | None = None
    tags: list[str] | None = None


TENANTS = ("u1", "u2", "u3")


@pytest.fixture
async def tenants(engine: AsyncEngine) -> MetadataStore[Meta]:
    store = MetadataStore(Meta, engine, create_tables=True)
    for tenant in TENANTS:
        for index in range(6):
            await store.bind(f"{tenant}-{index}").set_metadata(
                {
                    "owner_id": tenant,
                    "org": "acme" if index % 2 else "globex",
                    "title": f"title {index}",
                    "priority": index,
                    "tags": ["shared", tenant],
                }
            )
    # Sessions of nobody: metadata without an owner, and a session row with no metadata.
    await store.bind("orphan").set_metadata({"title": "title 1", "priority": 3, "tags": ["shared"]})
    await store.bind("empty").set_metadata({"title": "x"})
    await store.bind("empty").delete_metadata()
    return store


def owned_by(ids: Any, tenant: str) -> bool:
    return all(str(session_id).startswith(f"{tenant}-") for session_id in ids)


FILTERS: list[list[Any]] = [
    [],
    [field("title") == "title 1"],
    [field("owner_id") != "u1"],
    [field("owner_id") == "u2"],
    [field("owner_id").not_in(["u1"])],
    [field("tags").contains("shared")],
    [field("tags").contains("u3")],
    [field("tags").missing()],
    [field("priority") > 1],
    [any_of(field("owner_id") == "u2", field("priority") >= 0)],
    [any_of(field("tags").missing(), field("title") == "title 1")],
    [{"org": "acme"}],
]
ORDERS = ["session_id", "-created_at", "updated_at", "-priority", "title"]


async def test_every_query_path_of_a_scoped_view_stays_in_its_tenant(
    tenants: MetadataStore[Meta],
) -> None:
    view = tenants.scoped(owner_id="u1")
    mine = {f"u1-{index}" for index in range(6)}
    for filters in FILTERS:
        expected = set(await tenants.find_sessions(*filters, limit=1000)) & mine
        for order_by in ORDERS:
            found = await view.find_sessions(*filters, order_by=order_by, limit=1000)
            assert set(found) == expected, (filters, order_by)
            # Page by page, through the cursor.
            paged: list[str] = []
            cursor = None
            while True:
                page = await view.list_sessions(*filters, order_by=order_by, limit=2, cursor=cursor)
                assert all(item.metadata.owner_id == "u1" for item in page)
                paged.extend(item.session_id for item in page)
                if (cursor := page.next_cursor) is None:
                    break
            assert set(paged) == expected, (filters, order_by)
        assert await view.count_sessions(*filters) == len(expected)
    # A cursor made by the unscoped store does not widen the view.
    wide = await tenants.find_sessions(limit=1)
    assert owned_by(await view.find_sessions(cursor=wide.next_cursor), "u1")
    assert owned_by(await view.find_sessions_by_metadata("title", "title 1"), "u1")
    assert await view.find_sessions_by_metadata("title", "title 1") == ["u1-1"]
    # Narrower views stay inside the wider one.
    narrower = view.scoped({"org": "acme"})
    assert set(await narrower.find_sessions()) == {"u1-1", "u1-3", "u1-5"}
    assert await narrower.count_sessions(field("owner_id") == "u2") == 0
    with pytest.raises(SessionNotInScopeError):
        view.scoped(owner_id="u2")


async def test_bulk_reads_refuse_other_tenants(tenants: MetadataStore[Meta]) -> None:
    view = tenants.scoped(owner_id="u1")
    found = await view.get_many(["u1-0", "u1-1", "never-written"])
    assert found["u1-1"].owner_id == "u1"
    assert found["never-written"] == Meta()
    for other in ("u2-0", "orphan"):
        with pytest.raises(SessionNotInScopeError, match=other):
            await view.get_many(["u1-0", other])


async def test_bind_refuses_another_tenants_session(tenants: MetadataStore[Meta]) -> None:
    view = tenants.scoped(owner_id="u1")
    for other in ("u2-0", "orphan"):
        bound = view.bind(other)
        with pytest.raises(SessionNotInScopeError, match=other):
            await bound.get_metadata()
        with pytest.raises(SessionNotInScopeError, match=other):
            await bound.set_metadata({"title": "stolen"})
        with pytest.raises(SessionNotInScopeError, match=other):
            await bound.delete_metadata()
        assert owned_by(await bound.find_sessions_by_metadata("title", "title 1"), "u1")
    assert (await tenants.bind("u2-0").get_metadata()).title == "title 0"
    assert (await tenants.bind("orphan").get_metadata()).title == "title 1"


async def test_bind_reads_writes_and_claims_within_the_scope(
    tenants: MetadataStore[Meta],
) -> None:
    view = tenants.scoped(owner_id="u1")
    mine = view.bind("u1-0")
    assert (await mine.get_metadata(["title"])).model_fields_set == {"title"}
    await mine.set_metadata({"title": "renamed"})
    assert (await tenants.bind("u1-0").get_metadata()).title == "renamed"
    with pytest.raises(SessionNotInScopeError):
        await mine.set_metadata({"owner_id": "u2"})
    with pytest.raises(SessionNotInScopeError):
        await mine.delete_metadata(["owner_id"])
    await mine.delete_metadata(["title"])
    assert (await mine.get_metadata()).title is None
    # A session with no metadata is claimed by the first scoped write.
    fresh = view.bind("empty")
    assert await fresh.get_metadata() == Meta()
    await fresh.set_metadata({"title": "claimed"})
    assert (await tenants.bind("empty").get_metadata()).owner_id == "u1"
    assert "empty" in await view.find_sessions()
    with pytest.raises(SessionNotInScopeError):
        await tenants.scoped(owner_id="u2").bind("empty").get_metadata()


async def test_two_tenants_racing_for_a_new_session_cannot_share_it(
    tenants: MetadataStore[Meta],
) -> None:
    for attempt in range(5):
        session_id = f"contested-{attempt}"

        async def claim(tenant: str, session_id: str = session_id) -> str:
            try:
                await (
                    tenants.scoped(owner_id=tenant)
                    .bind(session_id)
                    .set_metadata({"title": f"secret of {tenant}"})
                )
            except SessionNotInScopeError:
                return "refused"
            return tenant

        outcomes = await asyncio.gather(claim("u1"), claim("u2"))
        stored = await tenants.bind(session_id).get_metadata()
        winners = [outcome for outcome in outcomes if outcome != "refused"]
        # Whoever owns it wrote the only title it holds; the other was refused.
        assert winners == [stored.owner_id], (outcomes, stored)
        assert stored.title == f"secret of {stored.owner_id}"
