"""examples/fastapi_app.py, called over HTTP as its users would, on every backend."""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib.util
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the FastAPI example needs the fastapi extra")

import httpx
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from sessionmeta import MetadataStore

from .scripted_model import ScriptedModel

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fastapi_app.py"


@pytest.fixture(scope="module")
def example() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("fastapi_app", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered while loaded: pydantic and FastAPI resolve annotations through it.
    sys.modules["fastapi_app"] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules["fastapi_app"]


class Clock:
    """A minute per reading: the order in which chats start is unambiguous."""

    def __init__(self) -> None:
        self.now = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)

    def __call__(self) -> dt.datetime:
        self.now += dt.timedelta(minutes=1)
        return self.now


class Api:
    """The app, a client per user, and the scripted model it answers with."""

    def __init__(self, app: Any, model: ScriptedModel, store: MetadataStore[Any]) -> None:
        self.app = app
        self.model = model
        self.store = store
        self.transport = httpx.ASGITransport(app=app)

    def as_user(self, user: str | None) -> httpx.AsyncClient:
        headers = {"X-User": user} if user else {}
        return httpx.AsyncClient(transport=self.transport, base_url="http://chats", headers=headers)


@pytest.fixture
async def api(example: ModuleType, engine: AsyncEngine) -> AsyncIterator[Api]:
    model = ScriptedModel(lambda said: f"echo: {said}")
    app = example.create_app(engine, model=model, clock=Clock())
    async with app.router.lifespan_context(app):  # creates the tables, as at start-up
        yield Api(app, model, app.state.chats.store)


@pytest.fixture
async def ann(api: Api) -> AsyncIterator[httpx.AsyncClient]:
    async with api.as_user("ann") as client:
        yield client


@pytest.fixture
async def bob(api: Api) -> AsyncIterator[httpx.AsyncClient]:
    async with api.as_user("bob") as client:
        yield client


async def start(client: httpx.AsyncClient, title: str, *tags: str) -> str:
    response = await client.post("/chats", json={"title": title, "tags": list(tags)})
    assert response.status_code == 201, response.text
    chat_id: str = response.json()["id"]
    return chat_id


