"""Find or create the one session holding a unique value: ``get_or_create_by``.

Race-free without a lock of its own: a lookup that finds no holder writes a new
session with the value, and the claims table's primary key lets one such write
win (``io.claims``); the others are refused inside their transaction, leave
nothing behind, and return the winner.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sessionmeta.core.claims import Claim, claims_of, hashes_of
from sessionmeta.core.codec import EncodedValue, encode_model
from sessionmeta.core.scope import Scope
from sessionmeta.core.spec import ModelSpec, ModelT, check_session_id
from sessionmeta.errors import ConcurrencyError, InvalidArgumentError, UniqueValueError
from sessionmeta.io.atomic import write_in_scope
from sessionmeta.io.claims import ATTEMPTS
from sessionmeta.io.operations import Operations

__all__ = ["Lookup", "NewSessionId", "get_or_create_by", "new_session_id", "plan_lookup"]

NewSessionId = Callable[[], str]


def new_session_id() -> str:
    """The id of a session ``get_or_create_by`` creates: 32 random hex digits (uuid4)."""
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Lookup:
    """A validated ``get_or_create_by``: the claim looked up and the rows of a new session."""

    key: str
    value: Any
    claim: Claim
    rows: list[EncodedValue]
    scope: Scope | None


def plan_lookup(
    spec: ModelSpec[Any],
    key: str,
    value: Any,
    defaults: Mapping[str, Any] | None,
    scope: Scope | None = None,
) -> Lookup:
    """Check and encode a ``get_or_create_by`` call: no I/O."""
    field = spec.field(key)
    declared = spec.unique.get(field.key)
    if declared is None:
        unique = ", ".join(repr(name) for name in spec.unique) or "none"
        raise InvalidArgumentError(
            f"get_or_create_by({field.key!r}, ...): {spec.name}.{field.name} is not declared "
            f"Unique(), so a value may name many sessions (unique keys: {unique})"
        )
    if value is None:
        raise InvalidArgumentError(
            f"get_or_create_by({field.key!r}, None): None is no value and names no session"
        )
    if defaults is not None and not isinstance(defaults, Mapping):
        raise InvalidArgumentError(
            f"defaults must be a mapping of keys to values, not {defaults!r}"
        )
    given = dict(defaults or {})
    for name in list(given):
        if spec.field(name).key == field.key:
            raise InvalidArgumentError(
                f"get_or_create_by({field.key!r}, ...): defaults give {field.key!r} again; "
                "the value looked up is the one written"
            )
    given[field.key] = value
    if scope is not None:
        scope.check_write(
            "(new session)", {spec.field(name).key: item for name, item in given.items()}
        )
        given = {**scope.values, **given}
    rows = encode_model(spec, spec.validate_values(given))
    (claim,) = claims_of({field.key: declared}, hashes_of(rows))
    return Lookup(field.key, value, claim, rows, scope)


async def get_or_create_by(
    ops: Operations[ModelT], lookup: Lookup, *, session_id: NewSessionId | None = None
) -> tuple[str, bool]:
    """``(session id, created)``: the session holding ``lookup``'s value, or a new one
    holding it and the defaults (its id from ``session_id()``, else :func:`new_session_id`)."""
    claim, rows, scope = lookup.claim, lookup.rows, lookup.scope
    make = session_id or new_session_id
    for _ in range(ATTEMPTS):
        holder = await _holder(ops, claim)
        if holder is not None:
            return await _found(ops, holder, scope), False
        created = check_session_id(make())
        try:
            if scope is not None:
                await write_in_scope(ops, created, rows, scope)
            else:
                # A session of our own making is new: it holds no claim to drop.
                await ops.write(created, rows, fresh=session_id is None)
        except UniqueValueError as exc:
            if exc.key != lookup.key or exc.holder is None:
                raise
            return await _found(ops, exc.holder, scope), False
        return created, True
    raise ConcurrencyError(
        f"get_or_create_by({lookup.key!r}, {lookup.value!r}): the value's holder went away every "
        "attempt; nothing was written"
    )


async def _holder(ops: Operations[Any], claim: Claim) -> str | None:
    """The session holding ``claim``, if its value row still holds the value."""
    params = {"key": claim.key, "scope_hash": claim.scope_hash, "value_hash": claim.value_hash}
    found = await ops.fetch(ops.statements.claim_holder(), params)
    return next((holder for holder, backed in found if backed is not None), None)


async def _found(ops: Operations[Any], holder: str, scope: Scope | None) -> str:
    """``holder``, if the scoped view may see it."""
    if scope is not None:
        scope.require(holder, await ops.session_rows(holder))
    return holder
