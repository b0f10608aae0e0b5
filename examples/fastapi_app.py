"""A multi-user chat API on FastAPI and the OpenAI Agents SDK, with sessionmeta.

Each chat is one Agents SDK session; its owner, title, tags and start time are
typed metadata beside the history, in the same database. Every request sees the
caller's chats only, through ``store.scoped(owner_id=user)``: another user's chat,
or one that does not exist, is a 404, and is never created or changed.

    GET    /chats?tag=&limit=&cursor=   my chats, newest first, a page at a time
    POST   /chats                       start a chat             {"title", "tags"}
    GET    /chats/{id}                  one chat
    PATCH  /chats/{id}                  rename it                {"title"}
    PUT    /chats/{id}/tags/{tag}       tag it (atomic: concurrent tags all land)
    DELETE /chats/{id}/tags/{tag}       untag it
    POST   /chats/{id}/messages         run a turn of the agent  {"text"}
    GET    /chats/{id}/messages         the history
    DELETE /chats/{id}                  delete it, history and all

Run it (``pip install 'sessionmeta[agents,fastapi]' uvicorn``)::

    uvicorn --factory fastapi_app:create_app --app-dir examples
    curl -H 'X-User: ann' -d '{"title": "Trip"}' -H 'Content-Type: application/json' \\
        localhost:8000/chats

It stores chats in ``$CHATS_DATABASE_URL`` (default: the SQLite file
``chats.sqlite3``) and answers with a scripted local model, so it needs no network
and no API key; set ``$CHATS_MODEL`` (``gpt-4.1``, say) and ``OPENAI_API_KEY`` for
a real one. The ``X-User`` header stands in for real authentication.
"""

import datetime as dt
import os
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

from agents import Agent, Model, ModelResponse, Runner, Usage, set_tracing_disabled
from agents.items import TResponseInputItem, TResponseStreamEvent
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Query, Request
from openai.types.responses import ResponseOutputMessage, ResponseOutputText
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from sessionmeta import MetadataStore, Page, ScopedStore, SessionMeta, field
from sessionmeta.agents import MetadataSQLAlchemySession
from sessionmeta.fastapi import add_exception_handlers, scoped_dependency


class ChatMeta(SessionMeta):
    """What the API knows about a chat, besides its messages."""

    owner_id: str | None = None
    title: str | None = None
    tags: list[str] | None = None
    started_at: dt.datetime | None = None


class Chat(BaseModel):
    """A chat as the API shows it."""

    id: str
    title: str
    tags: list[str]
    started_at: dt.datetime


class NewChat(BaseModel):
    title: str = Field(min_length=1, max_length=200)
    tags: list[str] = []


class Rename(BaseModel):
    title: str = Field(min_length=1, max_length=200)


class Message(BaseModel):
    text: str = Field(min_length=1)


class Said(BaseModel):
    role: str
    text: str


def current_user(x_user: Annotated[str | None, Header()] = None) -> str:
    """The caller's user id. A stand-in: a real application authenticates here."""
    if not x_user:
        raise HTTPException(status_code=401, detail="say who you are in the X-User header")
    return x_user


class Chats:
    """What every request shares: one store, one engine, one agent (all safe to share)."""

    def __init__(
        self,
        engine: AsyncEngine,
        agent: Agent[Any],
        clock: Callable[[], dt.datetime],
    ) -> None:
        self.engine = engine
        self.agent = agent
        self.clock = clock
        self.store = MetadataStore(ChatMeta, engine)

    def session(self, chat_id: str) -> MetadataSQLAlchemySession[ChatMeta]:
        """The chat's SDK session: cheap, no I/O; one per request."""
        return MetadataSQLAlchemySession(chat_id, engine=self.engine, metadata_model=ChatMeta)

    async def create_tables(self) -> None:
        # The sessions, messages and metadata tables (any session id will do).
        await self.session("startup").create_tables()


def chats_of(request: Request) -> Chats:
    chats: Chats = request.app.state.chats
    return chats


def store_of(request: Request) -> MetadataStore[ChatMeta]:
    return chats_of(request).store


App = Annotated[Chats, Depends(chats_of)]
# The caller's chats only: store.scoped(owner_id=<the X-User header>).
MyChats = Annotated[ScopedStore[ChatMeta], Depends(scoped_dependency(store_of, current_user))]

router = APIRouter()


def as_chat(chat_id: str, meta: ChatMeta) -> Chat:
    assert meta.title is not None and meta.started_at is not None, chat_id
    return Chat(id=chat_id, title=meta.title, tags=meta.tags or [], started_at=meta.started_at)


async def read_chat(mine: ScopedStore[ChatMeta], chat_id: str) -> Chat:
    # One statement: the chat's metadata if it is the caller's; a chat that does
    # not exist reads as no metadata at all.
    meta = await mine.bind(chat_id).get_metadata()
    if "owner_id" not in meta.model_fields_set:
        raise HTTPException(status_code=404, detail=f"no chat {chat_id!r}")
    return as_chat(chat_id, meta)


