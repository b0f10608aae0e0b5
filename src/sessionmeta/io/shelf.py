"""A short-lived shelf of idle checked-out connections, one per engine and event loop.

The pool's checkout and check-in cost a lean read about a third of its time. When
a unit of work on the lean path ends cleanly (the connection valid, no transaction
open), its connection may wait here, still checked out, for the next unit of work
on the same event loop, instead of going back to the pool. Where it would change
what the application sees, nothing is shelved (:func:`shelf_for`):

* a pool that hands out no connections of its own, or no more than one
  (``NullPool``, ``StaticPool``, ``SingletonThreadPool``, ``pool_size`` and
  ``max_overflow`` adding up to less than two);
* a listener on the pool's ``checkout``, ``checkin`` or ``reset`` events other than
  the store's own: an application's listener sees every unit of work.

And the shelf stays small and short-lived:

* a connection unused for :data:`LINGER_S` goes back to the pool, so an idle
  application holds nothing extra, and the pool's ``pool_pre_ping`` and
  ``pool_recycle`` apply at the next real checkout;
* a connection is really checked in at the latest :data:`CIRCULATION_S` after
  its real checkout;
* at most :data:`MOST_SHELVED` connections per engine and loop (one on a pool of
  two or three), and one is shelved only while the pool still has a connection,
  or room for one, for anyone else: a waiting task never waits for the shelf;
* ``engine.dispose()`` returns the shelved connections to their old pool and
  closes them with it; an event loop's shutdown (``asyncio.run``, anything that
  calls ``loop.shutdown_asyncgens()``) returns its shelf's connections to the pool.

A shelved connection the driver already knows to be closed (the server killed it,
or restarted) is dropped before use, as ``pool_pre_ping`` would drop it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import AsyncGenerator, Collection, Sequence
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import Pool, PoolProxiedConnection, QueuePool
from sqlalchemy.util import greenlet_spawn

__all__ = ["CIRCULATION_S", "LINGER_S", "MOST_SHELVED", "Shelf", "return_idle", "shelf_for"]

logger = logging.getLogger("sessionmeta")

# Long enough to carry a connection across the gap between an application's awaits
# on the store (a handler's get then set, an agent turn's reads and writes, a
# loop over sessions), short enough that an idle application gives its connections
# back before anyone else could notice them gone.
LINGER_S = 0.02
# How long a connection may circulate between units of work without a real check-in:
# pool_recycle and the pool's invalidation of older connections apply at least this often.
CIRCULATION_S = 1.0
MOST_SHELVED = 2

# The pool events whose listeners expect to see every unit of work.
_WATCHED_EVENTS = ("checkout", "checkin", "reset")
_SHELVES = "_sessionmeta_shelves"
_GUARD = threading.Lock()


class Shelf:
    """Idle connections of one pool, checked out and held for the next unit of work
    on one event loop."""

    def __init__(self, shelves: _Shelves, loop: asyncio.AbstractEventLoop, pool: Pool) -> None:
        self.shelves = shelves
        self.loop = loop
        self.pool = pool
        # (connection, loop time of its real checkout, loop time of its last use),
        # oldest use first.
        self.held: list[tuple[PoolProxiedConnection, float, float]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._returning: set[asyncio.Task[None]] = set()
        self._guarded = True
        self._guard = self._until_the_loop_ends()
        _start(self._guard)

    def take(self) -> tuple[PoolProxiedConnection, float] | None:
        """The most recently used shelved connection, and when it was really checked out."""
        if not self.held:
            return None
        pooled, since, _ = self.held.pop()
        return pooled, since

    def now(self) -> float:
        return self.loop.time()

    def keep(self, pooled: PoolProxiedConnection, since: float) -> bool:
        """Shelve ``pooled`` (idle, valid, checked out at loop time ``since``) if the
        rules allow; ``False``: check it in."""
        pool = self.pool
        if pool is not self.shelves.engine.pool or len(self.held) >= self.shelves.most:
            return False
        if not self._guarded:
            # The loop's shutdown has returned the shelf already (a call made by another
            # async generator's cleanup): nothing would return this one.
            return False
        now = self.loop.time()
        if now - since > CIRCULATION_S or not _room_left(pool, self.shelves.capacity):
            return False
        self.held.append((pooled, since, now))
        if self._timer is None:
            self._timer = self.loop.call_at(now + LINGER_S, self._expire)
        return True

    def empty_out(self) -> list[PoolProxiedConnection]:
        """Everything on the shelf, taken off it."""
        held, self.held = self.held, []
        if self._timer is not None:
            # A pending timer would keep the shelf, and its engine, alive.
            self._timer.cancel()
            self._timer = None
        return [pooled for pooled, _, _ in held]

    def _expire(self) -> None:
        # One timer per shelf, re-armed from the oldest use still shelved: a call
        # costs a list append, not a timer.
        self._timer = None
        if not self.held:
            return
        deadline = self.held[0][2] + LINGER_S
        if deadline > self.loop.time():
            self._timer = self.loop.call_at(deadline, self._expire)
            return
        task = self.loop.create_task(self._return_expired())
        self._returning.add(task)
        task.add_done_callback(self._returning.discard)

    async def _return_expired(self) -> None:
        # The connections leave the shelf only now: a task cancelled before it ran
        # leaves them for the loop's shutdown to return.
        cutoff = self.loop.time() - LINGER_S
        expired: list[PoolProxiedConnection] = []
        while self.held and self.held[0][2] <= cutoff:
            expired.append(self.held.pop(0)[0])
        if self.held and self._timer is None:
            self._timer = self.loop.call_at(self.held[0][2] + LINGER_S, self._expire)
        await greenlet_spawn(return_idle, expired)

    async def _until_the_loop_ends(self) -> AsyncGenerator[None, None]:
        # Closed by the loop's shutdown_asyncgens(), while it can still run the
        # check-in: connections are never left checked out of the pool by a finished loop.
        try:
            yield
        finally:
            self._guarded = False
            left = self.empty_out()
            if left:
                await greenlet_spawn(return_idle, left)

    def close_guard(self) -> None:
        """End the loop-shutdown guard of an emptied shelf (its loop closed without
        shutting down its async generators)."""
        closing = self._guard.aclose()
        with contextlib.suppress(StopIteration, RuntimeError):
            closing.send(None)
        closing.close()


def _start(guard: AsyncGenerator[None, None]) -> None:
    # Run to its yield on the running loop: the loop's async-generator hooks take note
    # of it, and its shutdown closes it.
    step = guard.asend(None)
    try:
        step.send(None)
    except StopIteration:
        return
    raise RuntimeError("the shelf's guard did not stop at its yield")  # pragma: no cover


def _room_left(pool: Pool, capacity: int | None) -> bool:
    """Whether, counting the connection about to be shelved as checked out, the pool
    still has a connection or room for one for anyone else."""
    return capacity is None or (isinstance(pool, QueuePool) and pool.checkedout() < capacity)


class _Shelves:
    """One engine's shelves, one per event loop."""

    def __init__(self, engine: Engine, capacity: int | None, most: int) -> None:
        self.engine = engine
        self.capacity = capacity
        self.most = most
        self.pid = os.getpid()
        self.by_loop: dict[asyncio.AbstractEventLoop, Shelf] = {}
        self.lock = threading.Lock()

    async def open(self, loop: asyncio.AbstractEventLoop, pool: Pool) -> Shelf:
        """The shelf of ``loop`` for ``pool``; shelves of closed loops are emptied."""
        with self.lock:
            closed = [other for other in self.by_loop.values() if other.loop.is_closed()]
            for other in closed:
                del self.by_loop[other.loop]
            found = self.by_loop.get(loop)
            shelf = found if found is not None else Shelf(self, loop, pool)
            self.by_loop[loop] = shelf
            # The engine's pool was replaced without dispose(): what the old one lent
            # goes back to it.
            previous = shelf.empty_out() if shelf.pool is not pool else []
            shelf.pool = pool
        if previous:
            await greenlet_spawn(return_idle, previous)
        for stale in closed:
            left = stale.empty_out()
            if left:
                # Returned as the pool would hold them had they not been shelved; say so.
                logger.warning(
                    "%d connection(s) were left checked out when their event loop closed "
                    "without shutting down its async generators; returned to the pool",
                    len(left),
                )
                await greenlet_spawn(return_idle, left)
            stale.close_guard()
        return shelf

    def disposed(self, engine: Engine) -> None:
        # engine_disposed, inside AsyncEngine.dispose()'s greenlet: every connection
        # shelved from the old pool goes back to it, and if that pool was disposed
        # with its connections closed (dispose(close=True)) they are closed with it.
        # A forked child leaves its parent's connections alone, as dispose(close=False).
        if os.getpid() != self.pid:
            with self.lock:
                for shelf in self.by_loop.values():
                    shelf.held = []
            return
        old: dict[int, tuple[Pool, list[PoolProxiedConnection]]] = {}
        with self.lock:
            for shelf in self.by_loop.values():
                if shelf.pool is not engine.pool:
                    old.setdefault(id(shelf.pool), (shelf.pool, []))[1].extend(shelf.empty_out())
        for pool, left in old.values():
            # QueuePool.dispose() forgets the connections checked out of it: nothing
            # counts as checked out after dispose(close=True), ours included.
            closing = isinstance(pool, QueuePool) and pool.checkedout() <= 0
            return_idle(left)
            if closing:
                pool.dispose()


