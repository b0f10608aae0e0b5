"""A tenant's scope: which stored rows put a session in it. Pure: no I/O.

A session is *in* the scope when every scope key holds the scope's value, *free*
when it has no metadata at all (a write through the scoped view claims it), and
*out* otherwise. The I/O side decides on rows read in the same statement or
transaction as its action, so a concurrent hand-over is seen or refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from sessionmeta.core.codec import EncodedValue, encode_model
from sessionmeta.core.spec import ModelSpec
from sessionmeta.errors import FilterError, InvalidArgumentError, SessionNotInScopeError

__all__ = ["Scope", "ScopeState"]

ScopeState = Literal["in", "free", "out"]


class Scope:
    """The validated ``key == value`` pairs of one scoped view."""

    def __init__(self, spec: ModelSpec[Any], pairs: Mapping[str, Any]) -> None:
        if not pairs:
            raise InvalidArgumentError("scoped() needs at least one key=value pair")
        for key, value in pairs.items():
            spec.field(key)
            if value is None:
                raise FilterError(f"scope key {key!r}: a scope value cannot be None")
        validated = spec.validate_values(pairs)
        self.spec = spec
        self.rows: list[EncodedValue] = encode_model(spec, validated)
        # Storage key -> value hash: what an in-scope session holds.
        self.hashes: dict[str, str] = {row.key: row.value_hash for row in self.rows}
        self.values: dict[str, Any] = {
            spec.field(name).key: getattr(validated, name) for name in validated.model_fields_set
        }

    def __repr__(self) -> str:
        return repr(self.values)

    def narrowed(self, pairs: Mapping[str, Any]) -> dict[str, Any]:
        """This scope's pairs with ``pairs`` added; refuses a pair that contradicts one."""
        for key, value in pairs.items():
            storage_key = self.spec.field(key).key
            if storage_key in self.values and value != self.values[storage_key]:
                raise SessionNotInScopeError(
                    f"key {storage_key!r}={value!r} lies outside scope {self.values!r}",
                    key=storage_key,
                )
        return {**self.values, **pairs}

    def state(self, rows: Sequence[Sequence[Any]]) -> ScopeState:
        """Where stored ``(key, value, value_hash)`` rows put a session."""
        stored = {row[0]: row[2] for row in rows}
        if all(stored.get(key) == value_hash for key, value_hash in self.hashes.items()):
            return "in"
        return "free" if not rows else "out"

    def refuse(self, session_ids: Iterable[str]) -> SessionNotInScopeError:
        ids = list(session_ids)
        shown = ", ".join(repr(session_id) for session_id in ids)
        return SessionNotInScopeError(
            f"session {shown} is not in scope {self.values!r}",
            session_id=ids[0] if len(ids) == 1 else None,
        )

    def require(self, session_id: str, rows: Sequence[Sequence[Any]]) -> ScopeState:
        """The session's state; :class:`SessionNotInScopeError` when it belongs to another."""
        state = self.state(rows)
        if state == "out":
            raise self.refuse([session_id])
        return state

    def admit(self, session_id: str, rows: Sequence[Sequence[Any]]) -> list[EncodedValue]:
        """The scope rows a write must add to claim the session (none when it is in the
        scope already); :class:`SessionNotInScopeError` when it belongs to another."""
        return list(self.rows) if self.require(session_id, rows) == "free" else []

    def check_write(self, session_id: str, values: Mapping[str, Any]) -> None:
        """Refuse a write that would move the session out of the scope, before any I/O."""
        for key, value in values.items():
            if key in self.values and value != self.values[key]:
                raise SessionNotInScopeError(
                    f"session {session_id!r}: writing {key!r}={value!r} "
                    f"would move it out of scope {self.values!r}",
                    session_id=session_id,
                    key=key,
                )

    def check_change(self, session_id: str, key: str, action: str) -> None:
        """Refuse changing or deleting a scope key through the view."""
        if key in self.values:
            raise SessionNotInScopeError(
                f"session {session_id!r}: {action} {key!r} would move it out "
                f"of scope {self.values!r}",
                session_id=session_id,
                key=key,
            )
