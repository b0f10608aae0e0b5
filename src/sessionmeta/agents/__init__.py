"""A drop-in for the Agents SDK's ``SQLAlchemySession`` with metadata on the session.

Needs the ``agents`` extra: ``pip install 'sessionmeta[agents]'``.
:class:`MetadataSQLAlchemySession` is the SDK session with metadata, typed by a
model (``metadata_model=ChatMeta``) or, without one, a plain ``dict`` as the
original proposal has it. It follows the SDK session's own life cycle: the SDK
calls ``_ensure_tables()`` before each operation, and the drop-in creates its
tables there, under the SDK's rules (``create_tables=True``, once per engine).
Listed first among the bases, it also adds metadata to any other
``SQLAlchemySession`` subclass::

    class ChatSession(MetadataSQLAlchemySession[ChatMeta], AdvancedSQLAlchemySession): ...
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any, Generic, overload

from typing_extensions import TypeVar

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
from sessionmeta.core.encryption import EncryptionKeys
from sessionmeta.core.expiry import check_ttl
from sessionmeta.core.filters import Condition
from sessionmeta.core.plan import MAX_LIMIT
from sessionmeta.core.spec import SessionMeta, UntypedMeta, check_session_id
from sessionmeta.errors import DatabaseError
from sessionmeta.io.bound import BoundMetadata
from sessionmeta.io.database import shown_url
from sessionmeta.io.lookup import get_or_create_by, new_session_id, plan_lookup
from sessionmeta.io.operations import OnInvalid
from sessionmeta.io.store import MetadataStore

__all__ = ["MetadataSQLAlchemySession"]

# The metadata model; without one, any key and any JSON value (UntypedMeta).
MetaT = TypeVar("MetaT", bound=SessionMeta, default=UntypedMeta)


def _foreign_key_hint(names: TableNames, exc: DatabaseError) -> str:
    sessions_table, messages_table, metadata_table = names
    return (
        f"cannot create {messages_table!r} or {metadata_table!r}: MySQL/MariaDB refused "
        f"a foreign key to {sessions_table}.session_id, whose type is not one a foreign "
        f"key can follow; give {sessions_table}.session_id a VARCHAR type ({exc})"
    )


# What a class overrides when it stores history its own way (encrypted, indexed, ...).
_HISTORY_METHODS = (
    "_serialize_item",
    "_deserialize_item",
    "get_items",
    "add_items",
    "pop_item",
    "clear_session",
)


def _history_is_the_sdks(cls: type) -> bool:
    """Whether ``cls`` stores history exactly as the SDK's own session does."""
    for klass in cls.__mro__:
        if klass is SQLAlchemySession:
            return True
        if klass is not MetadataSQLAlchemySession and any(
            name in vars(klass) for name in _HISTORY_METHODS
        ):
            return False
    return True


