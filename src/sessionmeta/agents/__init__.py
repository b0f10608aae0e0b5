"""A drop-in for the Agents SDK's ``SQLAlchemySession`` with typed metadata on the session.

Needs the ``agents`` extra: ``pip install 'sessionmeta[agents]'``. Built on the
SDK session's public API only (its constructor arguments, ``session_id``,
``engine`` and the ``Session`` methods), so an SDK upgrade cannot silently
break it through a renamed private attribute.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any, Generic

try:
    from agents.extensions.memory.sqlalchemy_session import SQLAlchemySession
    from agents.items import TResponseInputItem
    from agents.memory.session_settings import SessionSettings
except ImportError as exc:  # pragma: no cover - exercised in a subprocess without the SDK
    raise ImportError(
        "sessionmeta.agents needs the OpenAI Agents SDK; install it with "
        f"pip install 'sessionmeta[agents]' ({exc})"
    ) from exc

from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from sessionmeta.agents.engine_state import TableNames, engine_state
from sessionmeta.core.spec import ModelT, check_session_id
from sessionmeta.errors import DatabaseError
from sessionmeta.io.bound import BoundMetadata
from sessionmeta.io.operations import OnInvalid
from sessionmeta.io.store import MetadataStore

__all__ = ["MetadataSQLAlchemySession"]


def _foreign_key_hint(names: TableNames, exc: DatabaseError) -> str:
    sessions_table, messages_table, metadata_table = names
    return (
        f"cannot create {messages_table!r} or {metadata_table!r}: MySQL/MariaDB refused "
        f"a foreign key to {sessions_table}.session_id, whose type or collation is not the "
        "VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin that sessionmeta uses; "
        f"give {sessions_table}.session_id (and the columns referring to it) that type "
        f"({exc})"
    )


class MetadataSQLAlchemySession(SQLAlchemySession, Generic[ModelT]):
    """The Agents SDK's ``SQLAlchemySession``, with typed metadata on the session.

    Takes the SDK session's arguments plus ``metadata_model`` (a
    :class:`~sessionmeta.SessionMeta` subclass) and ``metadata_table``, and goes
    into ``Runner.run(..., session=session)`` unchanged. ``create_tables=True``
    creates the sessions, messages and metadata tables, in a form MySQL/MariaDB
    accepts too; tables that exist are left as they are. :meth:`clear_session`
    removes the session's metadata with its history, in one transaction.
    """

    def __init__(
        self,
        session_id: str,
        *,
        engine: AsyncEngine,
        metadata_model: type[ModelT],
        create_tables: bool = False,
        sessions_table: str = "agent_sessions",
        messages_table: str = "agent_messages",
        metadata_table: str = "agent_sessions_metadata",
        session_settings: SessionSettings | dict[str, Any] | None = None,
        ensure_ascii: bool = True,
        on_invalid: OnInvalid = "raise",
    ) -> None:
        check_session_id(session_id)
        names = (sessions_table, messages_table, metadata_table)
        state = engine_state(engine)
        store = state.store(engine, metadata_model, names, on_invalid)
        # The SDK's own table creation is never used: its unbounded session id
        # cannot be created on MySQL. Ours describes the same tables.
        super().__init__(
            session_id,
            engine=engine,
            create_tables=False,
            sessions_table=sessions_table,
            messages_table=messages_table,
            session_settings=session_settings,
            ensure_ascii=ensure_ascii,
        )
        # Prefixed, so that no attribute of the SDK's, present or future, is shadowed.
        self._sessionmeta_store = store
        self._sessionmeta_state = state
        self._sessionmeta_table_names = names
        self._sessionmeta_tables_pending = create_tables and names not in state.created

    @classmethod
    def from_url(  # type: ignore[override]  # metadata_model is required here
        cls,
        session_id: str,
        *,
        url: str,
        metadata_model: type[ModelT],
        engine_kwargs: dict[str, Any] | None = None,
        session_settings: SessionSettings | dict[str, Any] | None = None,
        create_tables: bool = False,
        sessions_table: str = "agent_sessions",
        messages_table: str = "agent_messages",
        metadata_table: str = "agent_sessions_metadata",
        ensure_ascii: bool = True,
        on_invalid: OnInvalid = "raise",
    ) -> MetadataSQLAlchemySession[ModelT]:
        """A session on a new engine for ``url``; ``await session.engine.dispose()`` when done."""
        check_session_id(session_id)
        try:
            engine = create_async_engine(url, **(engine_kwargs or {}))
        except Exception as exc:
            raise DatabaseError(f"cannot use database URL {url!r}: {exc}") from exc
        return cls(
            session_id,
            engine=engine,
            metadata_model=metadata_model,
            create_tables=create_tables,
            sessions_table=sessions_table,
            messages_table=messages_table,
            metadata_table=metadata_table,
            session_settings=session_settings,
            ensure_ascii=ensure_ascii,
            on_invalid=on_invalid,
        )

    @property
    def metadata_store(self) -> MetadataStore[ModelT]:
        """The store of every session's metadata on this engine, for queries across sessions."""
        return self._sessionmeta_store

    @property
    def sql_metadata(self) -> MetaData:
        """SQLAlchemy ``MetaData`` of all three tables, e.g. as Alembic's ``target_metadata``."""
        return self._sessionmeta_store.sql_metadata

    async def create_tables(self) -> None:
        """Create whichever of the sessions, messages and metadata tables are missing."""
        await self._sessionmeta_create(again=True)

    async def _sessionmeta_ready(self) -> None:
        if self._sessionmeta_tables_pending:
            await self._sessionmeta_create(again=False)

    async def _sessionmeta_create(self, *, again: bool) -> None:
        names = self._sessionmeta_table_names
        state = self._sessionmeta_state
        while not state.create_lock.acquire(blocking=False):  # noqa: ASYNC110
            # Polled, as the SDK does, so a cancelled waiter never strands the lock.
            await asyncio.sleep(0.01)
        try:
            if again or names not in state.created:
                try:
                    await self._sessionmeta_store.create_tables()
                except DatabaseError as exc:
                    store = self._sessionmeta_store
                    if store.db.error_kind(exc) == "incompatible_parent":
                        raise DatabaseError(_foreign_key_hint(names, exc)) from exc
                    raise
                state.created.add(names)
        finally:
            state.create_lock.release()
        self._sessionmeta_tables_pending = False

    def _bound(self) -> BoundMetadata[ModelT]:
        # Bound per call: the SDK's session_id is a plain attribute.
        return self._sessionmeta_store.bind(self.session_id)

    # The SDK's Session methods, after creating the tables when asked to.

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        """The conversation history, oldest first; the latest ``limit`` items when given."""
        await self._sessionmeta_ready()
        return await super().get_items(limit)

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        """Append ``items`` to the history; the session row may already exist (metadata first)."""
        await self._sessionmeta_ready()
        add_items = super().add_items
        # Writers racing to create a session row can deadlock on InnoDB's locks; the
        # victim's transaction was rolled back whole, so the store's retry policy reruns it.
        await self._sessionmeta_store.db.retrying(lambda: add_items(items))

    async def pop_item(self) -> TResponseInputItem | None:
        """Remove and return the most recent item, or ``None`` when the history is empty."""
        await self._sessionmeta_ready()
        return await super().pop_item()

    async def clear_session(self) -> None:
        """Remove the history and the metadata of this session, in one transaction.

        The SDK deletes the session row; the metadata table's foreign key
        cascades that delete to the metadata.
        """
        await self._sessionmeta_ready()
        await super().clear_session()

    # The proposal's metadata calls, typed by the model.

    async def set_metadata(self, values: ModelT | Mapping[str, Any]) -> None:
        """Write ``values`` (a model's set fields, or a mapping); other keys are left alone.

        Validated before any I/O; creates the session row when missing, so
        metadata can be set before the first message.
        """
        bound = self._bound()
        if self._sessionmeta_tables_pending:
            self._sessionmeta_store.spec.validate_values(values, session_id=bound.session_id)
            await self._sessionmeta_ready()
        await bound.set_metadata(values)

    async def get_metadata(self, keys: Iterable[str] | None = None) -> ModelT:
        """The stored metadata as the model; keys not stored read as their defaults."""
        bound = self._bound()
        if self._sessionmeta_tables_pending:
            self._sessionmeta_store.spec.resolve_keys(keys, session_id=bound.session_id)
            await self._sessionmeta_ready()
        return await bound.get_metadata(keys)

    async def delete_metadata(self, keys: Iterable[str] | None = None) -> None:
        """Delete the named keys, or all of this session's metadata when ``keys`` is ``None``."""
        bound = self._bound()
        if self._sessionmeta_tables_pending:
            self._sessionmeta_store.spec.resolve_keys(keys, session_id=bound.session_id)
            await self._sessionmeta_ready()
        await bound.delete_metadata(keys)

    async def find_sessions_by_metadata(self, key: str, value: Any, limit: int = 100) -> list[str]:
        """Ids of the sessions whose ``key`` equals ``value``, in id order, at most ``limit``."""
        if self._sessionmeta_tables_pending:
            spec = self._sessionmeta_store.spec
            spec.validate_values({spec.field(key).key: value})
            await self._sessionmeta_ready()
        return await self._sessionmeta_store.find_sessions_by_metadata(key, value, limit=limit)
