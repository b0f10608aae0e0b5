"""The statements of ``sweep``: delete expired value rows and their items, a batch at a time.

Every delete repeats the condition ``expires_at <= now``: a key rewritten with a
new expiry (or none) between the choice of a batch and its delete is never taken.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, delete, exists, func, select, tuple_
from sqlalchemy.sql import Executable

from sessionmeta.sql.statements import Batch, CompiledStatement, Statements
from sessionmeta.sql.statements import _padded as padded

__all__ = ["delete_chosen", "expired_batch", "sweep_in_one"]


def _expired(statements: Statements, table: Any) -> Any:
    return table.c.expires_at <= statements.spelling.now()


def _chosen(statements: Statements, locked: bool) -> Any:
    """The (session, key) of at most ``limit`` expired rows, the first to expire first,
    served by the expiry index."""
    values = statements.tables.values
    query = (
        select(values.c.session_id, values.c.key)
        .where(_expired(statements, values))
        .order_by(values.c.expires_at)
        .limit(bindparam("limit"))
    )
    # Rows a writer holds are left for the next batch, not waited for.
    return query.with_for_update(skip_locked=True) if locked else query


def sweep_in_one(statements: Statements) -> CompiledStatement:
    """Where one statement deletes from two tables (PostgreSQL): a batch of expired rows
    and their items, giving the number of rows deleted."""
    values, items = statements.tables.values, statements.tables.items

    def build() -> Executable:
        gone = (
            delete(values)
            .where(
                _expired(statements, values),
                tuple_(values.c.session_id, values.c.key).in_(_chosen(statements, True)),
            )
            .returning(values.c.session_id, values.c.key, values.c.value_hash)
            .cte("gone")
        )
        gone_items = delete(items).where(
            items.c.session_id == gone.c.session_id,
            items.c.key == gone.c.key,
            items.c.value_hash == gone.c.value_hash,
        )
        return select(func.count()).select_from(gone).add_cte(gone_items.cte("gone_items"))

    return statements.compiled("sweep_in_one", 0, build)


def expired_batch(statements: Statements) -> CompiledStatement:
    """The (session, key) of a batch of expired rows, not locked: :func:`delete_chosen`
    locks their sessions first, then deletes the rows that are still expired."""
    return statements.compiled("sweep_expired", 0, lambda: _chosen(statements, False))


def delete_chosen(statements: Statements, chosen: list[tuple[str, str]]) -> Batch:
    """Delete the rows ``chosen`` (session, key) that are still expired, then the items no
    value row holds any more: values, then items, the order a write takes them in.

    Where deletes lock their sessions first (``Spelling.delete_locks_sessions``), the
    batch starts by locking the chosen rows' sessions, in id order, as ``delete_many``
    does: a concurrent delete of one of those session rows, whose cascade takes the
    items before the values, then queues instead of deadlocking.
    """
    values, items = statements.tables.values, statements.tables.items
    spelling = statements.spelling
    pairs = padded(sorted(chosen))
    ids = sorted({session_id for session_id, _ in pairs})
    ids = padded(ids, ids[-1])
    shape = (len(ids), len(pairs))

    def rows_of(table: Any) -> Any:
        # The session ids first: a range of the primary key, which each pair then narrows.
        listed = [tuple_(bindparam(f"ws{n}"), bindparam(f"wk{n}")) for n in range(len(pairs))]
        return (
            spelling.id_in(table.c.session_id, len(ids)),
            tuple_(table.c.session_id, table.c.key).in_(listed),
        )

    def values_delete() -> Executable:
        return delete(values).where(_expired(statements, values), *rows_of(values))

    def items_delete() -> Executable:
        current = values.alias("current")
        held = exists().where(
            # Held to the listed sessions in its own right, so it routes like the rest.
            spelling.id_in(current.c.session_id, len(ids)),
            current.c.session_id == items.c.session_id,
            current.c.key == items.c.key,
            current.c.value_hash == items.c.value_hash,
        )
        return delete(items).where(*rows_of(items), ~held)

    params: dict[str, Any] = spelling.id_params(ids)
    for n, (session_id, key) in enumerate(pairs):
        params[f"ws{n}"], params[f"wk{n}"] = session_id, key
    batch: Batch = []
    if spelling.delete_locks_sessions:
        batch.append((statements.lock_sessions(len(ids)), spelling.id_params(ids)))
    batch.append((statements.compiled(f"sweep_values:{shape}", 0, values_delete), params))
    batch.append((statements.compiled(f"sweep_items:{shape}", 0, items_delete), params))
    return batch