def return_idle(connections: Sequence[PoolProxiedConnection]) -> None:
    """Check idle connections (no transaction open) back in, without the pool's
    rollback; in a greenlet, as the pool may close one."""
    for pooled in connections:
        # Pinned by tests/test_private_apis.py: the one private SQLAlchemy call.
        close_special = getattr(pooled, "_close_special", None)
        if pooled.is_valid and close_special is not None:
            close_special(transaction_reset=True)
        else:
            pooled.close()


def _capacity(pool: Pool) -> tuple[bool, int | None]:
    """Whether ``pool`` hands out connections of its own (a QueuePool), and how many at
    most (``None``: no limit)."""
    if not isinstance(pool, QueuePool):
        return False, 0
    # Pinned by tests/test_private_apis.py; -1 is no limit.
    overflow = getattr(pool, "_max_overflow", None)
    if not isinstance(overflow, int):
        return False, 0
    if overflow < 0:
        return True, None
    return True, pool.size() + overflow


def _watched(pool: Pool, ours: Collection[Any]) -> bool:
    """Whether anyone but the store listens to the pool's checkouts, check-ins or resets."""
    dispatch = pool.dispatch
    return any(
        listener not in ours for name in _WATCHED_EVENTS for listener in getattr(dispatch, name)
    )


