"""Expiry in SQL: the database's clock, a row's expiry instant, and what is still live.

Every instant here is the database's own, computed in the statement that uses it,
so the application hosts' clocks (and their skew) never matter. Each backend's
spelling of "now" and of "now plus some microseconds" is a :class:`Clock`,
chosen by :mod:`sessionmeta.sql.dialects` for its backend; this module builds
the conditions and statements from it.

* PostgreSQL: ``expires_at`` is ``TIMESTAMP WITH TIME ZONE``, now is
  ``statement_timestamp()``: an instant, whatever the session's time zone.
* MySQL/MariaDB: ``DATETIME(6)`` in UTC, now is ``UTC_TIMESTAMP(6)``, so the
  connection's ``time_zone`` and daylight saving changes do not matter.
* SQLite: UTC text ``YYYY-MM-DD HH:MM:SS.SSS``, which sorts as it counts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    FromClause,
    Interval,
    String,
    bindparam,
    func,
    literal_column,
    or_,
    type_coerce,
)
from sqlalchemy.sql.elements import BindParameter

__all__ = [
    "MYSQL_CLOCK",
    "POSTGRES_CLOCK",
    "SQLITE_CLOCK",
    "Clock",
    "live",
    "ttl_param",
]

# Microseconds from now, bound as an integer (NULL: the row never expires).
Microseconds = ColumnElement[Any]


@dataclass(frozen=True)
class Clock:
    """How one backend spells the database's current instant and an instant after it."""

    # ``now(offset)``: the database's current instant moved on by ``offset`` microseconds
    # (0 but in tests, see ``MetadataStore(clock_offset=...)``).
    now: Callable[[int], ColumnElement[Any]]
    # ``later(offset, micros)``: ``now(offset)`` plus a bound number of microseconds,
    # NULL when that is NULL (the row never expires).
    later: Callable[[int, Microseconds], ColumnElement[Any]]


def _postgres_now(offset: int) -> ColumnElement[Any]:
    # The statement's start, not the transaction's: a write inside a long transaction
    # still expires its ttl after the write.
    now: ColumnElement[Any] = func.statement_timestamp()
    if offset:
        now = now + literal_column(f"INTERVAL '{int(offset)} microseconds'", Interval)
    return now


def _postgres_later(offset: int, micros: Microseconds) -> ColumnElement[Any]:
    step = literal_column("INTERVAL '1 microsecond'", Interval)
    return _postgres_now(offset) + type_coerce(micros * step, Interval)


def _mysql_now(offset: int) -> ColumnElement[Any]:
    now = func.utc_timestamp(literal_column("6"))
    return _mysql_plus(now, literal_column(str(int(offset)))) if offset else now


def _mysql_plus(instant: ColumnElement[Any], micros: Microseconds) -> ColumnElement[Any]:
    return func.timestampadd(literal_column("MICROSECOND"), micros, instant)


def _mysql_later(offset: int, micros: Microseconds) -> ColumnElement[Any]:
    return _mysql_plus(_mysql_now(offset), micros)


_SQLITE_FORMAT = literal_column("'%Y-%m-%d %H:%M:%f'", String)


def _sqlite_shifts(offset: int) -> list[ColumnElement[Any]]:
    shifts: list[ColumnElement[Any]] = [literal_column("'now'")]
    if offset:
        shifts.append(literal_column(f"'{int(offset) / 1_000_000:+.6f} seconds'"))
    return shifts


def _sqlite_now(offset: int) -> ColumnElement[Any]:
    return func.strftime(_SQLITE_FORMAT, *_sqlite_shifts(offset))


def _sqlite_later(offset: int, micros: Microseconds) -> ColumnElement[Any]:
    # A NULL modifier makes strftime NULL: no ttl, no expiry. Multiplied, not divided:
    # an integer divided by an integer would drop the fraction. Grouped: SQLite's ||
    # binds tighter than *.
    seconds = (micros * literal_column("0.000001")).self_group()
    shift = seconds.concat(literal_column("' seconds'"))
    return func.strftime(_SQLITE_FORMAT, *_sqlite_shifts(offset), shift)


POSTGRES_CLOCK = Clock(_postgres_now, _postgres_later)
MYSQL_CLOCK = Clock(_mysql_now, _mysql_later)
SQLITE_CLOCK = Clock(_sqlite_now, _sqlite_later)


def ttl_param(name: str) -> BindParameter[Any]:
    """A row's ttl in microseconds, ``NULL`` for none."""
    return bindparam(name, type_=BigInteger)


def live(table: FromClause, now: ColumnElement[Any]) -> ColumnElement[bool]:
    """``table``'s row has not expired at ``now``: what every read asks of a value row."""
    expires_at = table.c.expires_at
    return or_(expires_at.is_(None), expires_at > now)
