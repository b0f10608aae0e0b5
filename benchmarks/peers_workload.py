"""The peers benchmark's workloads as plain data, the same for every implementation.

Imported by ``peers.py`` and by the Google ADK worker (``peers_adk.py``), which runs in
a venv of its own: only ``data.py`` (and so sessionmeta's model) and the standard
library, so every implementation stores, updates and looks for exactly the same values.

Session ``i`` belongs to ``owner_of(i)`` (100 sessions per owner), has
``priority == i`` and the tags ``["work", "billing"]`` when ``i`` is odd. Reads use the
first half of the sessions, writes the second half.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from data import owner_of, session_id, values_of

__all__ = [
    "ADK_APP",
    "FIND_TAG",
    "FIND_WIDTH",
    "LIST_LIMIT",
    "NAMESPACE",
    "UPDATE_KEYS",
    "find_window",
    "json_values",
    "matches",
    "owner_of",
    "read_index",
    "session_id",
    "turn_index",
    "turn_items",
    "update_values",
    "write_index",
]

ADK_APP = "sessionmeta-peers"  # Google ADK's app_name; user_id is the owner
NAMESPACE = "sessions"  # LangGraph: one item per session in (NAMESPACE, owner_id)
LIST_LIMIT = 50
FIND_TAG = "billing"
FIND_WIDTH = 100  # priorities in [low, low + 100): 50 sessions carry the tag
UPDATE_KEYS = ("title", "status", "message_count")


def json_values(index: int) -> dict[str, Any]:
    """Session ``index``'s ten values as JSON (the peers store JSON documents)."""
    return {
        key: value.isoformat() if isinstance(value, dt.datetime) else value
        for key, value in values_of(index).items()
    }


def update_values(index: int) -> dict[str, Any]:
    """The three keys an update writes."""
    return {
        "title": f"Renamed {index}",
        "status": "closed" if index % 2 else "open",
        "message_count": index % 97 + 1,
    }


def read_index(i: int, sessions: int) -> int:
    return i % (sessions // 2)


def write_index(i: int, sessions: int) -> int:
    return sessions // 2 + i % (sessions // 4)


def turn_index(i: int, sessions: int, second: bool) -> int:
    """Agents SDK turns: the last quarter of the sessions, one half for each variant,
    so that every turn of both variants meets a history of the same length."""
    eighth = sessions // 8
    return sessions - 2 * eighth + (eighth if second else 0) + i % eighth


def find_window(i: int, sessions: int) -> tuple[int, int]:
    """``low <= priority < high``, moving with ``i``."""
    low = (i * 37) % (sessions - FIND_WIDTH)
    return low, low + FIND_WIDTH


def matches(values: dict[str, Any], low: int, high: int) -> bool:
    """The find's test, for the peers that filter in Python."""
    priority = values.get("priority")
    return (
        FIND_TAG in (values.get("tags") or ())
        and isinstance(priority, int)
        and low <= priority < high
    )


def turn_items(i: int) -> list[dict[str, Any]]:
    """One turn of a conversation: the user's message and the assistant's answer."""
    return [
        {"role": "user", "content": f"Question {i}: where is the invoice for March?"},
        {
            "type": "message",
            "role": "assistant",
            "id": f"msg_{i:08d}",
            "status": "completed",
            "content": [
                {
                    "type": "output_text",
                    "text": f"Answer {i}: it was sent on the 3rd, to the billing address.",
                    "annotations": [],
                }
            ],
        },
    ]
