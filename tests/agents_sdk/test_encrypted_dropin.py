"""The Agents SDK drop-in passes its keys to the store: encrypted fields on a session."""

from __future__ import annotations

import pytest

pytest.importorskip("cryptography", reason="encrypted fields need the encryption extra")

from sqlalchemy.ext.asyncio import AsyncEngine

from sessionmeta import DecryptionError, InvalidArgumentError
from sessionmeta.agents import MetadataSQLAlchemySession
from sessionmeta.core.encryption import parse_envelope
from tests.encrypted_models import Contact
from tests.test_encryption import keys, raw_rows


async def test_a_drop_in_session_encrypts_and_finds(engine: AsyncEngine) -> None:
    session = MetadataSQLAlchemySession(
        "chat-1", engine=engine, metadata_model=Contact, create_tables=True, keys=keys()
    )
    await session.add_items([{"role": "user", "content": "hello"}])
    await session.set_metadata({"email": "ada@example.org", "owner_id": "u1"})
    assert (await session.get_metadata()).email == "ada@example.org"
    rows = {key: value for _, key, value, _, _ in await raw_rows(engine)}
    assert parse_envelope(rows["email"]) is not None
    # Sessions made per request with equal keys share the store, and find each other.
    again = MetadataSQLAlchemySession("chat-2", engine=engine, metadata_model=Contact, keys=keys())
    assert again.metadata_store is session.metadata_store
    assert await again.metadata_store.find_sessions_by_metadata("email", "ada@example.org") == [
        "chat-1"
    ]
    other = MetadataSQLAlchemySession(
        "chat-1", engine=engine, metadata_model=Contact, keys=keys("k2")
    )
    with pytest.raises(DecryptionError, match=r"'chat-1'.*'email'.*'k1'"):
        await other.get_metadata()
    with pytest.raises(InvalidArgumentError, match="keys=EncryptionKeys"):
        MetadataSQLAlchemySession("chat-3", engine=engine, metadata_model=Contact)
