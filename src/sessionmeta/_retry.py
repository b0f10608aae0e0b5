"""A bounded retry of operations the database aborted only because of a concurrent one.

A deadlock (PostgreSQL, MySQL/MariaDB) or a busy database file (SQLite) rolls the
whole transaction back, so running it again from the start is safe. Each attempt
already waits for locks as long as the database allows (SQLite's busy timeout,
5 s unless the engine's ``connect_args={"timeout": ...}`` says otherwise); after
:data:`RETRY_ATTEMPTS` attempts the last error reaches the caller as
:class:`~sessionmeta.DatabaseError`.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ._driver import TransientError

__all__ = ["RETRY_ATTEMPTS", "retrying"]

T = TypeVar("T")

RETRY_ATTEMPTS = 8
_FIRST_PAUSE_S = 0.005
_MAX_PAUSE_S = 0.25


async def retrying(operation: Callable[[], Awaitable[T]]) -> T:
    """Run ``operation``, again on a transient error: at most :data:`RETRY_ATTEMPTS` times."""
    for attempt in range(1, RETRY_ATTEMPTS + 1):
        try:
            return await operation()
        except TransientError:
            if attempt == RETRY_ATTEMPTS:
                raise
            # Full jitter: writers that collided once should not collide again in step.
            await asyncio.sleep(random.uniform(0, min(_MAX_PAUSE_S, _FIRST_PAUSE_S * 2**attempt)))
    raise AssertionError("unreachable")  # pragma: no cover
