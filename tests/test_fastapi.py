"""sessionmeta.fastapi: errors as status codes, a scoped store per user, pages with cursors.

An application built the way the README shows, called over HTTP through
``httpx.AsyncClient`` on every backend: each error a request can cause is answered
with its status code and a JSON body naming the error and the session and key
concerned; a ``pydantic.ValidationError`` of the application's own stays a 500; a
``Page`` returned from an endpoint keeps its ``next_cursor``, and the OpenAPI
schema says so.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import pytest

pytest.importorskip("fastapi", reason="the FastAPI helper needs the fastapi extra")

import httpx
from fastapi import Body, Depends, FastAPI, Header, HTTPException, Request
from pydantic import BaseModel, TypeAdapter

import sessionmeta
from sessionmeta import (
    ConcurrencyError,
    Condition,
    MetadataStore,
    Page,
    ScopedStore,
    SessionListing,
)
from sessionmeta.fastapi import add_exception_handlers, scoped_dependency

from .models import ChatMeta

SRC = Path(sessionmeta.__file__).resolve().parents[1]


def current_user(x_user: Annotated[str | None, Header()] = None) -> str:
    if not x_user:
        raise HTTPException(status_code=401, detail="who are you?")
    return x_user


def the_store(request: Request) -> MetadataStore[ChatMeta]:
    store: MetadataStore[ChatMeta] = request.app.state.store
    return store


MyChats = Annotated[ScopedStore[ChatMeta], Depends(scoped_dependency(the_store, current_user))]
Store = Annotated[MetadataStore[ChatMeta], Depends(the_store)]


class Rename(BaseModel):
    title: str
    expected_version: str | None = None


class Mine(BaseModel):
    """The application's own model: a ValidationError of it is the application's bug."""

    count: int


app = FastAPI()
add_exception_handlers(app)


@app.put("/chats/{chat_id}/title", status_code=204)
async def rename(chat_id: str, body: Rename, chats: MyChats) -> None:
    await chats.bind(chat_id).set_metadata(
        {"title": body.title}, create=False, expected_version=body.expected_version
    )


@app.patch("/chats/{chat_id}", status_code=204)
async def update(chat_id: str, values: Annotated[dict[str, Any], Body()], chats: MyChats) -> None:
    await chats.bind(chat_id).set_metadata(values)


@app.get("/chats/{chat_id}/version")
async def version(chat_id: str, chats: MyChats) -> str:
    return (await chats.bind(chat_id).get_metadata_versioned()).version


@app.get("/chats")
async def list_chats(
    chats: MyChats, limit: int = 2, cursor: str | None = None
) -> Page[SessionListing[ChatMeta]]:
    return await chats.list_sessions(order_by="-priority", limit=limit, cursor=cursor)


@app.get("/ids")
async def find_ids(store: Store, key: str, op: str, value: str) -> Page[str]:
    return await store.find_sessions(Condition(key, op, value))  # type: ignore[arg-type]


@app.get("/busy")
async def busy() -> None:
    raise ConcurrencyError("session 'c1': deadlocked on every retry", session_id="c1")


@app.get("/bug")
async def bug() -> Mine:
    return Mine.model_validate({"count": "many"})


@pytest.fixture
async def client(store: MetadataStore[ChatMeta]) -> AsyncIterator[httpx.AsyncClient]:
    app.state.store = store
    for index in range(5):
        await store.bind(f"ann-{index}").set_metadata(
            {"owner_id": "ann", "title": f"Chat {index}", "tags": ["t"], "priority": index}
        )
    await store.bind("bob-0").set_metadata({"owner_id": "bob", "title": "Bob's"})
    # The application's own errors become 500 responses, as under a server.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://test", headers={"X-User": "ann"}
    ) as client:
        yield client


async def test_update_only_rename_and_its_refusals(
    client: httpx.AsyncClient, store: MetadataStore[ChatMeta]
) -> None:
    assert (await client.put("/chats/ann-1/title", json={"title": "Renamed"})).status_code == 204
    assert (await store.bind("ann-1").get_metadata()).title == "Renamed"

    missing = await client.put("/chats/ghost/title", json={"title": "New"})
    assert missing.status_code == 404
    assert missing.json() | {"detail": ""} == {
        "error": "SessionNotFoundError",
        "detail": "",
        "session_id": "ghost",
        "key": None,
    }
    assert "'ghost' does not exist" in missing.json()["detail"]
    assert not await store.exists("ghost")

    theirs = await client.put("/chats/bob-0/title", json={"title": "Stolen"})
    assert theirs.status_code == 404
    assert theirs.json()["error"] == "SessionNotInScopeError"
    assert theirs.json()["session_id"] == "bob-0"
    assert (await store.bind("bob-0").get_metadata()).title == "Bob's"


async def test_a_stale_version_is_409(client: httpx.AsyncClient) -> None:
    read = (await client.get("/chats/ann-2/version")).json()
    first = await client.put("/chats/ann-2/title", json={"title": "A", "expected_version": read})
    assert first.status_code == 204
    second = await client.put("/chats/ann-2/title", json={"title": "B", "expected_version": read})
    assert second.status_code == 409
    assert (second.json()["error"], second.json()["session_id"]) == ("ConflictError", "ann-2")


async def test_concurrency_errors_are_409(client: httpx.AsyncClient) -> None:
    response = await client.get("/busy")
    assert response.status_code == 409
    assert response.json()["error"] == "ConcurrencyError"
    assert response.json()["session_id"] == "c1"


async def test_invalid_values_and_keys_are_422(
    client: httpx.AsyncClient, store: MetadataStore[ChatMeta]
) -> None:
    bad = await client.patch("/chats/ann-3", json={"priority": "urgent", "title": "ok"})
    assert bad.status_code == 422
    body = bad.json()
    assert (body["error"], body["key"], body["model"]) == (
        "ValidationError",
        "priority",
        "ChatMeta",
    )
    assert [(error["loc"], error["type"]) for error in body["detail"]] == [
        (["priority"], "int_parsing")
    ]
    unknown = await client.patch("/chats/ann-3", json={"colour": "red"})
    assert unknown.status_code == 422
    assert unknown.json()["error"] == "UnknownKeyError"
    assert (unknown.json()["key"], unknown.json()["keys"]) == ("colour", ["colour"])
    # Nothing was written by either.
    assert (await store.bind("ann-3").get_metadata()).title == "Chat 3"

    too_long = await client.patch(f"/chats/{'x' * 300}", json={"title": "t"})
    assert too_long.status_code == 422
    assert too_long.json()["error"] == "InvalidSessionIdError"


async def test_changing_the_scope_key_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.patch("/chats/ann-0", json={"owner_id": "bob"})
    assert response.status_code == 404
    body = response.json()
    assert (body["error"], body["session_id"], body["key"]) == (
        "SessionNotInScopeError",
        "ann-0",
        "owner_id",
    )


async def test_bad_cursors_and_filters_are_400(client: httpx.AsyncClient) -> None:
    cursor = await client.get("/chats", params={"cursor": "not-a-cursor"})
    assert cursor.status_code == 400
    assert cursor.json()["error"] == "InvalidCursorError"
    # A range on a list field cannot be answered.
    query = {"key": "tags", "op": "gt", "value": "t"}
    refused = await client.get("/ids", params=query)
    assert refused.status_code == 400
    assert refused.json()["error"] == "FilterError"
    assert "'tags'" in refused.json()["detail"]


async def test_the_applications_own_validation_errors_stay_500(client: httpx.AsyncClient) -> None:
    assert (await client.get("/bug")).status_code == 500


async def test_the_current_user_dependency_decides(client: httpx.AsyncClient) -> None:
    assert (await client.get("/chats", headers={"X-User": ""})).status_code == 401
    bobs = (await client.get("/chats", headers={"X-User": "bob"})).json()
    assert [item["session_id"] for item in bobs["items"]] == ["bob-0"]


async def test_a_page_keeps_its_cursor(client: httpx.AsyncClient) -> None:
    first = await client.get("/chats")
    assert first.status_code == 200
    page = first.json()
    assert [item["session_id"] for item in page["items"]] == ["ann-4", "ann-3"]
    assert page["items"][0]["metadata"] == {
        "owner_id": "ann",
        "title": "Chat 4",
        "tags": ["t"],
        "incognito": None,
        "priority": 4,
    }
    seen = [item["session_id"] for item in page["items"]]
    while page["next_cursor"] is not None:
        page = (await client.get("/chats", params={"cursor": page["next_cursor"]})).json()
        seen += [item["session_id"] for item in page["items"]]
    assert seen == ["ann-4", "ann-3", "ann-2", "ann-1", "ann-0"]

    ids = await client.get("/ids", params={"key": "owner_id", "op": "eq", "value": "bob"})
    assert ids.json() == {"items": ["bob-0"], "next_cursor": None}


def test_the_response_schema_shows_the_cursor() -> None:
    schema = app.openapi()
    listed = schema["paths"]["/chats"]["get"]["responses"]["200"]["content"]["application/json"]
    page = listed["schema"]
    assert page["required"] == ["items", "next_cursor"]
    assert page["properties"]["next_cursor"]["anyOf"] == [{"type": "string"}, {"type": "null"}]
    item = page["properties"]["items"]["items"]["$ref"].rsplit("/", 1)[-1]
    listing = schema["components"]["schemas"][item]
    assert set(listing["properties"]) == {"session_id", "metadata"}
    assert listing["properties"]["metadata"]["$ref"].endswith("/ChatMeta")


def test_a_page_round_trips_through_pydantic() -> None:
    adapter = TypeAdapter(Page[SessionListing[ChatMeta]])
    page = Page([SessionListing("s1", ChatMeta(title="t"))], next_cursor="abc")
    text = adapter.dump_json(page)
    back = adapter.validate_json(text)
    assert isinstance(back, Page) and back == page and back.next_cursor == "abc"
    assert adapter.validate_python(page).next_cursor == "abc"


def test_import_sessionmeta_needs_no_fastapi() -> None:
    code = textwrap.dedent(
        """
        import importlib.abc, sys

        class HideFastAPI(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name in ("fastapi", "starlette") or name.startswith(("fastapi.", "starlette.")):
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
                return None

        sys.meta_path.insert(0, HideFastAPI())
        import sessionmeta
        from sessionmeta import MetadataStore, Page
        try:
            import sessionmeta.fastapi
        except ImportError as exc:
            print(exc)
        """
    )
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(SRC)},
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "pip install 'sessionmeta[fastapi]'" in result.stdout
