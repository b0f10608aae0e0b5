"""Key rotation: re-encrypting stored values under the current key, in bounded batches.

The metadata table is read in primary-key order with keyset batches (as ``check``
reads it: no transaction or cursor stays open). For each batch the rows of encrypted
fields that need it are rewritten in one short transaction: made with another key id,
hashed under another index key, or stored as plaintext before the field was declared
``Encrypted()``. Each rewrite is conditioned on the text read (``Statements.reseal``),
so a value written meanwhile, already under the current key, is never overwritten with
what the batch read. Reads keep working throughout: every key id in the store's
``EncryptionKeys`` decrypts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from sessionmeta.core.codec import equality_form
from sessionmeta.core.encryption import EncryptionKeys, parse_envelope
from sessionmeta.core.spec import ModelSpec
from sessionmeta.errors import DecryptionError, InvalidArgumentError
from sessionmeta.io.database import Connection
from sessionmeta.io.operations import Operations
from sessionmeta.sql.statements import Batch

__all__ = ["DEFAULT_REKEY_BATCH_SIZE", "RekeyReport", "UnreadableValue", "rekey_store"]

DEFAULT_REKEY_BATCH_SIZE = 500
DEFAULT_MAX_EXAMPLES = 100


@dataclass(frozen=True)
class UnreadableValue:
    """A stored value of an encrypted field that rekey could not rewrite, and why."""

    session_id: str
    key: str
    reason: str


@dataclass
class RekeyReport:
    """What :meth:`MetadataStore.rekey` did: rows read, rows rewritten, values it could not
    read (at most ``max_examples`` listed, all counted); ``ok`` when none."""

    rows: int = 0
    rewritten: int = 0
    unreadable_total: int = 0
    unreadable: list[UnreadableValue] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.unreadable_total == 0


@dataclass(frozen=True)
class _Reseal:
    session_id: str
    key: str
    old_value: str
    new_value: str
    new_hash: str
    was_plaintext: bool


def _planned(
    spec: ModelSpec[Any], keys: EncryptionKeys, session_id: str, key: str, text: str, old_hash: str
) -> _Reseal | None:
    """The rewrite one stored row needs under the current keys, or ``None``."""
    envelope = parse_envelope(text)
    plain = text if envelope is None else keys.decrypt(session_id, key, text)
    try:
        value = spec.fields[key].adapter.validate_json(plain)
    except ValidationError as exc:
        reason = "; ".join(error["msg"] for error in exc.errors())
        raise DecryptionError(
            session_id,
            key,
            None if envelope is None else envelope.key_id,
            f"the value does not fit the model ({reason}); `sessionmeta check` shows it",
        ) from None
    new_hash = keys.blind_index(key, equality_form(value))
    current = envelope is not None and envelope.key_id == keys.current
    if current and new_hash == old_hash:
        return None
    new_value = text if current else keys.encrypt(session_id, key, plain)
    return _Reseal(session_id, key, text, new_value, new_hash, envelope is None)


async def rekey_store(
    ops: Operations[Any],
    *,
    batch_size: int = DEFAULT_REKEY_BATCH_SIZE,
    max_examples: int = DEFAULT_MAX_EXAMPLES,
    progress: Callable[[int], None] | None = None,
) -> RekeyReport:
    """Re-encrypt the store's encrypted values under the current key (and rehash them
    under the current index key); see :meth:`MetadataStore.rekey`."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError(f"batch_size must be a positive integer, not {batch_size!r}")
    spec = ops.spec
    encrypted = set(spec.encrypted)
    if not encrypted:
        raise InvalidArgumentError(f"{spec.name} declares no Encrypted() field: nothing to rekey")
    keys = spec.require_keys(spec.fields[min(encrypted)])
    report = RekeyReport()
    statements = ops.statements
    first = statements.scan(batch_size, after=False)
    after = statements.scan(batch_size, after=True)
    cursor: tuple[str, str] | None = None
    while True:
        # Each batch is its own short read, and its rewrites their own short transaction.
        if cursor is None:
            rows = await ops.fetch(first, {})
        else:
            rows = await ops.fetch(after, {"after_session": cursor[0], "after_key": cursor[1]})
        report.rows += len(rows)
        reseals: list[_Reseal] = []
        for session_id, key, text, old_hash in rows:
            if key not in encrypted:
                continue
            try:
                planned = _planned(spec, keys, session_id, key, text, old_hash)
            except DecryptionError as exc:
                report.unreadable_total += 1
                if len(report.unreadable) < max_examples:
                    report.unreadable.append(UnreadableValue(session_id, key, exc.reason))
                continue
            if planned is not None:
                reseals.append(planned)
        if reseals:
            report.rewritten += await _rewrite(ops, reseals)
        if progress is not None:
            progress(report.rows)
        if len(rows) < batch_size:
            return report
        last = rows[-1]
        cursor = (last[0], last[1])


async def _rewrite(ops: Operations[Any], reseals: Sequence[_Reseal]) -> int:
    statements = ops.statements
    reseal = statements.reseal()

    async def work(db: Connection) -> int:
        changed = 0
        for row in reseals:
            changed += await db.execute(
                reseal,
                {
                    "session_id": row.session_id,
                    "key": row.key,
                    "old_value": row.old_value,
                    "new_value": row.new_value,
                    "new_hash": row.new_hash,
                },
            )
            if row.was_plaintext:
                # A list stored in plaintext had item rows (element hashes): an encrypted
                # field keeps none, whatever was written since.
                batch: Batch = [
                    (statements.delete_items(1), {"session_id": row.session_id, "key0": row.key})
                ]
                await db.execute_all(batch)
        return changed

    return await ops.db.run(work, transaction=True)
