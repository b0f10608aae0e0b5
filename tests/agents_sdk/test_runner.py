"""Agents run through the SDK's Runner with the drop-in as their session, on every backend."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from agents import Agent, Runner
from sqlalchemy.ext.asyncio import AsyncEngine

from sessionmeta import SessionMeta
from sessionmeta.agents import MetadataSQLAlchemySession

from .scripted_model import ScriptedModel, last_user_text


class RunMeta(SessionMeta):
    owner_id: str | None = None
    title: str | None = None
    turns: int | None = None
    last_run_at: dt.datetime | None = None


def texts(items: Sequence[object]) -> list[str]:
    found: list[str] = []
    for item in items:
        assert isinstance(item, dict)
        content = item.get("content")
        if isinstance(content, str):
            found.append(content)
        else:
            assert isinstance(content, list)
            found.append(" ".join(str(part.get("text")) for part in content))
    return found


async def test_runs_keep_history_and_metadata_across_turns(engine: AsyncEngine) -> None:
    model = ScriptedModel(lambda text: f"reply to {text}")
    agent = Agent(name="Assistant", instructions="Be brief.", model=model)
    session = MetadataSQLAlchemySession(
        "run-1", engine=engine, metadata_model=RunMeta, create_tables=True
    )
    await session.set_metadata({"owner_id": "u1", "title": "Planning", "turns": 0})

    for question in ("first question", "second question", "third question"):
        result = await Runner.run(agent, question, session=session)
        assert result.final_output == f"reply to {question}"
        meta = await session.get_metadata()
        assert meta.turns is not None
        await session.set_metadata(
            {"turns": meta.turns + 1, "last_run_at": dt.datetime.now(dt.timezone.utc)}
        )

    # The SDK read the stored history back into each turn's model input.
    assert texts(model.inputs[2]) == [
        "first question",
        "reply to first question",
        "second question",
        "reply to second question",
        "third question",
    ]
    # Another instance, as another process would make: the same history and metadata.
    reopened = MetadataSQLAlchemySession("run-1", engine=engine, metadata_model=RunMeta)
    assert texts(await reopened.get_items()) == [
        "first question",
        "reply to first question",
        "second question",
        "reply to second question",
        "third question",
        "reply to third question",
    ]
    meta = await reopened.get_metadata()
    assert (meta.owner_id, meta.title, meta.turns) == ("u1", "Planning", 3)
    assert meta.last_run_at is not None
    assert meta.last_run_at.tzinfo is not None
    assert await reopened.find_sessions_by_metadata("owner_id", "u1") == ["run-1"]


async def test_first_run_creates_the_session_then_metadata_joins_it(engine: AsyncEngine) -> None:
    agent = Agent(name="Assistant", model=ScriptedModel())
    session = MetadataSQLAlchemySession(
        "run-2", engine=engine, metadata_model=RunMeta, create_tables=True
    )
    await Runner.run(agent, "hello", session=session)
    await session.set_metadata({"title": "Named after the first run"})
    await Runner.run(agent, "again", session=session)
    assert texts(await session.get_items()) == ["hello", "echo: hello", "again", "echo: again"]
    assert (await session.get_metadata()).title == "Named after the first run"


async def test_runs_in_separate_sessions_do_not_mix(engine: AsyncEngine) -> None:
    model = ScriptedModel(lambda text: text.upper())
    agent = Agent(name="Assistant", model=model)
    alice = MetadataSQLAlchemySession(
        "alice-chat", engine=engine, metadata_model=RunMeta, create_tables=True
    )
    bob = MetadataSQLAlchemySession(
        "bob-chat", engine=engine, metadata_model=RunMeta, create_tables=True
    )
    await alice.set_metadata({"owner_id": "alice"})
    await bob.set_metadata({"owner_id": "bob"})
    await Runner.run(agent, "from alice", session=alice)
    await Runner.run(agent, "from bob", session=bob)
    await Runner.run(agent, "alice again", session=alice)

    assert [last_user_text(items) for items in model.inputs] == [
        "from alice",
        "from bob",
        "alice again",
    ]
    assert texts(model.inputs[2]) == ["from alice", "FROM ALICE", "alice again"]
    assert texts(await bob.get_items()) == ["from bob", "FROM BOB"]
    await alice.clear_session()
    assert await alice.get_items() == []
    assert (await alice.get_metadata()).owner_id is None
    assert (await bob.get_metadata()).owner_id == "bob"
    assert await bob.find_sessions_by_metadata("owner_id", "alice") == []
