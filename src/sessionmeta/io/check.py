"""Scanning every stored row against a model: which rows a model change would break.

The scan streams the metadata table in primary-key order with keyset batches
(rows after the last (session_id, key) seen, ``ORDER BY session_id, key LIMIT n``):
each batch is one short read, no transaction or cursor stays open, and memory
holds one batch plus a bounded number of examples, whatever the table's size.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from sessionmeta.core.codec import EncodedValue, field_hash, item_hashes, object_text
from sessionmeta.core.sealing import open_row
from sessionmeta.core.spec import ModelSpec, SessionMeta
from sessionmeta.errors import DecryptionError, InvalidArgumentError
from sessionmeta.io.database import Connection
from sessionmeta.io.store import MetadataStore

__all__ = [
    "CheckReport",
    "InvalidValue",
    "KeyStats",
    "SessionCheck",
    "StaleHash",
    "check_store",
    "count_stored_rows",
    "read_session_rows",
    "rehash_store",
    "validate_session_rows",
]

DEFAULT_BATCH_SIZE = 5_000
DEFAULT_MAX_EXAMPLES = 100
# Stands for a failure no single key explains: a model validator rejecting keys together.
WHOLE_MODEL = "*"


@dataclass(frozen=True)
class InvalidValue:
    """A stored value the model would refuse on read."""

    session_id: str
    key: str
    stored_text: str
    reason: str


@dataclass(frozen=True)
class StaleHash:
    """A stored row whose equality hash was made by an older rule: ``find`` misses it
    until ``sessionmeta rehash`` (or :func:`rehash_store`) recomputes it."""

    session_id: str
    key: str


@dataclass
class KeyStats:
    """What the scan saw of one stored key."""

    key: str
    declared: bool
    rows: int = 0
    invalid: int = 0
    # The first few sessions that hold this key, when the model does not declare it.
    example_sessions: list[str] = field(default_factory=list)


@dataclass
class CheckReport:
    """The result of :func:`check_store`; ``ok`` when every stored row would read."""

    model_name: str
    rows: int = 0
    sessions: int = 0
    keys: dict[str, KeyStats] = field(default_factory=dict)
    invalid_total: int = 0
    # At most ``max_examples`` of them: the counts in ``keys`` are complete.
    invalid: list[InvalidValue] = field(default_factory=list)
    stale_total: int = 0
    stale: list[StaleHash] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.invalid_total == 0 and self.stale_total == 0

    @property
    def undeclared(self) -> list[KeyStats]:
        return [stats for stats in self.keys.values() if not stats.declared]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary, as ``sessionmeta check --json`` prints it."""
        return {
            "model": self.model_name,
            "ok": self.ok,
            "rows": self.rows,
            "sessions": self.sessions,
            "invalid_total": self.invalid_total,
            "invalid": [
                {
                    "session_id": item.session_id,
                    "key": item.key,
                    "stored_text": item.stored_text,
                    "reason": item.reason,
                }
                for item in self.invalid
            ],
            "stale_hashes": self.stale_total,
            "stale": [{"session_id": item.session_id, "key": item.key} for item in self.stale],
            "undeclared_keys": {
                stats.key: {"rows": stats.rows, "example_sessions": stats.example_sessions}
                for stats in self.undeclared
            },
            "keys": {
                key: {"declared": stats.declared, "rows": stats.rows, "invalid": stats.invalid}
                for key, stats in sorted(self.keys.items())
            },
        }


