"""The model the admin pages' tests serve (``--model tests.web.models:Ticket``)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from sessionmeta import SessionMeta, Unique


class Ticket(SessionMeta):
    owner_id: str | None = None
    title: str | None = None
    status: Literal["open", "waiting", "closed"] | None = None
    priority: int | None = None
    tags: list[str] | None = None
    opened_at: dt.datetime | None = None
    external_id: Annotated[str | None, Unique()] = None


BASE_TIME = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)


def ticket(number: int) -> dict[str, object]:
    """Session ``t{number:05d}``'s metadata: ten owners, a third tagged billing."""
    tags = ["billing"] if number % 3 == 0 else ["work"]
    if number % 7 == 0:
        tags.append("vip")
    return {
        "owner_id": f"u{number % 10}",
        "title": f"Ticket {number}",
        "status": ("open", "waiting", "closed")[number % 3],
        "priority": number % 5,
        "tags": tags,
        "opened_at": BASE_TIME + dt.timedelta(minutes=number),
    }


def session_id(number: int) -> str:
    return f"t{number:05d}"
