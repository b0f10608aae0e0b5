"""A small multi-user chat backend on the OpenAI Agents SDK, with sessionmeta.

Each chat is one Agents SDK session. Its owner, title, tags, creation time and
incognito flag are typed metadata stored beside the history, in the same
database. Each user works through a scoped view of the store
(``store.scoped(owner_id=user)``), so another user's chat is refused by the
store itself, in the same statement or transaction as the read or write.
Run it with::

    python examples/chat_backend.py [path/to/chat.sqlite3]

It uses an embedded SQLite file and a scripted local model, so it needs no
network and no API key. For a real model, build the agent without ``model=``
and set ``OPENAI_API_KEY``; for PostgreSQL or MySQL, pass another engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from agents import Agent, ModelResponse, Runner, Usage, set_tracing_disabled
from agents.items import TResponseInputItem, TResponseStreamEvent
from agents.models.interface import Model
from openai.types.responses import ResponseOutputMessage, ResponseOutputText
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from sessionmeta import (
    MetadataStore,
    ScopedStore,
    SessionMeta,
    SessionNotFoundError,
    SessionNotInScopeError,
    field,
)
from sessionmeta.agents import MetadataSQLAlchemySession


class ChatMeta(SessionMeta):
    """What the backend knows about a chat, besides its messages."""

    owner_id: str | None = None
    title: str | None = None
    # A set: add_to is a union, so a tag added twice is kept once.
    tags: set[str] | None = None
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


async def chats_of(mine: ScopedStore[ChatMeta]) -> list[ChatSummary]:
    """The chats of one user (a scoped view), newest first: one query per 100 chats."""
    chats: list[ChatSummary] = []
    cursor: str | None = None
    while True:
        page = await mine.list_sessions(
            order_by=field("created_at").desc(), limit=100, cursor=cursor
        )
        for chat_id, meta in page:
            assert meta.created_at is not None, f"chat {chat_id!r} was created without a time"
            chats.append(
                ChatSummary(
                    chat_id=chat_id,
                    title=meta.title or "Untitled",
                    tags=sorted(meta.tags or ()),
                    incognito=bool(meta.incognito),
                    created_at=meta.created_at,
                )
            )
        cursor = page.next_cursor
        if cursor is None:
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
        # Each user's view of it (_mine) lists, reads and writes their chats only;
        # it shares the engine and the tables with the SDK sessions.
        self.store = MetadataStore(ChatMeta, engine)

    async def create_tables(self) -> None:
        """Create the tables, as an application does at start-up (or in a migration)."""
        # Any session id will do: the tables are shared by all sessions.
        await self._session("startup").create_tables()

    def _session(self, chat_id: str) -> MetadataSQLAlchemySession[ChatMeta]:
        # One session object per request, as a web handler makes it: cheap, no I/O.
        return MetadataSQLAlchemySession(chat_id, engine=self.engine, metadata_model=ChatMeta)

    def _mine(self, owner_id: str) -> ScopedStore[ChatMeta]:
        # The user's view of the store: other users' chats are refused by the store.
        return self.store.scoped(owner_id=owner_id)

    @contextlib.contextmanager
    def _owned(self, owner_id: str, chat_id: str) -> Iterator[None]:
        """Report a chat that is missing or another user's as NotYourChat."""
        try:
            yield
        except (SessionNotFoundError, SessionNotInScopeError) as exc:
            raise NotYourChat(f"user {owner_id!r} has no chat {chat_id!r}") from exc

    async def _require(self, owner_id: str, chat_id: str) -> ChatMeta:
        """The chat's metadata, if it is the user's (one statement)."""
        with self._owned(owner_id, chat_id):
            meta = await self._mine(owner_id).bind(chat_id).get_metadata()
        if "owner_id" not in meta.model_fields_set:  # no such chat
            raise NotYourChat(f"user {owner_id!r} has no chat {chat_id!r}")
        return meta

    async def create_chat(
        self, owner_id: str, title: str, *, incognito: bool = False, tags: Sequence[str] = ()
    ) -> str:
        chat_id = uuid.uuid4().hex
        # Metadata before the first message: the chat is listed before anyone speaks.
        # Written through the user's view, which stores owner_id with it.
        await (
            self._mine(owner_id)
            .bind(chat_id)
            .set_metadata(
                ChatMeta(title=title, tags=set(tags), incognito=incognito, created_at=self.clock())
            )
        )
        return chat_id

    async def list_chats(self, owner_id: str) -> list[ChatSummary]:
        return await chats_of(self._mine(owner_id))

    async def rename(self, owner_id: str, chat_id: str, title: str) -> None:
        # create=False: renaming a chat that does not exist does not create it.
        with self._owned(owner_id, chat_id):
            await self._mine(owner_id).bind(chat_id).set_metadata({"title": title}, create=False)

    async def tag(self, owner_id: str, chat_id: str, *tags: str) -> None:
        # Atomic: two tag calls on one chat at the same instant both land.
        with self._owned(owner_id, chat_id):
            await self._mine(owner_id).bind(chat_id).add_to("tags", *tags, create=False)

    async def send(self, owner_id: str, chat_id: str, text: str) -> str:
        """Run the agent on ``text`` in the chat and return its answer."""
        meta = await self._require(owner_id, chat_id)
        # An incognito chat keeps no history: the run gets no session, so nothing
        # it says or hears is written. Its metadata (owner, title) stays.
        session = None if meta.incognito else self._session(chat_id)
        result = await Runner.run(self.agent, text, session=session)
        return str(result.final_output)

    async def history(self, owner_id: str, chat_id: str) -> list[TResponseInputItem]:
        await self._require(owner_id, chat_id)
        return await self._session(chat_id).get_items()

    async def delete_chat(self, owner_id: str, chat_id: str) -> None:
        """Remove the chat: its history and metadata go in one transaction."""
        # Chats never change owner (the scoped view refuses writing owner_id), so a
        # chat that is the user's when checked is still theirs when deleted.
        await self._require(owner_id, chat_id)
        await self._session(chat_id).clear_session()


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
