"""The admin pages over HTTP (in-process ASGI), on SQLite, PostgreSQL and MariaDB: every
write through the store's API, refused as the API refuses, and nothing else let in."""

from __future__ import annotations

import asyncio
import html
import re
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from sessionmeta import MetadataStore, UntypedMeta, field

from .conftest import Client, edit_form, hidden, session_links
from .models import Ticket, session_id, ticket

HOSTILE = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'


async def load(store: MetadataStore[Ticket], count: int) -> None:
    await store.set_many({session_id(n): ticket(n) for n in range(count)})


async def pages_through(client: httpx.AsyncClient, url: str) -> list[str]:
    """Every session id the list shows, following its next-page links to the end."""
    seen: list[str] = []
    for _ in range(1000):
        response = await client.get(url)
        assert response.status_code == 200, response.text
        seen += session_links(response.text)
        found = re.search(r'href="([^"]*)" id="next-page"', response.text)
        if found is None:
            assert 'id="last-page"' in response.text
            return seen
        url = html.unescape(found.group(1))
    raise AssertionError("the pages never end")


async def test_filtered_pages_cover_every_match_once(
    ticket_store: MetadataStore[Ticket], pages: Client
) -> None:
    await load(ticket_store, 300)
    client = await pages()
    query = "/?v:owner_id=u3&v:tags=billing&order=-key:opened_at&limit=7"
    seen = await pages_through(client, query)
    expected = [session_id(n) for n in reversed(range(300)) if n % 10 == 3 and n % 3 == 0]
    assert seen == expected
    # The same filter through the API: the page shows what the store finds.
    found = await ticket_store.find_sessions(
        field("owner_id") == "u3", field("tags").contains("billing"), limit=1000
    )
    assert sorted(seen) == list(found)


async def test_every_operator_the_form_offers_runs(
    ticket_store: MetadataStore[Ticket], pages: Client
) -> None:
    await load(ticket_store, 40)
    client = await pages()
    cases = {
        "op:priority=ge&v:priority=3": [n for n in range(40) if n % 5 >= 3],
        "v:status=%22closed%22": [n for n in range(40) if n % 3 == 2],
        "op:status=ne&v:status=%22closed%22": [n for n in range(40) if n % 3 != 2],
        "op:owner_id=in&v:owner_id=u1,u2": [n for n in range(40) if n % 10 in (1, 2)],
        "v:tags=billing,vip": [n for n in range(40) if n % 21 == 0],
        "op:opened_at=lt&v:opened_at=2025-01-01T00:05": list(range(5)),
        "op:title=missing": [],
        "op:title=exists": list(range(40)),
    }
    for query, numbers in cases.items():
        seen = await pages_through(client, f"/?{query}&limit=1000")
        assert seen == [session_id(n) for n in numbers], query


async def test_a_value_the_field_refuses_is_the_validation_error(
    ticket_store: MetadataStore[Ticket], pages: Client
) -> None:
    await load(ticket_store, 3)
    client = await pages()
    response = await client.get("/?op:priority=gt&v:priority=high")
    assert response.status_code == 400
    assert "valid integer" in response.text and session_links(response.text) == []
    response = await client.get("/?order=nope")
    assert response.status_code == 400 and "no such order" in response.text
    response = await client.get("/?cursor=garbage")
    assert response.status_code == 400 and "cursor" in response.text


async def test_the_session_page_shows_types_values_errors_and_undeclared_keys(
    engine: AsyncEngine, ticket_store: MetadataStore[Ticket], pages: Client
) -> None:
    await ticket_store.bind("s1").set_metadata({"title": "Refund", "tags": ["billing"]})
    # Rows the model refuses or does not declare, as an older model might have left them.
    untyped = MetadataStore(UntypedMeta, engine)
    await untyped.bind("s1").set_metadata({"priority": "urgent", "colour": "red"})
    client = await pages()
    response = await client.get("/session", params={"id": "s1"})
    assert response.status_code == 200
    text = response.text
    assert "list[str] | None" in text and "Literal[&#39;open&#39;, &#39;waiting&#39;" in text
    row = re.search(r'<tr id="field-priority" class="invalid">(.*?)</tr>', text, re.DOTALL)
    assert row is not None and "valid integer" in row.group(1)
    assert "&#34;urgent&#34;" in row.group(1)
    assert 'id="undeclared"' in text and "colour" in text
    assert "not stored (default)" in text
    # The list shows the refused value as the default rather than failing.
    listing = await client.get("/?c=priority&c=title")
    assert listing.status_code == 200 and "Refund" in listing.text
    assert (await client.get("/session", params={"id": "nope"})).status_code == 404
    assert (await client.get("/session", params={"id": "bad "})).status_code == 400


