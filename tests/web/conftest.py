"""Fixtures of the admin pages' tests: a store of ``Ticket`` and its pages over ASGI."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from sessionmeta import MetadataStore

from .models import Ticket

for _module in ("starlette", "jinja2"):
    pytest.importorskip(_module, reason="the admin pages need the web extra")

from sessionmeta.web import create_app  # noqa: E402  (after the skip above)


@pytest.fixture
async def ticket_store(engine: AsyncEngine) -> MetadataStore[Ticket]:
    # As `sessionmeta serve` opens it: a value that no longer validates lists as the default.
    store = MetadataStore(Ticket, engine, create_tables=True, on_invalid="default")
    await store.create_tables()
    return store


Client = Callable[..., Any]


@pytest.fixture
async def pages(ticket_store: MetadataStore[Ticket]) -> AsyncIterator[Client]:
    """A factory of HTTP clients of the pages: ``await pages(read_only=True)``."""
    clients: list[httpx.AsyncClient] = []

    async def make(**options: Any) -> httpx.AsyncClient:
        app = create_app(ticket_store, **options)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8765"
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


def hidden(html: str, name: str) -> str:
    """The value of the form's hidden input ``name``."""
    found = re.search(rf'name="{re.escape(name)}" value="([^"]*)"', html)
    assert found is not None, f"no input {name!r}"
    return unescape(found.group(1))


def unescape(text: str) -> str:
    import html

    return html.unescape(text)


class _FormReader(HTMLParser):
    """The inputs of a page's forms as a browser would post them, untouched."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.values: dict[str, str] = {}
        self._select: str | None = None
        self._first_option: str | None = None
        self._textarea: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {name: value or "" for name, value in attrs}
        if tag == "input" and "name" in found and found.get("type") != "checkbox":
            self.values[found["name"]] = found.get("value", "")
        elif tag == "select":
            self._select, self._first_option = found.get("name"), None
        elif tag == "option" and self._select is not None:
            if self._first_option is None:
                self._first_option = found.get("value", "")
                self.values.setdefault(self._select, self._first_option)
            if "selected" in found:
                self.values[self._select] = found.get("value", "")
        elif tag == "textarea":
            self._textarea = found.get("name")
            self.values[self._textarea or ""] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None

    def handle_data(self, data: str) -> None:
        if self._textarea is not None:
            # A textarea's content drops one leading newline, as browsers do.
            self.values[self._textarea] += data


def edit_form(html: str) -> dict[str, str]:
    """Every input of the page's form as the browser would post it, untouched."""
    reader = _FormReader()
    reader.feed(html)
    return {
        name: value.removeprefix("\n") if name.startswith("v:") else value
        for name, value in reader.values.items()
    }


def session_links(html: str) -> list[str]:
    return [unescape(text) for text in re.findall(r'class="session-link"[^>]*>([^<]*)<', html)]
