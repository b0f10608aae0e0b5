"""A small multi-user chat backend on the OpenAI Agents SDK, with sessionmeta.

Each chat is one Agents SDK session. Its owner, title, tags, creation time and
incognito flag are typed metadata stored beside the history, in the same
database. Run it with::

    python examples/chat_backend.py [path/to/chat.sqlite3]

It uses an embedded SQLite file and a scripted local model, so it needs no
network and no API key. For a real model, build the agent without ``model=``
and set ``OPENAI_API_KEY``; for PostgreSQL or MySQL, pass another engine.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from agents import Agent, ModelResponse, Runner, Usage, set_tracing_disabled
from agents.items import TResponseInputItem, TResponseStreamEvent
from agents.models.interface import Model
from openai.types.responses import ResponseOutputMessage, ResponseOutputText
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from sessionmeta import MetadataStore, SessionMeta
from sessionmeta.agents import MetadataSQLAlchemySession


class ChatMeta(SessionMeta):
    """What the backend knows about a chat, besides its messages."""

    owner_id: str | None = None
    title: str | None = None
    tags: list[str] | None = None
    incognito: bool | None = None
    created_at: dt.datetime | None = None


@dataclass(frozen=True)
class ChatSummary:
    chat_id: str
    title: str
    tags: list[str]
    incognito: bool
    created_at: dt.datetime


class NotYourChat(PermissionError):
    """The chat does not exist, or belongs to another user."""


async def chats_of(store: MetadataStore[ChatMeta], owner_id: str) -> list[ChatSummary]:
    """The chats of ``owner_id``, newest first.

    One lookup by owner, then one read per chat. The store's query API, once
    available, does this as a single ordered query: switch this function to it.
    """
    chat_ids = await store.find_sessions_by_metadata("owner_id", owner_id, limit=1000)
    chats: list[ChatSummary] = []
    for chat_id in chat_ids:
        meta = await store.bind(chat_id).get_metadata()
        assert meta.created_at is not None, f"chat {chat_id!r} was created without a time"
        chats.append(
            ChatSummary(
                chat_id=chat_id,
                title=meta.title or "Untitled",
                tags=meta.tags or [],
                incognito=bool(meta.incognito),
                created_at=meta.created_at,
            )
        )
    chats.sort(key=lambda chat: (chat.created_at, chat.chat_id), reverse=True)
    return chats


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class ChatBackend:
    """Chats of many users on one database: every call names the user asking."""

    def __init__(
        self,
        engine: AsyncEngine,
        agent: Agent[Any],
        *,
        clock: Callable[[], dt.datetime] = utc_now,
    ) -> None:
        self.engine = engine
        self.agent = agent
        self.clock = clock
        # For queries across chats; it shares the engine and the tables.
        self.store = MetadataStore(ChatMeta, engine)

    async def create_tables(self) -> None:
        """Create the tables, as an application does at start-up (or in a migration)."""
        # Any session id will do: the tables are shared by all sessions.
        await self._session("startup").create_tables()

    def _session(self, chat_id: str) -> MetadataSQLAlchemySession[ChatMeta]:
        # One session object per request, as a web handler makes it: cheap, no I/O.
        return MetadataSQLAlchemySession(chat_id, engine=self.engine, metadata_model=ChatMeta)

    async def _owned(self, owner_id: str, chat_id: str) -> MetadataSQLAlchemySession[ChatMeta]:
        session = self._session(chat_id)
        if (await session.get_metadata(["owner_id"])).owner_id != owner_id:
            raise NotYourChat(f"user {owner_id!r} has no chat {chat_id!r}")
        return session

    async def create_chat(
        self, owner_id: str, title: str, *, incognito: bool = False, tags: Sequence[str] = ()
    ) -> str:
        chat_id = uuid.uuid4().hex
        # Metadata before the first message: the chat is listed before anyone speaks.
        await self._session(chat_id).set_metadata(
            ChatMeta(
                owner_id=owner_id,
                title=title,
                tags=list(tags),
                incognito=incognito,
                created_at=self.clock(),
            )
        )
        return chat_id

    async def list_chats(self, owner_id: str) -> list[ChatSummary]:
        return await chats_of(self.store, owner_id)

    async def rename(self, owner_id: str, chat_id: str, title: str) -> None:
        session = await self._owned(owner_id, chat_id)
        await session.set_metadata({"title": title})

    async def tag(self, owner_id: str, chat_id: str, *tags: str) -> None:
        session = await self._owned(owner_id, chat_id)
        # Read, then write: two tag calls on one chat at the same instant could
        # lose one tag. Good enough for a chat's labels.
        current = (await session.get_metadata(["tags"])).tags or []
        await session.set_metadata({"tags": current + [tag for tag in tags if tag not in current]})

    async def send(self, owner_id: str, chat_id: str, text: str) -> str:
        """Run the agent on ``text`` in the chat and return its answer."""
        session = await self._owned(owner_id, chat_id)
        meta = await session.get_metadata(["incognito"])
        # An incognito chat keeps no history: the run gets no session, so nothing
        # it says or hears is written. Its metadata (owner, title) stays.
        result = await Runner.run(self.agent, text, session=None if meta.incognito else session)
        return str(result.final_output)

    async def history(self, owner_id: str, chat_id: str) -> list[TResponseInputItem]:
        session = await self._owned(owner_id, chat_id)
        return await session.get_items()

    async def delete_chat(self, owner_id: str, chat_id: str) -> None:
        """Remove the chat: its history and metadata go in one transaction."""
        session = await self._owned(owner_id, chat_id)
        await session.clear_session()


class ScriptedModel(Model):
    """A local stand-in for an LLM: answers and says how many messages it was shown."""

    async def get_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        *args: Any,
        **kwargs: Any,
    ) -> ModelResponse:
        items = [input] if isinstance(input, str) else input
        last = items[-1]
        said = last if isinstance(last, str) else str(last.get("content", ""))
        text = f"You said {said!r} ({len(items)} message(s) in view)"
        message = ResponseOutputMessage(
            id=f"msg_{uuid.uuid4().hex}",
            type="message",
            role="assistant",
            status="completed",
            content=[ResponseOutputText(type="output_text", text=text, annotations=[])],
        )
        return ModelResponse(output=[message], usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[TResponseStreamEvent]:
        raise NotImplementedError("the scripted model does not stream")


async def demo(database: str) -> None:
    set_tracing_disabled(True)  # no spans sent to OpenAI: this demo runs offline
    engine = create_async_engine(f"sqlite+aiosqlite:///{database}")
    backend = ChatBackend(engine, Agent(name="Assistant", model=ScriptedModel()))
    try:
        await backend.create_tables()
        trip = await backend.create_chat("alice", "Trip to Lisbon", tags=["travel"])
        await backend.create_chat("bob", "Bob's chat")
        secret = await backend.create_chat("alice", "Gift ideas", incognito=True)

        print(await backend.send("alice", trip, "Find me a hotel"))
        print(await backend.send("alice", trip, "Near the river, please"))
        print(await backend.send("alice", secret, "Something for Bob"))

        await backend.rename("alice", trip, "Lisbon, May")
        await backend.tag("alice", trip, "hotels")
        try:
            await backend.rename("bob", trip, "Mine now")
        except NotYourChat as exc:
            print(f"refused: {exc}")

        print("alice's chats, newest first:")
        for chat in await backend.list_chats("alice"):
            kept = len(await backend.history("alice", chat.chat_id))
            flag = " [incognito]" if chat.incognito else ""
            print(f"  {chat.title}{flag}  tags={chat.tags}  messages kept={kept}")
    finally:
        await engine.dispose()


if __name__ == "__main__":
    asyncio.run(demo(sys.argv[1] if len(sys.argv) > 1 else "chat_backend.sqlite3"))