async def test_stored_html_is_shown_as_text(
    engine: AsyncEngine, ticket_store: MetadataStore[Ticket], pages: Client
) -> None:
    await ticket_store.bind("s1").set_metadata({"title": HOSTILE, "tags": [HOSTILE]})
    await MetadataStore(UntypedMeta, engine).bind("s1").set_metadata({HOSTILE: HOSTILE})
    client = await pages()
    for url in ("/?c=title&c=tags", "/session?id=s1", "/session/edit?id=s1"):
        response = await client.get(url)
        assert response.status_code == 200
        assert "<script>" not in response.text and "<img" not in response.text, url
        assert "&lt;script&gt;window.__xss=1&lt;/script&gt;" in response.text, url
        assert "script-src" not in response.headers["content-security-policy"]
        assert "default-src 'none'" in response.headers["content-security-policy"]


async def test_an_edit_writes_only_what_changed_with_the_version(
    ticket_store: MetadataStore[Ticket], pages: Client
) -> None:
    await ticket_store.bind("s1").set_metadata({"title": "Draft", "priority": 1})
    client = await pages()
    form = edit_form((await client.get("/session/edit", params={"id": "s1"})).text)
    form["v:title"] = "Final"
    form["v:tags"] = "billing\r\nvip"
    response = await client.post("/session/edit", data=form)
    assert response.status_code == 303
    assert response.headers["location"] == "/session?id=s1&notice=saved"
    read = await ticket_store.bind("s1").get_metadata()
    assert (read.title, read.priority, read.tags) == ("Final", 1, ["billing", "vip"])
    # Untouched fields stay unstored: only title, priority and tags are.
    assert read.model_fields_set == {"title", "priority", "tags"}


async def test_an_invalid_value_is_shown_with_the_error_and_nothing_is_written(
    ticket_store: MetadataStore[Ticket], pages: Client
) -> None:
    await ticket_store.bind("s1").set_metadata({"title": "Draft", "priority": 1})
    client = await pages()
    form = edit_form((await client.get("/session/edit", params={"id": "s1"})).text)
    form.update({"v:title": "Renamed", "v:priority": "urgent", "v:status": '"archived"'})
    response = await client.post("/session/edit", data=form)
    assert response.status_code == 422
    errors = dict(re.findall(r'id="error-([^"]*)">([^<]*)<', response.text))
    assert "valid integer" in errors["priority"]
    assert "open" in html.unescape(errors["status"]) and "title" not in errors
    # Shown as typed, still compared with what the form was first made from.
    assert 'value="urgent"' in response.text and hidden(response.text, "was:priority") == "1"
    assert (await ticket_store.bind("s1").get_metadata()).title == "Draft"
    # Corrected and sent again from the re-shown form, it is written.
    again = edit_form(response.text)
    again.update({"v:priority": "2", "v:status": again["was:status"]})
    assert (await client.post("/session/edit", data=again)).status_code == 303
    read = await ticket_store.bind("s1").get_metadata()
    assert (read.title, read.priority) == ("Renamed", 2)


async def test_a_taken_unique_value_is_shown_beside_its_field(
    ticket_store: MetadataStore[Ticket], pages: Client
) -> None:
    await ticket_store.bind("s1").set_metadata({"external_id": "T-1"})
    await ticket_store.bind("s2").set_metadata({"title": "Draft"})
    client = await pages()
    form = edit_form((await client.get("/session/edit", params={"id": "s2"})).text)
    form.update({"v:title": "Renamed", "v:external_id": "T-1"})
    response = await client.post("/session/edit", data=form)
    assert response.status_code == 409 and "changed since you opened" not in response.text
    errors = dict(re.findall(r'id="error-([^"]*)">([^<]*)<', response.text))
    assert "session 's1' holds it" in html.unescape(errors["external_id"])
    assert 'value="T-1"' in response.text
    read = await ticket_store.bind("s2").get_metadata()
    assert (read.title, read.external_id) == ("Draft", None)


