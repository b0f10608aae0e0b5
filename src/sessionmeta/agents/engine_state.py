"""What the Agents SDK drop-in keeps per engine, for sessions made one per request.

No I/O here and no import of the SDK: the shared store, which tables were
created, and the lock that serializes creating them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from sessionmeta.core.encryption import EncryptionKeys
from sessionmeta.core.spec import ModelT
from sessionmeta.io.operations import OnInvalid
from sessionmeta.io.store import MetadataStore
from sessionmeta.sql.schema import add_messages_table

__all__ = ["EngineState", "TableNames", "engine_state"]

TableNames = tuple[str, str, str]  # sessions, messages, metadata

_STATE_ATTRIBUTE = "_sessionmeta_agents_state"
_guard = threading.Lock()


@dataclass
class EngineState:
    """Shared by every drop-in session on one engine."""

    stores: dict[tuple[Any, ...], MetadataStore[Any]] = field(default_factory=dict)
    created: set[TableNames] = field(default_factory=set)
    # Concurrent CREATE TABLE of one table fails on PostgreSQL. A threading lock,
    # as the SDK's, also serializes sessions driven from different event loops.
    create_lock: threading.Lock = field(default_factory=threading.Lock)

    def store(
        self,
        engine: AsyncEngine,
        model: type[ModelT],
        names: TableNames,
        on_invalid: OnInvalid,
        keys: EncryptionKeys | None = None,
    ) -> MetadataStore[ModelT]:
        """One store per model, tables and keys: it keeps its compiled statements across
        sessions (equal keys, made anew per request, share one)."""
        key = (model, *names, on_invalid, keys)
        with _guard:
            store = self.stores.get(key)
            if store is None:
                sessions_table, messages_table, metadata_table = names
                store = MetadataStore(
                    model,
                    engine,
                    sessions_table=sessions_table,
                    metadata_table=metadata_table,
                    on_invalid=on_invalid,
                    keys=keys,
                )
                # The store's create_tables() then creates the SDK's messages table too.
                add_messages_table(store.tables, messages_table)
                self.stores[key] = store
            return store


def engine_state(engine: AsyncEngine) -> EngineState:
    """The state of ``engine``, kept on the engine so that it goes away with it.

    (A module-level map keyed by engine would keep every engine alive: the
    stores it holds refer to their engine.)
    """
    sync_engine = engine.sync_engine
    with _guard:
        state: EngineState | None = sync_engine.__dict__.get(_STATE_ATTRIBUTE)
        if state is None:
            state = EngineState()
            setattr(sync_engine, _STATE_ATTRIBUTE, state)
        return state
