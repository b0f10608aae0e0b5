"""Deleting expired keys: ``store.sweep()``, a bounded batch per short transaction."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from sessionmeta.errors import InvalidArgumentError
from sessionmeta.io.database import Connection
from sessionmeta.io.operations import Operations
from sessionmeta.sql.sweep import delete_chosen, expired_batch, sweep_in_one

__all__ = ["SweepResult", "sweep"]


@dataclass(frozen=True)
class SweepResult:
    """What one :meth:`MetadataStore.sweep` deleted."""

    # Expired value rows deleted (their items went with them).
    rows: int
    # Batches run, each its own transaction.
    batches: int


def _check(batch_size: Any, max_batches: Any, pause: Any) -> None:
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, int)
        or not 1 <= batch_size <= 10_000
    ):
        raise InvalidArgumentError(
            f"sweep: batch_size must be an int from 1 to 10000, not {batch_size!r}"
        )
    if max_batches is not None and (
        isinstance(max_batches, bool) or not isinstance(max_batches, int) or max_batches < 1
    ):
        raise InvalidArgumentError(
            f"sweep: max_batches must be a positive int or None, not {max_batches!r}"
        )
    if isinstance(pause, bool) or not isinstance(pause, (int, float)) or not 0 <= pause <= 60:
        raise InvalidArgumentError(
            f"sweep: pause must be a number of seconds from 0 to 60, not {pause!r}"
        )


async def sweep(
    ops: Operations[Any], *, batch_size: int, max_batches: int | None, pause: float
) -> SweepResult:
    """Delete expired value rows and their items until none is left (or ``max_batches``)."""
    _check(batch_size, max_batches, pause)
    await ops.ensure_tables()
    statements = ops.statements
    params = {"limit": batch_size}

    async def one_batch(db: Connection) -> tuple[int, bool]:
        """(rows deleted, whether any expired row was found)."""
        if statements.spelling.deletes_items_in_statement:
            ((deleted,),) = await db.fetch(sweep_in_one(statements), params)
            return int(deleted), int(deleted) > 0
        chosen = [
            (session_id, key)
            for session_id, key in await db.fetch(expired_batch(statements), params)
        ]
        if not chosen:
            return 0, False
        *locks, values, items = delete_chosen(statements, chosen)
        for lock in locks:
            await db.fetch(*lock)
        deleted = await db.execute(*values)
        await db.execute(*items)
        return deleted, True

    rows = batches = 0
    while max_batches is None or batches < max_batches:
        deleted, found = await ops.db.run(one_batch, transaction=True)
        if not found:
            break
        batches += 1
        rows += deleted
        if pause:
            await asyncio.sleep(pause)
    return SweepResult(rows, batches)