async def test_a_concurrent_change_is_reported_not_overwritten(
    ticket_store: MetadataStore[Ticket], pages: Client
) -> None:
    await ticket_store.bind("s1").set_metadata({"title": "Draft", "priority": 1})
    client = await pages()
    form = edit_form((await client.get("/session/edit", params={"id": "s1"})).text)
    await ticket_store.bind("s1").set_metadata({"priority": 5})  # another writer
    form["v:title"] = "Mine"
    response = await client.post("/session/edit", data=form)
    assert response.status_code == 409 and "changed since you opened" in response.text
    read = await ticket_store.bind("s1").get_metadata()
    assert (read.title, read.priority) == ("Draft", 5)
    # The form now holds the stored values with the change kept, and the new version.
    again = edit_form(response.text)
    assert again["v:title"] == "Mine" and again["was:priority"] == "5"
    assert (await client.post("/session/edit", data=again)).status_code == 303
    read = await ticket_store.bind("s1").get_metadata()
    assert (read.title, read.priority) == ("Mine", 5)


async def test_deleting_a_key_and_every_key_after_a_confirmation(
    ticket_store: MetadataStore[Ticket], pages: Client
) -> None:
    await ticket_store.bind("s1").set_metadata({"title": "Draft", "priority": 1})
    client = await pages()
    confirm = await client.get("/session/delete", params={"id": "s1", "key": "title"})
    assert confirm.status_code == 200 and "Draft" in confirm.text
    assert (await ticket_store.bind("s1").get_metadata()).title == "Draft"  # not yet
    form = {"csrf": hidden(confirm.text, "csrf"), "id": "s1", "key": "title"}
    assert (await client.post("/session/delete", data=form)).status_code == 303
    assert (await ticket_store.bind("s1").get_metadata()).model_fields_set == {"priority"}
    confirm = await client.get("/session/delete", params={"id": "s1"})
    form = {"csrf": hidden(confirm.text, "csrf"), "id": "s1"}
    assert (await client.post("/session/delete", data=form)).status_code == 303
    assert (await ticket_store.bind("s1").get_metadata()).model_fields_set == set()
    assert await ticket_store.exists("s1")  # the session stays


async def test_a_post_without_the_csrf_token_is_refused(
    ticket_store: MetadataStore[Ticket], pages: Client
) -> None:
    await ticket_store.bind("s1").set_metadata({"title": "Draft"})
    client = await pages()
    form = edit_form((await client.get("/session/edit", params={"id": "s1"})).text)
    form["v:title"] = "Forged"
    for csrf in (None, "", "0" * 64):
        forged = {name: value for name, value in form.items() if name != "csrf"}
        if csrf is not None:
            forged["csrf"] = csrf
        response = await client.post("/session/edit", data=forged)
        assert response.status_code == 403 and "CSRF" in response.text
    # A token made for another browser's cookie is no better.
    other = await pages()
    response = await other.post("/session/edit", data=form)
    assert response.status_code == 403
    assert (await ticket_store.bind("s1").get_metadata()).title == "Draft"


async def test_read_only_hides_and_refuses_every_write(
    ticket_store: MetadataStore[Ticket], pages: Client
) -> None:
    await ticket_store.bind("s1").set_metadata({"title": "Draft"})
    client = await pages(read_only=True)
    page = await client.get("/session", params={"id": "s1"})
    assert page.status_code == 200 and 'id="read-only"' in page.text
    assert "/session/edit" not in page.text and "/session/delete" not in page.text
    for url in ("/session/edit?id=s1", "/session/delete?id=s1&key=title"):
        assert (await client.get(url)).status_code == 403
    # A forged POST with a valid CSRF token (from the check page's form) is refused too.
    csrf = hidden((await client.get("/check")).text, "csrf")
    for url, data in (
        ("/session/edit", {"id": "s1", "version": "", "was:title": "Draft", "v:title": "X"}),
        ("/session/delete", {"id": "s1", "key": "title"}),
        ("/session/delete", {"id": "s1"}),
    ):
        response = await client.post(url, data={**data, "csrf": csrf})
        assert response.status_code == 403 and "read-only" in response.text
    assert (await ticket_store.bind("s1").get_metadata()).title == "Draft"


async def test_a_token_is_required_when_given(
    ticket_store: MetadataStore[Ticket], pages: Client
) -> None:
    client = await pages(token="s3cret;/x")
    assert (await client.get("/")).status_code == 401
    assert (await client.get("/", headers={"authorization": "Bearer wrong"})).status_code == 401
    assert (await client.get("/?token=wrong")).status_code == 401
    assert (await client.post("/check", data={"csrf": "x"})).status_code == 401
    ok = await client.get("/", headers={"authorization": "Bearer s3cret;/x"})
    assert ok.status_code == 200
    # A first visit with ?token= keeps it in a cookie and drops it from the address.
    first = await client.get("/", params={"token": "s3cret;/x", "order": "-created_at"})
    assert first.status_code == 303 and first.headers["location"] == "/?order=-created_at"
    assert "s3cret" not in first.headers["set-cookie"]
    assert (await client.get(first.headers["location"])).status_code == 200
    client.cookies.clear()
    client.cookies.set("sessionmeta_token", "forged")
    assert (await client.get("/")).status_code == 401


