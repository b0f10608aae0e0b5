"""A small metadata model and sample sessions, for ``sessionmeta demo`` and for trying things out.

Use it with ``--model sessionmeta.demo:SupportTicket``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from sessionmeta import SessionMeta

__all__ = ["SAMPLE_SESSIONS", "SupportTicket"]


class SupportTicket(SessionMeta):
    """Metadata of a customer-support conversation."""

    owner_id: str | None = None
    title: str | None = None
    status: Literal["open", "waiting", "closed"] | None = None
    priority: int | None = None
    tags: list[str] | None = None
    opened_at: dt.datetime | None = None


SAMPLE_SESSIONS: dict[str, dict[str, Any]] = {
    "demo-1": {
        "owner_id": "ann",
        "title": "Refund for order 1042",
        "status": "open",
        "priority": 2,
        "tags": ["billing", "refund"],
        "opened_at": dt.datetime(2025, 3, 1, 9, 30, tzinfo=dt.timezone.utc),
    },
    "demo-2": {
        "owner_id": "bob",
        "title": "Cannot log in",
        "status": "waiting",
        "priority": 1,
        "tags": ["account"],
        "opened_at": dt.datetime(2025, 3, 2, 14, 5, tzinfo=dt.timezone.utc),
    },
    "demo-3": {
        "owner_id": "ann",
        "title": "Feature request: dark mode",
        "status": "closed",
        "priority": 3,
        "tags": ["feedback"],
        "opened_at": dt.datetime(2025, 3, 3, 17, 45, tzinfo=dt.timezone.utc),
    },
    "demo-4": {
        "owner_id": "cleo",
        "title": "Invoice address wrong",
        "status": "open",
        "priority": 2,
        "tags": ["billing"],
    },
}
