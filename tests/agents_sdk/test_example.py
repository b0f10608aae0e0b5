"""examples/chat_backend.py: runs as a script, and its backend behaves on every backend."""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from agents import Agent
from sqlalchemy.ext.asyncio import AsyncEngine

import sessionmeta

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "chat_backend.py"
SRC = Path(sessionmeta.__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def example() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("chat_backend", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered while loaded: pydantic and dataclasses resolve annotations through it.
    sys.modules["chat_backend"] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules["chat_backend"]


class Clock:
    """A clock that moves one minute per reading: creation order is unambiguous."""

    def __init__(self) -> None:
        self.now = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)

    def __call__(self) -> dt.datetime:
        self.now += dt.timedelta(minutes=1)
        return self.now


@pytest.fixture
async def chats(example: ModuleType, engine: AsyncEngine) -> Any:
    agent = Agent(name="Assistant", model=example.ScriptedModel())
    chat_backend = example.ChatBackend(engine, agent, clock=Clock())
    await chat_backend.create_tables()
    return chat_backend


def test_example_runs_as_a_script(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-W", "error", str(EXAMPLE), str(tmp_path / "chat.sqlite3")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(SRC)},
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "You said 'Near the river, please' (3 message(s) in view)" in lines
    assert any(line.startswith("refused: user 'bob' has no chat") for line in lines)
    listing = lines[lines.index("alice's chats, newest first:") + 1 :]
    assert listing == [
        "  Gift ideas [incognito]  tags=[]  messages kept=0",
        "  Lisbon, May  tags=['hotels', 'travel']  messages kept=4",
    ]
    assert (tmp_path / "chat.sqlite3").exists()


async def test_chats_are_listed_per_user_newest_first(chats: Any) -> None:
    first = await chats.create_chat("alice", "First")
    bobs = await chats.create_chat("bob", "Bob's")
    second = await chats.create_chat("alice", "Second", tags=["work"])

    listed = await chats.list_chats("alice")
    assert [(chat.chat_id, chat.title, chat.tags) for chat in listed] == [
        (second, "Second", ["work"]),
        (first, "First", []),
    ]
    assert [chat.chat_id for chat in await chats.list_chats("bob")] == [bobs]
    assert await chats.list_chats("carol") == []


async def test_rename_and_tag(chats: Any) -> None:
    chat = await chats.create_chat("alice", "Draft", tags=["a"])
    await chats.rename("alice", chat, "Final")
    await chats.tag("alice", chat, "b", "a", "c")
    (summary,) = await chats.list_chats("alice")
    assert (summary.title, summary.tags) == ("Final", ["a", "b", "c"])


async def test_history_is_kept_and_used(chats: Any) -> None:
    chat = await chats.create_chat("alice", "Chat")
    await chats.send("alice", chat, "one")
    answer = await chats.send("alice", chat, "two")
    assert answer == "You said 'two' (3 message(s) in view)"
    assert len(await chats.history("alice", chat)) == 4


async def test_incognito_chat_keeps_no_history(chats: Any) -> None:
    chat = await chats.create_chat("alice", "Secret", incognito=True)
    assert await chats.send("alice", chat, "one") == "You said 'one' (1 message(s) in view)"
    assert await chats.send("alice", chat, "two") == "You said 'two' (1 message(s) in view)"
    assert await chats.history("alice", chat) == []
    (summary,) = await chats.list_chats("alice")
    assert (summary.title, summary.incognito) == ("Secret", True)


async def test_other_users_chats_are_refused(example: ModuleType, chats: Any) -> None:
    chat = await chats.create_chat("alice", "Mine")
    with pytest.raises(example.NotYourChat, match="'bob'"):
        await chats.rename("bob", chat, "Stolen")
    with pytest.raises(example.NotYourChat):
        await chats.send("bob", chat, "hello")
    with pytest.raises(example.NotYourChat):
        await chats.history("bob", "no-such-chat")
    (summary,) = await chats.list_chats("alice")
    assert summary.title == "Mine"


async def test_delete_chat_removes_history_and_listing(chats: Any) -> None:
    kept = await chats.create_chat("alice", "Kept")
    gone = await chats.create_chat("alice", "Gone")
    await chats.send("alice", gone, "hello")
    await chats.delete_chat("alice", gone)
    assert [chat.chat_id for chat in await chats.list_chats("alice")] == [kept]
    with pytest.raises(PermissionError):
        await chats.history("alice", gone)


async def test_tags_added_at_once_all_land(chats: Any) -> None:
    chat = await chats.create_chat("alice", "Chat")
    await asyncio.gather(*(chats.tag("alice", chat, f"t{number}") for number in range(8)))
    (summary,) = await chats.list_chats("alice")
    assert summary.tags == [f"t{number}" for number in range(8)]


async def test_renaming_or_tagging_a_missing_chat_creates_nothing(
    example: ModuleType, chats: Any
) -> None:
    with pytest.raises(example.NotYourChat, match="'no-such-chat'"):
        await chats.rename("alice", "no-such-chat", "New")
    with pytest.raises(example.NotYourChat):
        await chats.tag("alice", "no-such-chat", "x")
    assert not await chats.store.exists("no-such-chat")
    assert await chats.list_chats("alice") == []
