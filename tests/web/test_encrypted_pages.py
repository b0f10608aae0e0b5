"""The admin pages on a model with encrypted fields: values shown and edited decrypted,
found by equality, written back encrypted."""

from __future__ import annotations

import httpx
import pytest

pytest.importorskip("cryptography", reason="encrypted fields need the encryption extra")

from sqlalchemy.ext.asyncio import AsyncEngine

from sessionmeta import MetadataStore
from sessionmeta.core.encryption import parse_envelope
from sessionmeta.web import create_app
from tests.encrypted_models import Contact
from tests.test_encryption import keys, stored_text

from .conftest import edit_form, session_links


async def test_encrypted_values_show_decrypted_and_edit_encrypted(engine: AsyncEngine) -> None:
    store = MetadataStore(Contact, engine, create_tables=True, keys=keys(), on_invalid="default")
    await store.create_tables()
    await store.bind("s1").set_metadata({"email": "ada@example.org", "owner_id": "u1"})
    await store.bind("s2").set_metadata({"email": "grace@example.org"})
    app = create_app(store)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8765"
    ) as client:
        page = (await client.get("/session", params={"id": "s1"})).text
        assert "ada@example.org" in page and "$encrypted" not in page
        listing = (await client.get("/?c=email")).text
        assert "grace@example.org" in listing and "$encrypted" not in listing
        found = await client.get("/", params={"op:email": "eq", "v:email": "ada@example.org"})
        assert found.status_code == 200
        assert session_links(found.text) == ["s1"]
        form = edit_form((await client.get("/session/edit", params={"id": "s1"})).text)
        assert "ada@example.org" in form.values()
        form["v:email"] = "ada.lovelace@example.org"
        response = await client.post("/session/edit", data=form)
        assert response.status_code == 303, response.text
    assert (await store.bind("s1").get_metadata()).email == "ada.lovelace@example.org"
    envelope = parse_envelope(await stored_text(engine, "s1", "email"))
    assert envelope is not None and envelope.key_id == "k1"
    assert await store.find_sessions_by_metadata("email", "ada.lovelace@example.org") == ["s1"]