class _Scanner:
    """Validates the rows of one session at a time and tallies the outcome."""

    def __init__(self, spec: ModelSpec[Any], max_examples: int) -> None:
        self.spec = spec
        self.max_examples = max_examples
        self.report = CheckReport(spec.name)

    def _stats(self, key: str) -> KeyStats:
        stats = self.report.keys.get(key)
        if stats is None:
            stats = self.report.keys[key] = KeyStats(key, declared=key in self.spec.fields)
        return stats

    def _fail(self, session_id: str, key: str, text: str, reason: str) -> None:
        self.report.invalid_total += 1
        self._stats(key).invalid += 1
        if len(self.report.invalid) < self.max_examples:
            self.report.invalid.append(InvalidValue(session_id, key, text, reason))

    def session(self, session_id: str, rows: list[Sequence[str]]) -> None:
        report = self.report
        report.sessions += 1
        report.rows += len(rows)
        known: list[tuple[str, str]] = []
        for key, value, _ in rows:
            stats = self._stats(key)
            stats.rows += 1
            if stats.declared:
                known.append((key, value))
            elif len(stats.example_sessions) < self.max_examples:
                stats.example_sessions.append(session_id)
        checked = validate_session_rows(self.spec, session_id, known)
        if checked.invalid:
            texts = dict(known)
            for key, reason in checked.invalid.items():
                self._fail(session_id, key, texts.get(key, object_text(known)), reason)
        for row, _ in stale_hashes(self.spec, rows, checked):
            report.stale_total += 1
            if len(report.stale) < self.max_examples:
                report.stale.append(StaleHash(session_id, row.key))


@dataclass(frozen=True)
class SessionCheck:
    """One session's rows validated: the model as a lenient read returns it, and what failed."""

    model: SessionMeta
    # Reason per failing key; WHOLE_MODEL when each key fits alone but not together.
    invalid: dict[str, str]


def stale_hashes(
    spec: ModelSpec[Any], rows: Sequence[Sequence[str]], checked: SessionCheck
) -> list[tuple[EncodedValue, str]]:
    """The session's stored rows whose hash an older rule made: each as the row with
    today's hash (and element hashes), and the hash stored. Values that do not read
    (``checked.invalid``) are left out: there is nothing to hash them by."""
    if WHOLE_MODEL in checked.invalid:
        return []
    stale: list[tuple[EncodedValue, str]] = []
    for key, value, value_hash in rows:
        if not spec.knows(key) or key in checked.invalid:
            continue
        field = spec.field(key)
        # The value as read, so the hash is made from what a write of it would store.
        python_value = spec.value_of(checked.model, field)
        new_hash = field_hash(spec, field, python_value)
        if new_hash != value_hash:
            items = item_hashes(python_value) if field.kind == "collection" else None
            stale.append((EncodedValue(key, value, new_hash, None, items), value_hash))
    return stale


def _reason(exc: ValidationError) -> str:
    return "; ".join(error["msg"] for error in exc.errors())


def validate_session_rows(
    spec: ModelSpec[Any], session_id: str, rows: list[tuple[str, str]]
) -> SessionCheck:
    """Validate one session's stored ``(key, value)`` rows as a read would; undeclared keys
    are ignored. Never raises for a stored value: failures are returned."""
    invalid: dict[str, str] = {}
    known: list[tuple[str, str]] = []
    for key, value in rows:
        if not spec.knows(key):
            continue
        try:
            # Encrypted values are validated as a read sees them: decrypted.
            known.append((key, open_row(spec, session_id, key, value)))
        except DecryptionError as exc:
            invalid[key] = f"cannot decrypt: {exc.reason}"
    model = spec.model
    if not invalid:
        try:
            # The same one-document validation a read does; per key only when it fails.
            return SessionCheck(model.model_validate_json(object_text(known)), {})
        except ValidationError:
            pass
    kept: list[tuple[str, str]] = []
    for key, value in known:
        try:
            model.model_validate_json(object_text([(key, value)]))
        except ValidationError as exc:
            invalid[key] = _reason(exc)
        else:
            kept.append((key, value))
    try:
        return SessionCheck(model.model_validate_json(object_text(kept)), invalid)
    except ValidationError as exc:
        # A model validator refuses the keys together: no single key is to blame.
        return SessionCheck(model(), {**invalid, WHOLE_MODEL: _reason(exc)})


async def read_session_rows(store: MetadataStore[Any], session_id: str) -> list[tuple[str, str]]:
    """Every stored ``(key, value)`` row of one session, declared by the model or not."""
    return sorted(await store.ops.rows(session_id, None))