async def listed(client: httpx.AsyncClient, **params: Any) -> list[tuple[str, list[str]]]:
    """Every chat the listing gives, following its cursor page by page."""
    found: list[tuple[str, list[str]]] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await client.get("/chats", params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        found += [(chat["title"], chat["tags"]) for chat in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return found


async def test_my_chats_newest_first_a_page_at_a_time(
    ann: httpx.AsyncClient, bob: httpx.AsyncClient, api: Api
) -> None:
    for number in range(5):
        await start(ann, f"Ann {number}", "work" if number % 2 else "home")
    await start(bob, "Bob's")

    first = (await ann.get("/chats", params={"limit": 2})).json()
    assert [chat["title"] for chat in first["items"]] == ["Ann 4", "Ann 3"]
    assert first["next_cursor"] is not None
    assert await listed(ann, limit=2) == [
        ("Ann 4", ["home"]),
        ("Ann 3", ["work"]),
        ("Ann 2", ["home"]),
        ("Ann 1", ["work"]),
        ("Ann 0", ["home"]),
    ]
    assert await listed(bob) == [("Bob's", [])]
    async with api.as_user(None) as nobody:
        assert (await nobody.get("/chats")).status_code == 401
    # The listing's schema carries the cursor.
    schema = api.app.openapi()["paths"]["/chats"]["get"]["responses"]["200"]
    assert "next_cursor" in schema["content"]["application/json"]["schema"]["properties"]


async def test_filter_by_tag(ann: httpx.AsyncClient, bob: httpx.AsyncClient) -> None:
    for number in range(4):
        await start(ann, f"Ann {number}", "work" if number % 2 else "home")
    await start(bob, "Bob's", "work")
    assert await listed(ann, tag="work", limit=1) == [("Ann 3", ["work"]), ("Ann 1", ["work"])]
    assert await listed(ann, tag="nothing") == []


async def test_rename_only_my_existing_chats(
    ann: httpx.AsyncClient, bob: httpx.AsyncClient, api: Api
) -> None:
    chat = await start(ann, "Draft")
    renamed = await ann.patch(f"/chats/{chat}", json={"title": "Final"})
    assert renamed.status_code == 200 and renamed.json()["title"] == "Final"

    stolen = await bob.patch(f"/chats/{chat}", json={"title": "Mine now"})
    assert stolen.status_code == 404
    assert stolen.json()["error"] == "SessionNotInScopeError"
    missing = await ann.patch("/chats/no-such-chat", json={"title": "New"})
    assert missing.status_code == 404
    assert (missing.json()["error"], missing.json()["session_id"]) == (
        "SessionNotFoundError",
        "no-such-chat",
    )
    assert not await api.store.exists("no-such-chat")
    assert (await ann.get(f"/chats/{chat}")).json()["title"] == "Final"
    assert (await ann.patch(f"/chats/{chat}", json={"title": ""})).status_code == 422


async def test_tag_and_untag_atomically(
    ann: httpx.AsyncClient, bob: httpx.AsyncClient, api: Api
) -> None:
    chat = await start(ann, "Chat", "a")
    tags = [f"t{number}" for number in range(8)]
    responses = await asyncio.gather(*(ann.put(f"/chats/{chat}/tags/{tag}") for tag in tags))
    assert all(response.status_code == 200 for response in responses)
    current = (await ann.get(f"/chats/{chat}")).json()["tags"]
    assert sorted(current) == sorted(["a", *tags])  # no concurrent tag was lost

    untagged = await ann.delete(f"/chats/{chat}/tags/a")
    assert untagged.status_code == 200 and "a" not in untagged.json()["tags"]
    assert (await bob.put(f"/chats/{chat}/tags/b")).status_code == 404
    assert (await bob.delete(f"/chats/{chat}/tags/t1")).status_code == 404
    assert (await ann.put("/chats/no-such-chat/tags/x")).status_code == 404
    assert (await ann.delete("/chats/no-such-chat/tags/x")).status_code == 404
    assert not await api.store.exists("no-such-chat")
    assert sorted((await ann.get(f"/chats/{chat}")).json()["tags"]) == tags


async def test_a_turn_runs_on_the_chats_history(
    ann: httpx.AsyncClient, bob: httpx.AsyncClient, api: Api
) -> None:
    chat = await start(ann, "Chat")
    first = await ann.post(f"/chats/{chat}/messages", json={"text": "one"})
    assert first.status_code == 200 and first.json() == {"role": "assistant", "text": "echo: one"}
    second = await ann.post(f"/chats/{chat}/messages", json={"text": "two"})
    assert second.json()["text"] == "echo: two"
    # The SDK gave the model the stored history with the new message.
    assert len(api.model.inputs[-1]) == 3
    history = (await ann.get(f"/chats/{chat}/messages")).json()
    assert [(item["role"], item["text"]) for item in history] == [
        ("user", "one"),
        ("assistant", "echo: one"),
        ("user", "two"),
        ("assistant", "echo: two"),
    ]
    calls = len(api.model.inputs)
    assert (await bob.post(f"/chats/{chat}/messages", json={"text": "hi"})).status_code == 404
    assert (await bob.get(f"/chats/{chat}/messages")).status_code == 404
    assert len(api.model.inputs) == calls  # the agent never ran for bob


async def test_delete_removes_history_and_metadata(
    ann: httpx.AsyncClient, bob: httpx.AsyncClient, api: Api, engine: AsyncEngine
) -> None:
    kept = await start(ann, "Kept")
    gone = await start(ann, "Gone")
    await ann.post(f"/chats/{gone}/messages", json={"text": "hello"})
    assert (await bob.delete(f"/chats/{gone}")).status_code == 404
    assert (await ann.delete(f"/chats/{gone}")).status_code == 204

    assert await listed(ann) == [("Kept", [])]
    assert (await ann.get(f"/chats/{gone}")).status_code == 404
    assert (await ann.delete(f"/chats/{gone}")).status_code == 404
    assert not await api.store.exists(gone) and await api.store.exists(kept)
    values = api.store.tables.values
    async with engine.connect() as connection:
        rows = await connection.scalar(
            select(func.count()).select_from(values).where(values.c.session_id == gone)
        )
        messages = await connection.scalar(
            text("SELECT count(*) FROM agent_messages WHERE session_id = :id"), {"id": gone}
        )
    assert (rows, messages) == (0, 0)


async def test_the_defaults_run_offline(
    example: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As `uvicorn --factory fastapi_app:create_app` starts it: its own engine, the
    # scripted model, no network and no key.
    url = f"sqlite+aiosqlite:///{tmp_path / 'chats.sqlite3'}"
    monkeypatch.setenv("CHATS_DATABASE_URL", url)
    monkeypatch.delenv("CHATS_MODEL", raising=False)
    app = example.create_app()
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        headers = {"X-User": "ann"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://chats", headers=headers
        ) as client:
            chat = await start(client, "Offline")
            reply = await client.post(f"/chats/{chat}/messages", json={"text": "hi"})
            assert reply.json()["text"] == "You said 'hi' (1 message(s) in view)"
    assert (tmp_path / "chats.sqlite3").exists()
