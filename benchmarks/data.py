"""The benchmark's metadata model and its deterministic data: no database, no I/O.

Every implementation stores the same logical values: session ``i`` belongs to
owner ``user{i // 100}`` (so an equality find returns 100 sessions whatever the
table size) and has ``priority == i`` (so a range find near the top returns a
fixed number of sessions whatever the table size).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from sessionmeta import SessionMeta

SESSIONS_PER_OWNER = 100
_EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=2)))


class BenchMeta(SessionMeta):
    """Ten keys of the kinds applications store: ids, text, a list, flags, numbers, a time."""

    owner_id: str | None = None
    title: str | None = None
    tags: list[str] | None = None
    incognito: bool | None = None
    priority: int | None = None
    score: float | None = None
    started: dt.datetime | None = None
    status: Literal["open", "closed"] | None = None
    language: str | None = None
    message_count: int | None = None


KEYS = tuple(BenchMeta.model_fields)
TWO_KEYS = ("owner_id", "title")


def session_id(index: int) -> str:
    return f"s{index:07d}"


def owner_of(index: int) -> str:
    return f"user{index // SESSIONS_PER_OWNER}"


def values_of(index: int) -> dict[str, Any]:
    """The ten values of session ``index``, as Python objects."""
    return {
        "owner_id": owner_of(index),
        "title": f"Conversation number {index} about invoices",
        "tags": ["work", "billing"] if index % 2 else ["personal"],
        "incognito": index % 7 == 0,
        "priority": index,
        "score": (index % 1000) / 8,
        "started": _EPOCH + dt.timedelta(seconds=index),
        "status": "open" if index % 3 else "closed",
        "language": ("en", "fr", "de", "ja")[index % 4],
        "message_count": index % 97,
    }
