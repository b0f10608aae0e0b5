"""The SDK's compaction session wraps the drop-in and keeps its atomic replacement."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agents import Agent, Runner
from agents.memory import OpenAIResponsesCompactionSession
from sqlalchemy.ext.asyncio import AsyncEngine

from sessionmeta.agents import MetadataSQLAlchemySession
from tests.agents_sdk.scripted_model import ScriptedModel
from tests.agents_sdk.test_session import texts
from tests.models import ChatMeta

SUMMARY = {
    "type": "message",
    "role": "user",
    "content": [{"type": "input_text", "text": "summary"}],
}


@dataclass
class Compacted:
    output: list[dict[str, Any]]
    usage: None = None


@dataclass
class CompactingResponses:
    """The ``responses.compact`` endpoint, answering with one summary message."""

    requests: list[dict[str, Any]] = field(default_factory=list)

    async def compact(self, **kwargs: Any) -> Compacted:
        self.requests.append(kwargs)
        return Compacted(output=[SUMMARY])


@dataclass
class CompactingClient:
    responses: CompactingResponses = field(default_factory=CompactingResponses)


class WatchedSession(MetadataSQLAlchemySession[ChatMeta]):
    """The drop-in, counting the calls of the SDK's compaction snapshot hook."""

    snapshots = 0

    async def _get_compaction_snapshot(self, limit: int, **options: Any) -> Any:
        type(self).snapshots += 1
        return await super()._get_compaction_snapshot(limit, **options)


async def test_compaction_replaces_history_through_the_snapshot_hook(
    engine: AsyncEngine,
) -> None:
    underlying = WatchedSession("c1", engine=engine, metadata_model=ChatMeta, create_tables=True)
    await underlying.set_metadata({"owner_id": "u1", "title": "long chat"})
    client = CompactingClient()
    session = OpenAIResponsesCompactionSession(
        "c1",
        underlying,
        client=client,  # type: ignore[arg-type]
        should_trigger_compaction=lambda context: True,
    )
    model = ScriptedModel(lambda text: f"reply to {text}", response_ids=True)
    agent = Agent(name="Assistant", model=model)
    WatchedSession.snapshots = 0
    result = await Runner.run(agent, "first question", session=session)
    assert result.final_output == "reply to first question"
    # After the turn the SDK compacted: the stored suffix was replaced atomically, via
    # the hook the drop-in inherits, by the compacted output.
    assert client.responses.requests, "compaction was not requested"
    assert WatchedSession.snapshots >= 1
    stored = await underlying.get_items()
    assert stored and all(item.get("role") == "user" for item in stored if isinstance(item, dict))
    assert "reply to first question" not in texts(stored)
    # Metadata is the session's, not the history's: compaction leaves it alone.
    assert (await underlying.get_metadata()).title == "long chat"
    # The compacted history feeds the next turn.
    second = await Runner.run(agent, "second question", session=session)
    assert second.final_output == "reply to second question"


async def test_manual_compaction_replaces_history_and_keeps_metadata(engine: AsyncEngine) -> None:
    underlying = MetadataSQLAlchemySession(
        "c2", engine=engine, metadata_model=ChatMeta, create_tables=True
    )
    await underlying.set_metadata({"title": "kept"})
    history = [
        {"role": "user", "content": f"question {n}"}
        if n % 2 == 0
        else {"role": "assistant", "content": f"answer {n}"}
        for n in range(6)
    ]
    await underlying.add_items(history)  # type: ignore[arg-type]
    client = CompactingClient()
    session = OpenAIResponsesCompactionSession(
        "c2",
        underlying,
        client=client,  # type: ignore[arg-type]
    )
    # A manual compaction replaces the whole history: in one transaction, not by
    # clearing the session (which would delete its metadata) and adding back.
    await session.run_compaction({"force": True})
    assert client.responses.requests
    stored = await underlying.get_items()
    assert [item.get("role") for item in stored if isinstance(item, dict)] == ["user"]
    assert (await underlying.get_metadata()).title == "kept"
