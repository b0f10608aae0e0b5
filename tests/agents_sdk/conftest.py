"""Fixtures for the Agents SDK drop-in; these tests are skipped without the ``agents`` extra."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.models import ChatMeta

if TYPE_CHECKING:
    from sessionmeta.agents import MetadataSQLAlchemySession

# The suite also runs without the extra (a CI step); then there is nothing here to collect.
try:
    import agents  # noqa: F401
except ImportError:
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(autouse=True)
def _no_tracing() -> None:
    # Tracing would export spans to OpenAI's servers: no network in tests.
    import agents

    agents.set_tracing_disabled(True)


@pytest.fixture
async def engine(engine: AsyncEngine) -> AsyncEngine:
    """The shared fixture's engine, its pool emptied after the reset, as a fresh application's.

    On SQLite the SDK switches the file to WAL when it opens a connection; a
    connection pooled before the session existed would stay in the old journal
    mode and make that switch fail with "database is locked".
    """
    await engine.dispose()
    return engine


@pytest.fixture
def session(engine: AsyncEngine) -> MetadataSQLAlchemySession[ChatMeta]:
    """The drop-in for session ``chat-1``, creating its tables on first use."""
    from sessionmeta.agents import MetadataSQLAlchemySession

    return MetadataSQLAlchemySession(
        "chat-1", engine=engine, metadata_model=ChatMeta, create_tables=True
    )
