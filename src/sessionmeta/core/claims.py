"""What a session's values claim under its model's unique fields. Pure: no I/O.

Each stored value of a unique key is *claimed* in the claims table, whose primary
key ``(key, scope_hash, value_hash)`` lets one session hold it: the database
refuses a second. The claim compares the stored ``value_hash``, the same
equality ``find_sessions_by_metadata`` uses (``1 == 1.0``, datetimes by instant).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sessionmeta.core.codec import EncodedValue, value_hash
from sessionmeta.core.unique import UniqueKey
from sessionmeta.errors import UniqueValueError

__all__ = [
    "NO_SCOPE",
    "NULL_HASH",
    "Claim",
    "affected_keys",
    "check_distinct",
    "claims_of",
    "hashes_of",
    "shown_value",
]

# The scope of a claim without ``per``, or whose ``per`` key holds no value (the SQL
# of ``sql/claims.py`` writes it too).
NO_SCOPE = ""
# ``None`` stored explicitly claims nothing: it is "no value", as SQL's NULL is.
NULL_HASH = value_hash("null")


@dataclass(frozen=True)
class Claim:
    """What one session's stored values claim for one unique key."""

    key: str
    scope_hash: str
    value_hash: str


def claims_of(unique: Mapping[str, UniqueKey], hashes: Mapping[str, str]) -> list[Claim]:
    """The claims of a session whose stored values have ``hashes`` (value hash by key)."""
    claims: list[Claim] = []
    for key, declared in unique.items():
        held = hashes.get(key)
        if held is None or held == NULL_HASH:
            continue
        scope = NO_SCOPE
        if declared.per is not None:
            scope_hash = hashes.get(declared.per)
            if scope_hash is not None and scope_hash != NULL_HASH:
                scope = scope_hash
        claims.append(Claim(key, scope, held))
    return claims


def hashes_of(rows: list[EncodedValue]) -> dict[str, str]:
    """The value hash of each key written as ``rows``."""
    return {row.key: row.value_hash for row in rows}


def affected_keys(unique: Mapping[str, UniqueKey], keys: set[str] | None) -> list[str]:
    """The unique keys whose claims change when ``keys`` (``None``: every key) change:
    those written or deleted, and those whose scope key is."""
    if keys is None:
        return sorted(unique)
    return sorted(key for key, declared in unique.items() if key in keys or declared.per in keys)


def check_distinct(unique: Mapping[str, UniqueKey], rows: Mapping[str, list[EncodedValue]]) -> None:
    """Refuse, before any I/O, a bulk write giving one unique value to two of its sessions
    (where the written rows decide the claim: the key and its scope key both written,
    or a key without ``per``). The database refuses the rest in the write."""
    if not unique:
        return
    first: dict[Claim, str] = {}
    for session_id, session_rows in rows.items():
        written = hashes_of(session_rows)
        decided = {
            key: declared
            for key, declared in unique.items()
            if key in written and (declared.per is None or declared.per in written)
        }
        for claim in claims_of(decided, written):
            other = first.setdefault(claim, session_id)
            if other != session_id:
                texts = {row.key: row.value for row in session_rows}
                per = unique[claim.key].per
                scope = None
                if per is not None:
                    scope = (
                        f"{per} = {shown_value(texts[per])!r}" if claim.scope_hash else f"no {per}"
                    )
                raise UniqueValueError(
                    claim.key,
                    shown_value(texts[claim.key]),
                    session_id=session_id,
                    holder=other,
                    scope=scope,
                )


def shown_value(text: str) -> Any:
    """A stored JSON text as the value it holds, for messages."""
    try:
        return json.loads(text)
    except ValueError:
        return text