async def test_a_foreign_host_is_refused(pages: Client) -> None:
    client = await pages(allowed_hosts=["127.0.0.1", "localhost"])
    assert (await client.get("/")).status_code == 200
    response = await client.get("/", headers={"host": "attacker.example:8765"})
    assert response.status_code == 400


async def test_the_check_page_runs_the_scan_with_progress(
    engine: AsyncEngine, ticket_store: MetadataStore[Ticket], pages: Client
) -> None:
    await load(ticket_store, 30)
    await (
        MetadataStore(UntypedMeta, engine)
        .bind(session_id(4))
        .set_metadata({"priority": "urgent", "colour": "red"})
    )
    client = await pages()
    page = await client.get("/check")
    assert page.status_code == 200 and 'id="run-check"' in page.text
    started = await client.post("/check", data={"csrf": hidden(page.text, "csrf")})
    assert started.status_code == 303
    for _ in range(200):
        page = await client.get("/check")
        if 'id="summary"' in page.text:
            break
        assert 'id="progress"' in page.text and 'http-equiv="refresh"' in page.text
        await asyncio.sleep(0.05)
    summary = re.search(r'id="summary"[^>]*>(.*?)</p>', page.text, re.DOTALL)
    assert summary is not None and "1 stored value would not read" in summary.group(1)
    assert "checked 181 rows of 30 sessions" in " ".join(summary.group(1).split())
    assert "valid integer" in page.text and "colour" in page.text


async def test_the_conversation_is_shown_when_the_sdk_tables_are_there(
    engine: AsyncEngine, ticket_store: MetadataStore[Ticket], pages: Client
) -> None:
    pytest.importorskip("agents", reason="the Agents SDK's tables come with the agents extra")
    from sessionmeta.agents import MetadataSQLAlchemySession

    chat = MetadataSQLAlchemySession(
        "chat-1", engine=engine, metadata_model=Ticket, create_tables=True
    )
    items: list[Any] = [
        {"role": "user", "content": "Hello <b>there</b>"},
        {"role": "assistant", "content": [{"type": "output_text", "text": "Hi!"}]},
    ]
    await chat.add_items(items)
    await chat.set_metadata({"title": "Greeting"})
    client = await pages()
    page = await client.get("/session", params={"id": "chat-1"})
    assert page.status_code == 200
    messages = re.search(r'<ol class="messages" id="messages">(.*?)</ol>', page.text, re.DOTALL)
    assert messages is not None
    assert "Hello &lt;b&gt;there&lt;/b&gt;" in messages.group(1) and "Hi!" in messages.group(1)
    assert "role-user" in messages.group(1) and "role-assistant" in messages.group(1)
    # No form touches the conversation.
    assert "agent_messages" not in page.text


async def test_the_list_page_is_one_query(
    ticket_store: MetadataStore[Ticket], pages: Client, engine: AsyncEngine
) -> None:
    from sqlalchemy import event

    await load(ticket_store, 120)
    client = await pages()
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        response = await client.get("/?v:owner_id=u1&order=-key:opened_at")
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", count)
    assert response.status_code == 200 and len(session_links(response.text)) == 12
    # Ordered by a metadata key, a filtered page first counts the filter's index range
    # (up to sessionmeta.sql.plans.BROAD), which decides the listing statement's shape.
    assert len(statements) == 2, statements
    assert statements[0].startswith("SELECT count(*)"), statements
    statements.clear()
    event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        response = await client.get("/?v:owner_id=u1&order=-created_at")
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", count)
    assert response.status_code == 200 and len(session_links(response.text)) == 12
    assert len(statements) == 1, statements
    assert float(response.headers["server-timing"].split("dur=")[1]) > 0


def test_links_keep_the_query(ticket_store: MetadataStore[Ticket]) -> None:
    from sessionmeta.web.app import _link

    link = _link("/", [("v:owner_id", "a&b"), ("cursor", None), ("c", "title")])
    assert dict(parse_qsl(urlsplit(link).query)) == {"v:owner_id": "a&b", "c": "title"}