async def require_chat(mine: ScopedStore[ChatMeta], chat_id: str) -> None:
    # Before the history is touched. Chats never change owner here (the scoped
    # view refuses writing owner_id), so a chat that is the caller's now stays so.
    if not await mine.exists(chat_id):
        raise HTTPException(status_code=404, detail=f"no chat {chat_id!r}")


@router.get("/chats")
async def list_chats(
    mine: MyChats,
    tag: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: str | None = None,
) -> Page[Chat]:
    """My chats, newest first; ``next_cursor`` fetches the next page."""
    filters = [field("tags").contains(tag)] if tag is not None else []
    page = await mine.list_sessions(*filters, order_by="-started_at", limit=limit, cursor=cursor)
    return Page([as_chat(item.session_id, item.metadata) for item in page], page.next_cursor)


@router.post("/chats", status_code=201)
async def start_chat(new: NewChat, mine: MyChats, app: App) -> Chat:
    chat_id = uuid.uuid4().hex
    meta = ChatMeta(title=new.title, tags=new.tags, started_at=app.clock())
    # The scoped view writes owner_id with it: the new chat is the caller's.
    await mine.bind(chat_id).set_metadata(meta)
    return as_chat(chat_id, meta)


@router.get("/chats/{chat_id}")
async def get_chat(chat_id: str, mine: MyChats) -> Chat:
    return await read_chat(mine, chat_id)


@router.patch("/chats/{chat_id}")
async def rename_chat(chat_id: str, rename: Rename, mine: MyChats) -> Chat:
    # create=False: a missing chat is a 404 (SessionNotFoundError), not a new chat.
    await mine.bind(chat_id).set_metadata({"title": rename.title}, create=False)
    return await read_chat(mine, chat_id)


@router.put("/chats/{chat_id}/tags/{tag}")
async def tag_chat(chat_id: str, tag: str, mine: MyChats) -> Chat:
    await mine.bind(chat_id).add_to("tags", tag, create=False)
    return await read_chat(mine, chat_id)


@router.delete("/chats/{chat_id}/tags/{tag}")
async def untag_chat(chat_id: str, tag: str, mine: MyChats) -> Chat:
    await mine.bind(chat_id).remove_from("tags", tag)
    return await read_chat(mine, chat_id)


@router.post("/chats/{chat_id}/messages")
async def send(chat_id: str, message: Message, mine: MyChats, app: App) -> Said:
    """Run one turn of the agent in the chat; the SDK keeps the history."""
    await require_chat(mine, chat_id)
    result = await Runner.run(app.agent, message.text, session=app.session(chat_id))
    return Said(role="assistant", text=str(result.final_output))


@router.get("/chats/{chat_id}/messages")
async def history(chat_id: str, mine: MyChats, app: App) -> list[Said]:
    await require_chat(mine, chat_id)
    return [said(item) for item in await app.session(chat_id).get_items()]


@router.delete("/chats/{chat_id}", status_code=204)
async def delete_chat(chat_id: str, mine: MyChats, app: App) -> None:
    await require_chat(mine, chat_id)
    # The SDK deletes the session row; the metadata goes with it, in one transaction.
    await app.session(chat_id).clear_session()


def said(item: TResponseInputItem) -> Said:
    """Who said what in one history item (user input or assistant message)."""
    content: Any = item.get("content", "") if isinstance(item, dict) else ""
    if isinstance(content, list):
        content = " ".join(str(part.get("text", "")) for part in content)
    role = item.get("role", "assistant") if isinstance(item, dict) else "assistant"
    return Said(role=str(role), text=str(content))


class ScriptedModel(Model):
    """A local stand-in for an LLM: it repeats the last message and counts what it saw."""

    async def get_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        *args: Any,
        **kwargs: Any,
    ) -> ModelResponse:
        items: list[TResponseInputItem] = (
            [{"role": "user", "content": input}] if isinstance(input, str) else input
        )
        last = said(items[-1]).text
        text = f"You said {last!r} ({len(items)} message(s) in view)"
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


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def create_app(
    engine: AsyncEngine | None = None,
    *,
    model: Model | str | None = None,
    clock: Callable[[], dt.datetime] = utc_now,
) -> FastAPI:
    """The API on ``engine`` (default: ``$CHATS_DATABASE_URL``, or ``chats.sqlite3``),
    answering with ``model`` (default: ``$CHATS_MODEL``, or the scripted model)."""
    own_engine = engine is None
    if engine is None:
        engine = create_async_engine(
            os.environ.get("CHATS_DATABASE_URL", "sqlite+aiosqlite:///chats.sqlite3")
        )
    if model is None:
        model = os.environ.get("CHATS_MODEL") or ScriptedModel()
    if isinstance(model, ScriptedModel):
        set_tracing_disabled(True)  # no spans sent to OpenAI when running offline
    chats = Chats(engine, Agent(name="Assistant", instructions="Be brief.", model=model), clock)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await chats.create_tables()
        yield
        if own_engine:
            await chats.engine.dispose()

    app = FastAPI(title="Chats", lifespan=lifespan)
    app.state.chats = chats
    add_exception_handlers(app)  # 404 for others' and missing chats, 422, 409, 400
    app.include_router(router)
    return app


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(create_app())