async def shelf_for(engine: AsyncEngine, ours: Collection[Any]) -> Shelf | None:
    """The running loop's shelf for ``engine``, or ``None`` where shelving would change
    what the application sees. ``ours``: the store's own pool listeners."""
    sync_engine = engine.sync_engine
    pool = sync_engine.pool
    shelves: _Shelves | None = sync_engine.__dict__.get(_SHELVES)
    if shelves is None:
        shelves = _install(sync_engine)
        if shelves is None:
            return None
    if not shelves.most or _watched(pool, ours):
        return None
    loop = asyncio.get_running_loop()
    shelf = shelves.by_loop.get(loop)
    if shelf is None or shelf.pool is not pool:
        shelf = await shelves.open(loop, pool)
    return shelf


def _install(sync_engine: Engine) -> _Shelves | None:
    with _GUARD:
        shelves: _Shelves | None = sync_engine.__dict__.get(_SHELVES)
        if shelves is not None:
            return shelves
        queued, capacity = _capacity(sync_engine.pool)
        most = 0
        if queued and (capacity is None or capacity >= 2):
            most = MOST_SHELVED if capacity is None else min(MOST_SHELVED, capacity // 2)
        shelves = _Shelves(sync_engine, capacity, most)
        if most:
            # Engine.dispose() dispatches engine_disposed whatever the engine's
            # _has_events flag says; listening sets the flag, and with it every
            # Connection on the engine looks for listeners of its other events
            # (about 20 us more per engine.connect() use). Pinned by
            # tests/test_private_apis.py.
            had_events = sync_engine._has_events
            event.listen(sync_engine, "engine_disposed", shelves.disposed)
            sync_engine._has_events = had_events
        setattr(sync_engine, _SHELVES, shelves)
        return shelves
