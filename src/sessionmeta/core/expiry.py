"""Expiry declared on a model or asked for by a call: no database, no I/O.

A stored key may carry an expiry: ``ttl=`` on a write, or a field's default
``Expires(...)``. The instant itself is computed by the database from its own
clock when the row is written (``sessionmeta.sql.expiry``), so only the
duration travels from here, in whole microseconds.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sessionmeta.core.codec import EncodedValue
from sessionmeta.errors import InvalidArgumentError, ModelDefinitionError

__all__ = ["MAX_TTL", "Expires", "check_ttl", "field_ttls", "with_ttls"]

# Past a century an expiry is a mistake (and SQLite's text instants end at year 9999).
MAX_TTL = dt.timedelta(days=36_525)


def check_ttl(ttl: Any, where: str = "") -> int | None:
    """``ttl`` (a positive ``timedelta`` up to :data:`MAX_TTL`, or ``None``) in microseconds;
    :class:`InvalidArgumentError` naming ``where`` otherwise."""
    if ttl is None:
        return None
    if not isinstance(ttl, dt.timedelta) or not dt.timedelta(0) < ttl <= MAX_TTL:
        place = f"{where}: " if where else ""
        raise InvalidArgumentError(
            f"{place}ttl must be a datetime.timedelta above zero and at most 100 years, "
            f"or None; got {ttl!r}"
        )
    return ttl // dt.timedelta(microseconds=1)


@dataclass(frozen=True)
class Expires:
    """A field's default expiry: each write of the key expires ``ttl`` after it.

    ``draft: Annotated[str | None, Expires(timedelta(minutes=30))] = None``. A
    write's own ``ttl=`` takes precedence; the expiry restarts with every write
    of the key, ``add_to`` and ``remove_from`` included.
    """

    ttl: dt.timedelta

    def __post_init__(self) -> None:
        check_ttl(self.ttl, "Expires")


def field_ttls(model: type[Any], keys: Mapping[str, str]) -> dict[str, int]:
    """The default ttl (microseconds) of each storage key whose field declares
    :class:`Expires`; ``keys`` maps field names to storage keys."""
    ttls: dict[str, int] = {}
    for name, info in model.model_fields.items():
        declared = [item for item in info.metadata if isinstance(item, Expires)]
        if len(declared) > 1:
            raise ModelDefinitionError(
                f"{model.__name__}.{name} declares Expires {len(declared)} times; keep one"
            )
        if declared:
            ttl = check_ttl(declared[0].ttl)
            assert ttl is not None
            ttls[keys[name]] = ttl
    return ttls


def with_ttls(
    rows: list[EncodedValue], call_ttl: int | None, defaults: Mapping[str, int]
) -> list[EncodedValue]:
    """``rows`` each with its ttl: its own, else the call's, else its field's default."""
    if call_ttl is None and not defaults:
        return rows
    return [
        row
        if row.ttl is not None
        else row._replace(ttl=call_ttl if call_ttl is not None else defaults.get(row.key))
        for row in rows
    ]
