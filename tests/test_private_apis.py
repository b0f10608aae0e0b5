"""The few SQLAlchemy names the database seam uses that are not documented API.

Each is pinned here, so an upgrade that changes one fails loudly instead of
silently costing speed or observability.
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import QueuePool, _ConnectionFairy
from sqlalchemy.util import greenlet_spawn

from sessionmeta.io.database import _EXECUTION_EVENTS


def test_connection_fairy_can_be_returned_without_its_reset() -> None:
    # database._check_in skips the pool's rollback-on-return after a finished transaction.
    close_special = _ConnectionFairy._close_special
    assert "transaction_reset" in inspect.signature(close_special).parameters


def test_greenlet_spawn_runs_sync_pool_calls() -> None:
    assert inspect.iscoroutinefunction(greenlet_spawn)


async def test_engine_dispatch_tells_whether_anyone_listens(tmp_path: Path) -> None:
    # database.Database._observed: a listener on any of these events turns the lean path off.
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'x.sqlite3'}")
    try:
        dispatch = engine.sync_engine.dispatch
        for name in _EXECUTION_EVENTS:
            assert not getattr(dispatch, name), name

        def listener(*args: object, **kwargs: object) -> None:
            pass

        for name in _EXECUTION_EVENTS:
            event.listen(engine.sync_engine, name, listener)
            assert getattr(dispatch, name), name
            event.remove(engine.sync_engine, name, listener)
            assert not getattr(dispatch, name), name
        # Listeners on the Engine class reach every engine's dispatch too.
        event.listen(Engine, "before_cursor_execute", listener)
        try:
            assert engine.sync_engine.dispatch.before_cursor_execute
        finally:
            event.remove(Engine, "before_cursor_execute", listener)
        assert isinstance(engine.sync_engine.logger, (logging.Logger, logging.LoggerAdapter))
    finally:
        await engine.dispose()


async def test_queue_pool_tells_its_overflow_limit(tmp_path: Path) -> None:
    # io.shelf reads a QueuePool's limit (pool_size + max_overflow, -1 for none): the
    # shelf is off on a pool of fewer than two connections.
    url = f"sqlite+aiosqlite:///{tmp_path / 'x.sqlite3'}"
    for overflow in (0, 3, -1):
        engine = create_async_engine(url, pool_size=2, max_overflow=overflow)
        try:
            pool = engine.sync_engine.pool
            assert isinstance(pool, QueuePool)
            assert pool._max_overflow == overflow
            assert pool.size() == 2
        finally:
            await engine.dispose()


def test_aiomysql_connections_keep_their_stream_reader() -> None:
    # _MySQL.looks_open: a KILL or a shutdown shows as the reader at EOF.
    import aiomysql

    source = inspect.getsource(aiomysql.Connection)
    assert "self._reader" in source and "self._writer" in source


async def test_engine_disposed_fires_whatever_the_has_events_flag_says(tmp_path: Path) -> None:
    # io.shelf listens to engine_disposed and puts the engine's _has_events back as it
    # was, so that other users' connections do not pay for looking up listeners.
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'x.sqlite3'}")
    sync_engine = engine.sync_engine
    disposed: list[object] = []
    event.listen(sync_engine, "engine_disposed", disposed.append)
    assert sync_engine._has_events is True
    sync_engine._has_events = False
    await engine.dispose()
    assert disposed == [sync_engine]
