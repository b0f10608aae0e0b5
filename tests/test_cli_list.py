"""`sessionmeta list`: sessions as rows, chosen keys as columns, filtered, ordered, paged."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from sessionmeta import MetadataStore

from .models import ChatMeta
from .test_cli import assert_refused, run


@pytest.fixture
async def url(engine: AsyncEngine, db_url: str) -> str:
    store = MetadataStore(ChatMeta, engine, create_tables=True)
    await store.set_many(
        {
            "a": {"owner_id": "ann", "title": "Refund", "tags": ["billing", "vip"], "priority": 2},
            "b": {"owner_id": "ann", "title": "Login fails", "priority": 10},
            "c": {"owner_id": "bob", "title": "Invoice", "tags": ["billing"], "priority": 9},
            "d": {"owner_id": "ann", "incognito": True},
        }
    )
    return db_url


def sessions(document: Any) -> list[tuple[str, dict[str, Any]]]:
    assert isinstance(document, dict)
    return [(item["session_id"], item["metadata"]) for item in document["sessions"]]


async def test_a_table_of_the_chosen_columns(url: str) -> None:
    listed = await run("list", "--columns", "title,tags", "-c", "priority", url=url)
    assert listed.code == 0, listed
    lines = listed.out.splitlines()
    assert lines[0].split() == ["SESSION_ID", "TITLE", "TAGS", "PRIORITY"]
    # Columns line up under their headings; text is bare, lists of text joined.
    assert lines[1] == "a           Refund       billing,vip  2"
    assert lines[2] == "b           Login fails               10"
    assert lines[4].rstrip() == "d"
    assert lines[5:] == ["4 sessions"]


async def test_every_field_by_default_and_json_for_scripts(url: str) -> None:
    listed = await run("list", "--limit", "1", "--json", url=url)
    assert listed.code == 0, listed
    document = listed.json()
    assert sessions(document) == [
        (
            "a",
            {
                "owner_id": "ann",
                "title": "Refund",
                "tags": ["billing", "vip"],
                "incognito": None,
                "priority": 2,
            },
        )
    ]
    assert isinstance(document, dict)
    assert (document["limit"], document["order_by"]) == (1, "session_id")
    assert isinstance(document["next_cursor"], str)


async def test_where_order_by_and_the_cursor(url: str) -> None:
    # AND of conditions; numbers in numeric order (9 < 10), largest first.
    first = await run(
        "list",
        "--where",
        "tags~billing",
        "-w",
        "priority>1",
        "--order-by",
        "-priority",
        "--columns",
        "priority",
        "--json",
        url=url,
    )
    assert sessions(first.json()) == [("c", {"priority": 9}), ("a", {"priority": 2})]
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        page = await run(
            "list",
            "-w",
            "owner_id=ann",
            "--order-by",
            "-priority",
            "--limit",
            "2",
            "--json",
            *(["--cursor", cursor] if cursor else []),
            url=url,
        )
        document = page.json()
        assert isinstance(document, dict)
        pages.append([sid for sid, _ in sessions(document)])
        cursor = document["next_cursor"]
        if cursor is None:
            break
    # Sessions lacking the key come last when descending.
    assert pages == [["b", "a"], ["d"]]


async def test_the_table_says_how_to_get_the_next_page(url: str) -> None:
    first = await run("list", "--limit", "3", "-c", "owner_id", url=url)
    assert first.code == 0, first
    lines = first.out.splitlines()
    assert lines[-2] == "3 sessions"
    assert lines[-1].startswith("more: --cursor ")
    rest = await run("list", "--limit", "3", "-c", "owner_id", *lines[-1].split()[1:], url=url)
    assert rest.code == 0, rest
    assert rest.out.splitlines() == ["SESSION_ID  OWNER_ID", "d           ann", "1 session"]


async def test_bad_columns_conditions_orders_and_cursors_are_refused(url: str) -> None:
    cases = [
        (["--columns", "title,colour"], "colour"),
        (["--columns", "title,"], "empty column"),
        (["--where", "priority=high"], "priority"),
        (["--where", "title:like=x"], "unknown operator 'like'"),
        (["--order-by", "colour"], "colour"),
        (["--order-by", "tags"], "tags"),
        (["--cursor", "forged"], "cursor"),
        (["--limit", "0"], "limit"),
    ]
    results = await asyncio.gather(*(run("list", *args, url=url) for args, _ in cases))
    for (_, fragment), result in zip(cases, results, strict=True):
        assert_refused(result, fragment)


async def test_a_listing_of_an_empty_database(engine: AsyncEngine, db_url: str) -> None:
    await MetadataStore(ChatMeta, engine, create_tables=True).create_tables()
    listed = await run("list", "-c", "title", url=db_url)
    assert listed.out.splitlines() == ["SESSION_ID  TITLE", "0 sessions"]