class MetadataSQLAlchemySession(SQLAlchemySession, Generic[MetaT]):
    """The Agents SDK's ``SQLAlchemySession``, with metadata on the session.

    Takes the SDK session's arguments plus ``metadata_model`` (a
    :class:`~sessionmeta.SessionMeta` subclass; without it, metadata is a plain
    ``dict`` of JSON values), ``metadata_table``, ``on_invalid`` and ``keys`` (the
    :class:`~sessionmeta.EncryptionKeys` of ``Encrypted()`` fields), and goes into
    ``Runner.run(..., session=session)`` unchanged. ``create_tables=True`` creates
    the sessions, messages and metadata tables on first use, in a form MySQL/MariaDB
    accepts too; tables that exist are left as they are, and creators racing in
    other tasks, engines or processes find them and go on. ``clear_session()``
    removes the session's metadata with its history: the metadata table's foreign
    key cascades the SDK's delete of the session row.
    """

    def __init__(
        self,
        session_id: str,
        *,
        engine: AsyncEngine,
        metadata_model: type[MetaT] | None = None,
        create_tables: bool = False,
        sessions_table: str = "agent_sessions",
        messages_table: str = "agent_messages",
        metadata_table: str = "agent_sessions_metadata",
        session_settings: SessionSettings | dict[str, Any] | None = None,
        ensure_ascii: bool = True,
        on_invalid: OnInvalid = "raise",
        keys: EncryptionKeys | None = None,
        **sdk_arguments: Any,
    ) -> None:
        check_session_id(session_id)
        model: type[Any] = UntypedMeta if metadata_model is None else metadata_model
        names = (sessions_table, messages_table, metadata_table)
        state = engine_state(engine)
        store: MetadataStore[MetaT] = state.store(engine, model, names, on_invalid, keys)
        # ``sdk_arguments`` reach the next class in line: a subclass of the SDK's own.
        super().__init__(
            session_id,
            engine=engine,
            create_tables=create_tables,
            sessions_table=sessions_table,
            messages_table=messages_table,
            session_settings=session_settings,
            ensure_ascii=ensure_ascii,
            **sdk_arguments,
        )
        # Prefixed, so that no attribute of the SDK's, present or future, is shadowed.
        self._sessionmeta_store = store
        self._sessionmeta_state = state
        self._sessionmeta_table_names = names
        self._sessionmeta_untyped = metadata_model is None
        self._sessionmeta_ensure_ascii = ensure_ascii
        # One shared connection (SQLite :memory:): the SDK's writes and ours take turns
        # under one lock, the SDK's own where it made one.
        sdk_lock = getattr(self, "_connection_lock", None)
        shared = store.db.shared_connection_lock(sdk_lock)
        if shared is not None:
            self._connection_lock = shared

    @classmethod
    def from_url(
        cls,
        session_id: str,
        *,
        url: str,
        metadata_model: type[MetaT] | None = None,
        engine_kwargs: dict[str, Any] | None = None,
        session_settings: SessionSettings | dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> MetadataSQLAlchemySession[MetaT]:
        """A session on a new engine for ``url``; ``await session.engine.dispose()`` when done.

        ``kwargs`` are the constructor's (``create_tables``, table names, ...).
        """
        check_session_id(session_id)
        try:
            engine = create_async_engine(url, **(engine_kwargs or {}))
        except Exception as exc:
            raise DatabaseError(f"cannot use database URL {shown_url(url)!r}: {exc}") from exc
        return cls(
            session_id,
            engine=engine,
            metadata_model=metadata_model,
            session_settings=session_settings,
            **kwargs,
        )

    @classmethod
    async def get_or_create_by(
        cls,
        key: str,
        value: Any,
        *,
        engine: AsyncEngine,
        metadata_model: type[MetaT],
        defaults: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> tuple[MetadataSQLAlchemySession[MetaT], bool]:
        """``(session, created)``: the session whose unique ``key`` holds ``value`` (a
        Slack thread's id, say), or a new one storing it and ``defaults``, race-free, as
        :meth:`MetadataStore.get_or_create_by`. A new session's id is
        ``uuid.uuid4().hex``; ``kwargs`` are the constructor's (``create_tables``...)."""
        made = new_session_id()
        session = cls(made, engine=engine, metadata_model=metadata_model, **kwargs)
        store = session._sessionmeta_store
        lookup = plan_lookup(store.spec, key, value, defaults)  # checked before any I/O
        await session._ensure_tables()
        found, created = await get_or_create_by(store.ops, lookup, session_id=lambda: made)
        if found == made:
            return session, created
        return cls(found, engine=engine, metadata_model=metadata_model, **kwargs), created

    def __repr__(self) -> str:
        model = None if self._sessionmeta_untyped else self._sessionmeta_store.spec.name
        url = shown_url(self.engine.url)
        return f"{type(self).__name__}({self.session_id!r}, metadata_model={model}, url={url!r})"

    @property
    def metadata_store(self) -> MetadataStore[MetaT]:
        """The store of every session's metadata on this engine, for queries across sessions."""
        return self._sessionmeta_store

    @property
    def sql_metadata(self) -> MetaData:
        """SQLAlchemy ``MetaData`` of all three tables, e.g. as Alembic's ``target_metadata``."""
        return self._sessionmeta_store.sql_metadata

    async def create_tables(self) -> None:
        """Create whichever of the sessions, messages and metadata tables are missing."""
        await self._sessionmeta_create(again=True)

    async def _ensure_tables(self) -> None:
        """The SDK's hook before each operation: create the tables when asked to, once."""
        # Pinned by tests/test_private_apis.py: the SDK's flag and its table metadata.
        if not self._create_tables:
            return
        await self._sessionmeta_create(again=False)
        sdk_tables = set(self._metadata.tables)
        if sdk_tables <= {table.name for table in self.sql_metadata.sorted_tables}:
            self._create_tables = False
            return
        # A subclass of the SDK's session with tables of its own creates those.
        await super()._ensure_tables()

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

    def _bound(self) -> BoundMetadata[MetaT]:
        # Bound per call: the SDK's session_id is a plain attribute.
        return self._sessionmeta_store.bind(self.session_id)

    # The SDK's compaction (OpenAIResponsesCompactionSession) replaces history through
    # these two hooks. Without them it would clear the session, and the metadata with it.

    async def _get_compaction_snapshot(self, limit: int, **options: Any) -> Any:
        """The SDK's atomic suffix replacement, which it offers only to its own class:
        run by a plain SDK session on the same tables when history is stored as the
        SDK stores it (the drop-in changes nothing of it)."""
        if not _history_is_the_sdks(type(self)):
            return await super()._get_compaction_snapshot(limit, **options)
        await self._ensure_tables()
        sessions_table, messages_table, _ = self._sessionmeta_table_names
        plain = SQLAlchemySession(
            self.session_id,
            engine=self.engine,
            sessions_table=sessions_table,
            messages_table=messages_table,
            ensure_ascii=self._sessionmeta_ensure_ascii,
        )
        return await plain._get_compaction_snapshot(limit, **options)

    async def _atomic_replace_items(self, items: list[TResponseInputItem]) -> bool:
        """Replace the whole history in one transaction, keeping the session and its
        metadata (the compaction's fallback would clear the session, then add)."""
        await self._ensure_tables()
        messages = [await self._serialize_item(item) for item in items]
        _, messages_table, _ = self._sessionmeta_table_names
        return await self._sessionmeta_store.ops.replace_history(
            self.session_id, messages_table, messages
        )

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        """Append ``items`` to the history; the session row may already exist (metadata first)."""
        add_items = super().add_items
        # Writers racing to create a session row can deadlock on InnoDB's locks; the
        # victim's transaction was rolled back whole, so the store's retry policy reruns it.
        await self._sessionmeta_store.db.retrying(lambda: add_items(items))

    # The proposal's metadata calls: typed by the model, or plain dicts without one.

    async def set_metadata(
        self, values: MetaT | Mapping[str, Any], *, ttl: dt.timedelta | None = None
    ) -> None:
        """Write ``values`` (a model's set fields, or a mapping); other keys are left alone.

        Validated before any I/O; creates the session row when missing, so
        metadata can be set before the first message. With ``ttl`` the written keys
        expire that long after the write, on the database's clock.
        """
        bound = self._bound()
        check_ttl(ttl, f"session {bound.session_id!r}")
        if self._create_tables:
            # Bad input loses nothing, not even a table creation: checked first.
            self._sessionmeta_store.spec.validate_values(values, session_id=bound.session_id)
            await self._ensure_tables()
        await bound.set_metadata(values, ttl=ttl)

    @overload
    async def get_metadata(  # type: ignore[overload-overlap]  # the first wins, as meant
        self: MetadataSQLAlchemySession[UntypedMeta], keys: Iterable[str] | None = None
    ) -> dict[str, Any]: ...
    @overload
    async def get_metadata(self, keys: Iterable[str] | None = None) -> MetaT: ...
    async def get_metadata(self, keys: Iterable[str] | None = None) -> Any:
        """The stored metadata: the model (keys not stored read as their defaults), or
        without a model a ``dict`` of the stored keys, and ``None`` for each key asked
        for that is not stored."""
        bound = self._bound()
        wanted = self._sessionmeta_store.spec.resolve_keys(keys, session_id=bound.session_id)
        await self._ensure_tables()
        metadata = await bound.get_metadata(wanted)
        if not self._sessionmeta_untyped:
            return metadata
        stored = dict(metadata.model_extra or {})
        if wanted is None:
            return stored
        return {key: stored.get(key) for key in wanted}

    async def delete_metadata(self, keys: Iterable[str] | None = None) -> None:
        """Delete the named keys, or all of this session's metadata when ``keys`` is ``None``."""
        bound = self._bound()
        wanted = self._sessionmeta_store.spec.resolve_keys(keys, session_id=bound.session_id)
        await self._ensure_tables()
        await bound.delete_metadata(wanted)

    async def find_sessions_by_metadata(
        self, key: str, value: Any, limit: int | None = 100
    ) -> list[str]:
        """Ids of the sessions whose ``key`` equals ``value``, in id order: at most
        ``limit``, or all of them when ``limit`` is ``None``."""
        store = self._sessionmeta_store
        spec = store.spec
        field = spec.field(key)
        if self._create_tables:
            spec.validate_values({field.key: value})
            await self._ensure_tables()
        if limit is not None:
            return await store.find_sessions_by_metadata(field.key, value, limit=limit)
        found: list[str] = []
        cursor: str | None = None
        while True:
            page = await store.find_sessions(
                Condition(field.key, "eq", value), limit=MAX_LIMIT, cursor=cursor
            )
            found.extend(page)
            cursor = page.next_cursor
            if cursor is None:
                return found