async def count_stored_rows(store: MetadataStore[Any]) -> int:
    """How many metadata rows the store's table holds (for a progress bar)."""
    ((total,),) = await store.ops.fetch(store.ops.statements.count_rows(), {})
    return int(total)


async def check_store(
    store: MetadataStore[Any],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_examples: int = DEFAULT_MAX_EXAMPLES,
    progress: Callable[[int], None] | None = None,
) -> CheckReport:
    """Read every stored row of ``store`` and check it against ``store.model``.

    Reports the values the model would refuse on read (with session id, key and
    stored text; at most ``max_examples`` listed, all counted), the keys the
    model no longer declares, and the rows per key. Nothing is written.
    ``progress`` is called with the number of rows read so far after each batch.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError(f"batch_size must be a positive integer, not {batch_size!r}")
    if isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples < 0:
        raise InvalidArgumentError(
            f"max_examples must be an integer of 0 or more, not {max_examples!r}"
        )
    scanner = _Scanner(store.spec, max_examples)
    async for session_id, rows in _sessions(store, batch_size, progress):
        scanner.session(session_id, rows)
    return scanner.report


async def _sessions(
    store: MetadataStore[Any], batch_size: int, progress: Callable[[int], None] | None
) -> AsyncIterator[tuple[str, list[Sequence[str]]]]:
    """Every session's stored ``(key, value, hash)`` rows, read in keyset batches."""
    ops = store.ops
    first = ops.statements.scan(batch_size, after=False)
    after = ops.statements.scan(batch_size, after=True)
    pending_session: str | None = None
    pending: list[Sequence[str]] = []
    read = 0
    cursor: tuple[str, str] | None = None
    while True:
        # Each batch is its own short read: no transaction stays open across the scan.
        if cursor is None:
            rows = await ops.fetch(first, {})
        else:
            rows = await ops.fetch(after, {"after_session": cursor[0], "after_key": cursor[1]})
        for session_id, key, value, value_hash in rows:
            if session_id != pending_session:
                if pending_session is not None:
                    yield pending_session, pending
                pending_session, pending = session_id, []
            pending.append((key, value, value_hash))
        read += len(rows)
        if progress is not None:
            progress(read)
        if len(rows) < batch_size:
            break
        last = rows[-1]
        cursor = (last[0], last[1])
    # The last session's rows may have spanned batches: it is handed on only now, whole.
    if pending_session is not None:
        yield pending_session, pending


async def rehash_store(
    store: MetadataStore[Any],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Recompute every stored equality hash that an older rule made; how many changed.

    Each fix is a short transaction of its own, guarded by the row's text and old
    hash: a row rewritten meanwhile (with a hash by today's rule) is left alone.
    Values that no longer read are skipped (``check`` reports them). Lists and sets
    get their elements' hashes (which serve ``contains``) recomputed with them.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError(f"batch_size must be a positive integer, not {batch_size!r}")
    spec = store.spec
    fixed = 0
    async for session_id, rows in _sessions(store, batch_size, progress):
        known = [(key, value) for key, value, _ in rows]
        checked = validate_session_rows(spec, session_id, known)
        for row, old_hash in stale_hashes(spec, rows, checked):
            fixed += await _rehash_row(store, session_id, row, old_hash)
    return fixed


async def _rehash_row(
    store: MetadataStore[Any], session_id: str, row: EncodedValue, old_hash: str
) -> int:
    ops = store.ops
    params = {
        "session_id": session_id,
        "key": row.key,
        "value": row.value,
        "old_hash": old_hash,
        "new_hash": row.value_hash,
    }

    async def fix(db: Connection) -> int:
        changed = await db.execute(ops.statements.rehash(), params)
        if changed and row.items is not None:
            await db.execute_all(ops.items_batch(session_id, [row]))
        return changed

    return await ops.db.run(fix, session_id=session_id, transaction=True)
